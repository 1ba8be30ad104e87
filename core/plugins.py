"""Finding gadgets and operators: entry points, loaded lazily, through pluggy.

Gadgets come from the ``igrun.gadgets`` entry-point group (the entry point's name is the
gadget's id, ``trace_exec``), operators from ``igrun.operators``; igrun's built-ins register
the same way. Running one gadget imports only that gadget's module. A plugin that fails to
import or registers something invalid is reported (distribution, version, error) and skipped:
it never breaks ``igrun list`` or another gadget.

``IGRUN_PLUGINS=dist-a,dist-b`` allows only those third-party distributions;
``IGRUN_NO_PLUGINS=1`` blocks all of them. igrun's own built-ins always load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Union

import pluggy

from igrun.core import dists, hookspecs
from igrun.core.errors import GadgetNotFound, PluginError
from igrun.core.events.schema import Schema
from igrun.core.gadget import Category, Gadget
from igrun.core.operator import Operator

GADGETS_GROUP = "igrun.gadgets"
OPERATORS_GROUP = "igrun.operators"
BUILTIN_DIST = "igrun"

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint as MetadataEntryPoint

EntryPoint = Union["MetadataEntryPoint", dists.OwnEntryPoint]
"""An entry point as ``importlib.metadata`` gives it, or one of igrun's own read directly
(:mod:`igrun.core.dists`: the usual case, when no other distribution has igrun plugins)."""


@dataclass(frozen=True)
class PluginLoadError:
    """A plugin that was skipped, and why."""

    dist: str
    version: str
    entry_point: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.entry_point} from {self.dist} {self.version}: {self.message}"


def _dist(ep: EntryPoint) -> tuple[str, str]:
    if isinstance(ep, dists.OwnEntryPoint):
        return (BUILTIN_DIST, ep.version)
    dist = ep.dist
    if dist is None:
        return ("unknown", "")
    return (dist.metadata["Name"] or "unknown", dist.version)


def normalise_name(name: str) -> str:
    """``"trace exec"``, ``"trace_exec"``, ``"trace-exec"`` -> ``"trace_exec"``."""
    return "_".join(name.replace("-", " ").replace("_", " ", 1).split())


class PluginRegistry:
    """A typed facade over pluggy's PluginManager for igrun's two plugin kinds."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.errors: list[PluginLoadError] = []
        self._gadgets: dict[str, type[Gadget]] = {}
        self._operators: dict[str, type[Operator]] = {}
        self._providers: dict[type[Any], str | EntryPoint] = {}
        self._loaded: set[tuple[str, str]] = set()
        self._all_loaded: set[str] = set()
        self._packages: dict[str, EntryPoint] = {}
        """Top-level package -> the entry point that loaded it, for every loaded plugin that
        is not igrun's own: how a failure is traced back to its distribution."""

    @property
    def hook(self) -> Any:
        """Lifecycle hooks: ``registry.hook.igrun_run_started(ctx=ctx)``."""
        return self.pm.hook

    # -- what callers ask for

    def gadgets(self) -> dict[str, type[Gadget]]:
        """Every installed gadget by id (imports every gadget plugin)."""
        self._load_all(GADGETS_GROUP)
        return dict(self._gadgets)

    def gadget(self, name: str) -> type[Gadget]:
        """The gadget called ``name`` (``trace exec`` or ``trace_exec``), importing only it."""
        wanted = normalise_name(name)
        if wanted not in self._gadgets:
            for ep in self._entry_points(GADGETS_GROUP):
                if ep.name == wanted:
                    self._load(GADGETS_GROUP, ep)
        if wanted not in self._gadgets:
            self._load_all(GADGETS_GROUP)  # one entry point may register several gadgets
        found = self._gadgets.get(wanted)
        if found is None:
            shown = wanted.replace("_", " ")
            close = _close_names(shown, [g.full_name() for g in self._gadgets.values()])
            hint = " (did you mean " + " or ".join(f'"{c}"' for c in close) + "?)" if close else ""
            raise GadgetNotFound(f'unknown gadget "{shown}"{hint}')
        return found

    def operators(self) -> list[type[Operator]]:
        """Every installed operator."""
        self._load_all(OPERATORS_GROUP)
        return list(self._operators.values())

    def provider(self, cls: type[Any]) -> str:
        """``"distribution version"`` of the package that registered ``cls`` (read from its
        metadata when first asked: running a gadget never needs it)."""
        found = self._providers.get(cls, "unknown")
        if not isinstance(found, str):
            found = self._providers[cls] = " ".join(_dist(found)).strip()
        return found

    # -- loading

    def _entry_points(self, group: str) -> list[EntryPoint]:
        own = dists.own_entry_points(group)
        if own is not None:  # igrun's own are the only ones: no other to allow or block
            return list(own)
        from importlib.metadata import entry_points

        allowed = {d.strip() for d in os.environ.get("IGRUN_PLUGINS", "").split(",") if d.strip()}
        blocked = os.environ.get("IGRUN_NO_PLUGINS") == "1"
        out: list[EntryPoint] = []
        seen = set()
        for ep in entry_points(group=group):
            if (ep.name, ep.value) in seen:
                continue  # the same distribution found twice on sys.path
            seen.add((ep.name, ep.value))
            if blocked or allowed:  # reading a distribution's metadata is slow: only if asked
                dist, _ = _dist(ep)
                if dist != BUILTIN_DIST and (blocked or dist not in allowed):
                    continue
            out.append(ep)
        return out

    def _load_all(self, group: str) -> None:
        if group in self._all_loaded:
            return
        for ep in self._entry_points(group):
            self._load(group, ep)
        self._all_loaded.add(group)

    def _load(self, group: str, ep: EntryPoint) -> None:
        key = (group, ep.name)
        if key in self._loaded:
            return
        self._loaded.add(key)
        self._claim(ep.module, ep)
        try:
            plugin = ep.load()
            if not self.pm.is_registered(plugin):
                self.pm.register(plugin, name=f"{group}:{ep.name}")
                self.pm.check_pending()
            if group == GADGETS_GROUP:
                self._call_one(plugin, "igrun_register_gadgets", self.add_gadget, ep)
            else:
                self._call_one(plugin, "igrun_register_operators", self.add_operator, ep)
        except Exception as exc:  # a broken plugin must not break the others
            dist, version = _dist(ep)
            error = PluginLoadError(dist, version, ep.name, f"{type(exc).__name__}: {exc}")
            self.errors.append(error)
            from igrun.core.log import get_logger

            get_logger().warning(
                "plugin_skipped", dist=dist, version=version, entry_point=ep.name, error=str(exc)
            )

    def _claim(self, module: str, ep: EntryPoint) -> None:
        """Note that ``module``'s top-level package is ``ep``'s (igrun's own are not noted:
        their failures are igrun's)."""
        package = module.partition(".")[0]
        if package and package != "igrun":
            self._packages.setdefault(package, ep)

    def blame(self, exc: BaseException) -> str | None:
        """``plugin <entry point> from <distribution> <version>`` when ``exc`` was raised in
        a third-party plugin's code, or passed through it (the innermost plugin frame
        decides; an exception raised ``from`` another is traced through it too); ``None``
        when only igrun's own code was involved: then it is igrun's bug."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            for frame in reversed(list(_frames(current.__traceback__))):
                module = str(frame.f_globals.get("__name__", ""))
                ep = self._packages.get(module.partition(".")[0])
                if ep is None:
                    continue
                dist, version = _dist(ep)
                if dist != BUILTIN_DIST:
                    return f"plugin {ep.name} from {dist} {version}".rstrip()
            current = current.__cause__
        return None

    def _call_one(self, plugin: Any, hook_name: str, add: Any, provider: EntryPoint) -> None:
        """Call one plugin's registration hook (pluggy checked its signature on register);
        calling it alone keeps each registration attributed to its own distribution."""
        impl = getattr(plugin, hook_name, None)
        if impl is not None:
            impl(register=lambda cls: add(cls, provider))

    # -- registration checks

    def add_gadget(self, cls: Any, provider: str | EntryPoint) -> None:
        """Register a gadget class (entry points do this; so can a program embedding igrun).
        ``provider`` is ``"distribution version"``, or the entry point the class came from."""
        if not (isinstance(cls, type) and issubclass(cls, Gadget)):
            raise PluginError(f"registered {cls!r}, which is not a Gadget subclass")
        for attr, kind in (("name", str), ("category", Category), ("schema", Schema)):
            if not isinstance(getattr(cls, attr, None), kind):
                raise PluginError(f"gadget {cls.__name__} has no valid {attr!r}")
        existing = self._gadgets.get(cls.id())
        if existing is not None and existing is not cls:
            raise PluginError(f"gadget {cls.full_name()!r} is already registered")
        self._gadgets[cls.id()] = cls
        self._providers[cls] = provider
        if not isinstance(provider, str):
            self._claim(cls.__module__, provider)

    def add_operator(self, cls: Any, provider: str | EntryPoint) -> None:
        """Register an operator class, checked like one from an entry point."""
        if not (isinstance(cls, type) and issubclass(cls, Operator)):
            raise PluginError(f"registered {cls!r}, which is not an Operator subclass")
        if not isinstance(getattr(cls, "name", None), str):
            raise PluginError(f"operator {cls.__name__} has no name")
        existing = self._operators.get(cls.name)
        if existing is not None and existing is not cls:
            raise PluginError(f"operator {cls.name!r} is already registered")
        self._operators[cls.name] = cls
        self._providers[cls] = provider
        if not isinstance(provider, str):
            self._claim(cls.__module__, provider)


_default: PluginRegistry | None = None


def registry() -> PluginRegistry:
    """The process-wide registry."""
    global _default
    if _default is None:
        _default = PluginRegistry()
    return _default


def blame(exc: BaseException) -> str | None:
    """:meth:`PluginRegistry.blame` of the process-wide registry (``None`` before it exists)."""
    return _default.blame(exc) if _default is not None else None


def _frames(tb: TracebackType | None) -> Any:
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _close_names(shown: str, known: list[str]) -> list[str]:
    """Names the user may have meant: the gadget's own name compared within its category
    (``trace exce`` suggests ``trace exec``, not every ``trace …``), else the whole name."""
    import difflib

    category, _, name = shown.partition(" ")
    same = {k.partition(" ")[2]: k for k in known if k.partition(" ")[0] == category}
    if same and name:
        return [same[n] for n in difflib.get_close_matches(name, list(same), n=3, cutoff=0.6)]
    return difflib.get_close_matches(shown, known, n=3, cutoff=0.6)
