"""igrun's own entry points and version, read from its ``dist-info`` folder directly.

``importlib.metadata`` costs about 40 ms to import and as much again to scan every installed
distribution, before a gadget's programs could load. Most hosts have no plugin but igrun's
own, and that is cheap to tell: a look at the ``*.dist-info`` (and ``*.egg-info``) folders on
``sys.path`` for an ``entry_points.txt`` naming one of igrun's groups. When igrun's is the
only one, its entry points are read from its own file (:func:`own_entry_points`); when
another distribution has some, the caller asks ``importlib.metadata``, which knows every way
a distribution can be installed.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, NamedTuple

DIST = "igrun"
GROUP_PREFIX = b"[igrun."


class OwnEntryPoint(NamedTuple):
    """One of igrun's own entry points, as ``importlib.metadata.EntryPoint`` has it (a named
    tuple: ``dataclasses`` costs the launcher ~20 ms to import before the head start)."""

    name: str
    value: str
    group: str
    version: str

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    def load(self) -> Any:
        module, _, attr = self.value.partition(":")
        found: Any = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            found = getattr(found, part)
        return found


class Found(NamedTuple):
    """What the folders on ``sys.path`` hold: igrun's own distribution (its folder and
    version, the first found, as ``importlib.metadata`` picks it) and whether any other
    distribution registers igrun plugins."""

    own: str | None
    version: str | None
    others: bool


def _is_own(name: str) -> bool:
    base = name.rpartition(".")[0]
    return base.partition("-")[0].lower() == DIST


def scan(path: list[str] | None = None) -> Found:
    """Look at every distribution folder on ``path`` (``sys.path``)."""
    own: str | None = None
    others = False
    for entry in sys.path if path is None else path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            folder = os.path.join(entry or ".", name)
            if _is_own(name):
                if own is None and os.path.isfile(os.path.join(folder, "entry_points.txt")):
                    own = folder
                continue
            if not others:
                try:
                    with open(os.path.join(folder, "entry_points.txt"), "rb") as f:
                        others = GROUP_PREFIX in f.read()
                except OSError:
                    pass
    return Found(own, _version(own) if own else None, others)


def _version(folder: str) -> str | None:
    """The ``Version:`` of a distribution's METADATA (or PKG-INFO)."""
    for meta in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(folder, meta), encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Version:"):
                        return line.partition(":")[2].strip()
                    if not line.strip():
                        break  # the headers end at the first empty line
        except OSError:
            continue
    return None


_found: tuple[tuple[str, ...], Found] | None = None


def found() -> Found:
    """:func:`scan` of ``sys.path``, again only when ``sys.path`` changed."""
    global _found
    path = tuple(sys.path)
    if _found is None or _found[0] != path:
        _found = (path, scan(list(path)))
    return _found[1]


def own_entry_points(group: str) -> list[OwnEntryPoint] | None:
    """igrun's entry points of ``group`` when no other distribution has any in igrun's
    groups; ``None`` when one does (or igrun's own file was not found): then
    ``importlib.metadata`` is the one to ask."""
    where = found()
    if where.others or where.own is None:
        return None
    out: list[OwnEntryPoint] = []
    current = None
    with open(os.path.join(where.own, "entry_points.txt"), encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1].strip()
            elif current == group and "=" in line:
                name, _, value = line.partition("=")
                out.append(OwnEntryPoint(name.strip(), value.strip(), group, where.version or ""))
    return out


def version() -> str | None:
    """igrun's installed version (``None`` when its folder is not on ``sys.path``)."""
    return found().version
