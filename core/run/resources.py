"""What the pieces of a run share, found by type instead of by string keys.

An operator provides a service (the container collection, a shared BPF map, its socket
enricher) with :meth:`Resources.provide`; a gadget or a later operator asks for it by its class
with :meth:`Resources.get` (optional) or :meth:`Resources.require` (needed: its absence is a
:class:`MissingDependency` that names who asked and who could have provided it). Types make
the contract checkable: ``ctx.resources.get(MntnsFilter)`` is a ``MntnsFilter | None`` to
mypy, and a third-party operator provides a service by defining or importing its class.

A run's resources can sit on top of a process's (``parent``): the runs of one config file
share what operators declare process-wide with :meth:`Operator.share
<igrun.core.operator.Operator.share>`.
"""

from __future__ import annotations

import threading
from typing import TypeVar, cast

from igrun.core.errors import UsageError

T = TypeVar("T")


class MissingDependency(UsageError):
    """A gadget or operator needs something no operator of the run provides: the message
    names both sides (exit code 2: the chain is a configuration mistake)."""


class Resources:
    """Services of one run (or of one process), one instance per type."""

    def __init__(self, parent: Resources | None = None) -> None:
        self.parent = parent
        self._lock = threading.Lock()
        self._items: dict[type, tuple[object, str]] = {}
        self.providers: dict[type, list[str]] = {}
        """Which operators declare that they provide each type (see ``Operator.provides``):
        named in the error when a required one is missing."""

    def provide(self, value: object, *, by: str, kind: type | None = None) -> None:
        """Offer ``value`` under its own class (or ``kind``, a base class of it); ``by``
        names the provider in messages. A second provider of one type replaces the first."""
        key = kind if kind is not None else type(value)
        if not isinstance(value, key):
            raise TypeError(f"{by} provides a {type(value).__name__} as {key.__name__}")
        with self._lock:
            self._items[key] = (value, by)

    def withdraw(self, kind: type) -> None:
        """Take back what was provided under ``kind`` (its provider is stopping)."""
        with self._lock:
            self._items.pop(kind, None)

    def get(self, kind: type[T]) -> T | None:
        """The ``kind`` provided to this run or its process, or ``None``."""
        with self._lock:
            hit = self._items.get(kind)
        if hit is not None:
            return cast(T, hit[0])
        return self.parent.get(kind) if self.parent is not None else None

    def provider(self, kind: type) -> str | None:
        """Who provided ``kind`` (``None`` when nobody did)."""
        with self._lock:
            hit = self._items.get(kind)
        if hit is not None:
            return hit[1]
        return self.parent.provider(kind) if self.parent is not None else None

    def require(self, kind: type[T], *, by: str) -> T:
        """The ``kind`` provided to this run; raise :class:`MissingDependency` naming ``by``
        and the operators that provide it when there is none."""
        value = self.get(kind)
        if value is None:
            raise MissingDependency(missing_message(by, kind, self.providers.get(kind, [])))
        return value


def missing_message(by: str, kind: type, providers: list[str]) -> str:
    """``by`` needs ``kind``: which operators provide it, or that none installed does."""
    if providers:
        names = " or ".join(f"operator {p!r}" for p in providers)
        return f"{by} needs {kind.__name__}, provided by {names}, which is not in this run's chain"
    return f"{by} needs {kind.__name__}, and no installed operator provides it"
