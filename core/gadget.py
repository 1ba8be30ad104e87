"""The gadget model: what a gadget declares, and the context it runs in.

Mirrors Inspektor Gadget's ``GadgetDesc``: a gadget class declares its name, category, type,
params and event schema as class attributes (the description), and an instance of it is one
run (``NewInstance``). The optional behaviours are the small protocols below; the runtime
checks for them with ``isinstance``.
"""

from __future__ import annotations

import builtins
import enum
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from igrun.core.events.schema import Batch, Schema
from igrun.core.params import ParamDesc, Params
from igrun.core.run.resources import Resources

if TYPE_CHECKING:
    from igrun.core.bpf.pins import PinDir
    from igrun.core.containers.collection import Container
    from igrun.core.log import Logger
    from igrun.core.operator import RunPlan


class Category(enum.StrEnum):
    """Where a gadget sits in ``igrun list`` and on the command line (``igrun <category> …``)."""

    ADVISE = "advise"
    AUDIT = "audit"
    PROFILE = "profile"
    SNAPSHOT = "snapshot"
    TOP = "top"
    TRACE = "trace"
    TRACELOOP = "traceloop"
    OTHER = "other"

    @property
    def description(self) -> str:
        return CATEGORY_DESCRIPTIONS[self]

    @property
    def standalone(self) -> bool:
        """A category that is one gadget of the same name: ``igrun traceloop`` (``ig
        traceloop``), not ``igrun traceloop <gadget>``."""
        return self is Category.TRACELOOP


CATEGORY_DESCRIPTIONS = {
    Category.ADVISE: "Recommend system configurations based on collected information",
    Category.AUDIT: "Audit a subsystem",
    Category.PROFILE: "Profile different subsystems",
    Category.SNAPSHOT: "Take a snapshot of a subsystem and print it",
    Category.TOP: "Gather, sort and periodically report events according to a given criteria",
    Category.TRACE: "Trace and print system events",
    Category.TRACELOOP: "Get strace-like logs of a container from the past",
    Category.OTHER: "Other gadgets",
}


class GadgetType(enum.StrEnum):
    """How a gadget is run: the runtime's workflow depends on it."""

    TRACE = "trace"
    """Streams events as they happen."""
    TRACE_INTERVALS = "traceIntervals"
    """Emits a full set of rows every interval (top gadgets)."""
    ONE_SHOT = "oneShot"
    """Fetches results once (snapshots)."""
    PROFILE = "profile"
    """Collects until stopped or timed out, then reports."""
    RUN = "run"
    """A bare BPF object run by ``igrun run``."""
    OTHER = "other"

    @property
    def can_sort(self) -> bool:
        return self in (GadgetType.ONE_SHOT, GadgetType.TRACE_INTERVALS, GadgetType.PROFILE)

    @property
    def is_periodic(self) -> bool:
        return self is GadgetType.TRACE_INTERVALS

    @property
    def ends_windows(self) -> bool:
        """Whether the gadget itself says when a window ends (:meth:`GadgetContext.end_window`:
        after each interval's rows, each snapshot, a profile's result) instead of the runtime's
        clock."""
        return self in (GadgetType.TRACE_INTERVALS, GadgetType.ONE_SHOT, GadgetType.PROFILE)


PARAM_INTERVAL = "interval"
PARAM_SORT = "sort"
PARAM_MAX_ROWS = "max-rows"


class Gadget:
    """Base class of every gadget: the class is the description, an instance is one run."""

    name: ClassVar[str]
    category: ClassVar[Category]
    type: ClassVar[GadgetType] = GadgetType.TRACE
    description: ClassVar[str] = ""
    params: ClassVar[tuple[ParamDesc, ...]] = ()
    schema: ClassVar[Schema]
    experimental: ClassVar[bool] = False
    examples: ClassVar[tuple[str, ...]] = ()
    """Command lines shown in ``--help``."""
    param_defaults: ClassVar[Mapping[str, str]] = {}
    """Defaults this gadget gives runtime and operator params (``{"interval": "1s",
    "max-rows": "20"}`` for a top gadget, as ``ig``'s): used when the user gives none, and
    shown in ``--help``."""
    requires: ClassVar[tuple[builtins.type, ...]] = ()
    """Resources (see :mod:`igrun.core.run.resources`) an operator of the run must provide: the
    run is refused before anything loads, naming both, when none in the chain does."""

    @classmethod
    def check_params(cls, plan: RunPlan) -> None:
        """Rules across the gadget's params that their types cannot say (two flags that
        exclude each other), checked with the rest before anything loads: raise
        :class:`~igrun.core.errors.ParamError`."""

    @classmethod
    def full_name(cls) -> str:
        """``"trace exec"``: how users type it (``"traceloop"`` for the gadget that is its
        category, see :attr:`Category.standalone`)."""
        if cls.category.standalone and cls.name == cls.category.value:
            return cls.name
        return f"{cls.category.value} {cls.name}"

    @classmethod
    def id(cls) -> str:
        """``"trace_exec"``: the entry-point name and the key in config files (a dash in the
        name becomes ``_``: ``top block-io`` is ``top_block_io``, a Python module name)."""
        if cls.category.standalone and cls.name == cls.category.value:
            return cls.name
        return f"{cls.category.value}_{cls.name.replace('-', '_')}"


@runtime_checkable
class InitClose(Protocol):
    """Prepared before operators start (e.g. to receive container notifications) and cleaned
    up after they stop."""

    def init(self, ctx: GadgetContext) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Runner(Protocol):
    """Runs until ``ctx`` is done, emitting batches with ``ctx.emit``."""

    def run(self, ctx: GadgetContext) -> None: ...


@runtime_checkable
class ResultRunner(Protocol):
    """Runs until ``ctx`` is done and returns the whole result at the end."""

    def run_with_result(self, ctx: GadgetContext) -> bytes: ...


@runtime_checkable
class DefaultSort(Protocol):
    """Columns to sort by when the user names none (``-col`` for descending)."""

    def sort_by_default(self) -> list[str]: ...


@runtime_checkable
class ContainerAttacher(Protocol):
    """Attached to each selected container (Inspektor Gadget's ``Attacher``): to every one
    running when the run starts and to each one that starts later, and detached from each one
    that stops, and from all that are left when the run ends.

    Calls come after :meth:`InitClose.init` and before the run is reported started, then
    from the thread that learns of a container (never the one that reads events), one at a
    time. An exception from :meth:`attach_container` is logged with the container's name and
    the run goes on without that container (it is not detached); one from
    :meth:`detach_container` is logged too. With ``--host`` the host itself is attached, as a
    container named ``host`` (pid 1's namespaces, or igrun's own where pid 1's cannot be
    read). A gadget that attaches needs the containers operator (or another provider of
    ``SelectedContainers``) in its chain.
    """

    def attach_container(self, container: Container) -> None: ...

    def detach_container(self, container: Container) -> None: ...


@dataclass(frozen=True)
class OutputFormat:
    """An extra ``-o`` format a gadget offers (``ig``'s ``GadgetOutputFormats``): ``-o NAME``
    picks it, ``--help`` lists it with :attr:`description`.

    ``transform`` turns the run's result into the bytes written to stdout: for a
    :class:`ResultRunner`, the bytes :meth:`~ResultRunner.run_with_result` returned; for any
    other gadget, with :attr:`requires_combined_result`, one :class:`Batch` holding every row of
    a window (the whole run, or one ``--interval``; after filters, sort and limit), called when
    the window ends; without it, each batch as it comes. A format named like a built-in one
    (``json``) replaces it for this gadget: a histogram gadget's ``json`` is ``ig``'s object.
    """

    name: str
    description: str
    transform: Callable[[Any], bytes]
    requires_combined_result: bool = False


@runtime_checkable
class OutputFormats(Protocol):
    """Extra output formats, and which of them is the default (``""``: the built-in
    ``columns``). A classmethod: the formats are known before anything loads, so ``-o`` is
    checked and ``--help`` lists them without an instance."""

    def output_formats(self) -> tuple[dict[str, OutputFormat], str]: ...


def gadget_output_formats(gadget: builtins.type[Gadget]) -> tuple[dict[str, OutputFormat], str]:
    """The formats ``gadget`` declares (by ``-o`` name) and its default one; none and ``""``
    when it declares none. Read from the class (a classmethod, or a method of an instance
    made for it: gadgets load nothing before :meth:`InitClose.init`)."""
    import inspect

    declared = inspect.getattr_static(gadget, "output_formats", None)
    if declared is None:
        return {}, ""
    if isinstance(declared, classmethod | staticmethod):
        formats, default = gadget.output_formats()  # type: ignore[attr-defined]
    else:
        formats, default = gadget().output_formats()  # type: ignore[attr-defined]
    return dict(formats), default


def gadget_param_defaults(gadget: builtins.type[Gadget]) -> dict[str, str]:
    """:attr:`Gadget.param_defaults`, with the gadget's default output format as the default
    of ``-o`` (``report`` for a histogram gadget) unless the gadget gives one itself."""
    defaults = dict(gadget.param_defaults)
    _, default_format = gadget_output_formats(gadget)
    if default_format:
        defaults.setdefault("output", default_format)
    return defaults


@dataclass
class GadgetContext:
    """Everything one run of a gadget can see: params, cancellation, logger, output."""

    id: str
    gadget: type[Gadget]
    gadget_params: Params
    runtime_params: Params
    operator_params: dict[str, Params]
    logger: Logger
    """structlog's methods (``debug``, ``info``, ``warning``…), bound to the gadget's name."""
    args: list[str] = field(default_factory=list)
    timeout: float | None = None
    """Seconds after :meth:`start` when the run ends by itself; ``None`` runs until stopped."""
    emit: Callable[[Batch], None] = field(default=lambda batch: None)
    """Set by the runtime: hands a batch to the operator chain."""
    report_lost: Callable[[int], None] = field(default=lambda n: None)
    """Set by the runtime: counts events the kernel could not deliver."""
    end_window: Callable[[], None] = field(default=lambda: None)
    """Set by the runtime: ends the current window (sort and limit release it, the output
    writes it whole, metrics take it as one gauge window). Gadgets whose type
    :attr:`~GadgetType.ends_windows` (top, snapshot and profile gadgets) call it after each
    interval's rows, each snapshot or a profile's result, an empty one included; other
    gadgets' windows follow the clock of ``--interval``."""
    heartbeat: Callable[[], None] = field(default=lambda: None)
    """Set by the runtime: gadgets call it between polls (interval ticks, loss reports)."""
    pins: PinDir | None = None
    """This run's folder under the bpffs pin path."""
    schema: Schema | None = None
    """The gadget's schema bound to its C layout, set once the BPF object is loaded."""
    resources: Resources = field(default_factory=Resources)
    """What operators provide to the run, by type (the mount-ns filter, the container
    collection, shared maps, the run itself): see :mod:`igrun.core.run.resources`."""
    tag: str | None = None
    """Which gadget this is when several share one output (a config file's runs)."""
    _done: threading.Event = field(default_factory=threading.Event)
    _deadline: float | None = None

    def start(self) -> None:
        if self.timeout:
            self._deadline = time.monotonic() + self.timeout

    def cancel(self) -> None:
        """Ask the run to end (Ctrl-C, SIGTERM, a limit reached)."""
        self._done.set()

    @property
    def done(self) -> bool:
        """Whether the run should end now: cancelled or past its timeout."""
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._done.set()
        return self._done.is_set()

    def remaining(self, cap: float) -> float:
        """Seconds to wait at most before looking at :attr:`done` again."""
        if self._deadline is None:
            return cap
        return max(0.0, min(cap, self._deadline - time.monotonic()))
