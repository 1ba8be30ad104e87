"""Running a gadget from Python: the same runtime as the ``igrun`` command, as an object.

:func:`run_gadget` names what to run (a gadget by name or class, or a compiled object by
path), its params as the flat map of config files (``"ignore-errors"``,
``"runtime.timeout"``, ``"operator.filter.filter"``) and its operators; the
:class:`GadgetRun` it returns runs :class:`~igrun.core.run.local.Runtime` in a thread of its
own, so the caller can wait until every program is attached, trigger events, read batches as
they come, cancel, and read the object's maps once the run has drained::

    with run_gadget("trace exec", {"runtime.timeout": "5s"}) as run:
        run.wait_ready()
        subprocess.run(["true"])
        for event in run.events():
            ...

Nothing is read from the environment or the user's config file: a program says what it runs.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from igrun.core.errors import IgrunError, UsageError
from igrun.core.events.schema import Batch
from igrun.core.gadget import Gadget, GadgetContext
from igrun.core.operator import PRIORITY_OUTPUT, Operator

if TYPE_CHECKING:  # the C extension loads with the first run, not with ``import igrun.core``
    from igrun.core.bpf.objects import BpfObject, Map

_END = object()
"""Put on the queue after the last batch: the run has ended (and drained)."""

GadgetSpec = str | os.PathLike[str] | type[Gadget]
"""What :func:`run_gadget` runs: ``"trace exec"`` (or ``"trace_exec"``), a gadget class, or
the path of a compiled CO-RE object (what ``igrun run FILE`` runs)."""

ParamValue = str | int | float | bool | Sequence[str]


def _flat(value: ParamValue) -> str:
    """A param value as the command line would give it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return ",".join(value)


class _Collector(Operator):
    """The end of the chain: every batch goes to its run's queue (one subclass per run)."""

    name = "collect"
    description = "hands batches to the Python program that runs the gadget"
    priority = PRIORITY_OUTPUT
    sink: ClassVar[queue.SimpleQueue[Any]]

    def process(self, batch: Batch) -> Batch:
        type(self).sink.put(batch)
        return batch


class GadgetRun:
    """One run of a gadget, started by :meth:`start` (or ``with``) and ended by its timeout,
    :meth:`cancel` or the end of the ``with`` block.

    The run's BPF object stays open after the run has ended, until :meth:`close` (the end of
    the ``with`` block): :meth:`map` reads a map's final values there.
    """

    def __init__(
        self,
        gadget: type[Gadget],
        params: Mapping[str, ParamValue],
        operators: Sequence[str | type[Operator]] | None,
        *,
        on_ready: Callable[[GadgetRun], None] | None = None,
        collect: bool = True,
        sinks: Sequence[type[Operator]] = (),
    ) -> None:
        self.gadget = gadget
        self.sinks = tuple(sinks)
        """Operators added to the chain, e.g. an output writing elsewhere than stdout."""
        self.params = {key: _flat(value) for key, value in params.items()}
        self.operators = operators
        self.collect = collect
        self._on_ready = on_ready
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ready = threading.Event()
        self._stopped = threading.Event()
        self._release = threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: GadgetContext | None = None
        self._instance: Gadget | None = None
        self._cancelled = False
        self._error: BaseException | None = None
        self._error_raised = False
        self._program_ids: frozenset[int] = frozenset()
        self._losses: Any = None  # the runtime's count for this run, from ready on
        self._counts_lost = True

    # -- lifecycle

    def start(self) -> Self:
        """Check the params and start the run in a thread; return at once (see
        :meth:`wait_ready`). A bad param raises :class:`~igrun.core.ParamError` here, before
        anything loads."""
        if self._thread is not None:
            raise IgrunError("this run was started already: make a new one")
        from igrun.core.plugins import registry

        reg = registry()
        runtime, params = self._runtime(reg.operators())
        for values in (params[0], params[1], *params[2].values()):
            values.validate()
        self._thread = threading.Thread(
            target=self._work,
            args=(runtime, params, reg.hook),
            name=f"igrun {self.gadget.full_name()}",
            daemon=True,
        )
        self._thread.start()
        return self

    def _runtime(self, installed: list[type[Operator]]) -> tuple[Any, Any]:
        from igrun.core.run.local import Runtime

        known = {op.name: op for op in installed}
        chain: list[str] | None = None
        pool = [op for op in installed if op.priority < PRIORITY_OUTPUT]
        if self.operators is not None:
            chain = []
            pool = []
            for op in self.operators:
                if isinstance(op, str):
                    if op not in known:
                        names = ", ".join(sorted(known))
                        raise UsageError(f"unknown operator {op!r} (installed: {names})")
                    op = known[op]
                pool.append(op)
                chain.append(op.name)
        pool.extend(self.sinks)
        if self.collect:
            pool.append(type("collect", (_Collector,), {"sink": self._queue}))
        runtime = Runtime(pool, chain=chain)
        return runtime, runtime.params_for(self.gadget, self.params)

    def _work(self, runtime: Any, params: Any, hooks: Any) -> None:
        try:
            runtime.run(
                self.gadget,
                *params,
                hooks=hooks,
                on_context=self._got_context,
                on_ready=self._became_ready,
                on_stopped=self._hold,
            )
        except BaseException as exc:  # the caller's to see, in its own thread
            self._error = exc
        finally:
            self._stopped.set()
            self._ended.set()
            self._queue.put(_END)

    def _got_context(self, ctx: GadgetContext) -> None:
        self._ctx = ctx
        if self._cancelled:
            ctx.cancel()

    def _became_ready(self, ctx: GadgetContext, gadget: Gadget) -> None:
        from igrun.core.run.local import Run

        self._instance = gadget
        self._losses = ctx.resources.get(Run)
        self._counts_lost = bool(getattr(gadget, "counts_lost", True))
        obj = self.bpf_object
        if obj is not None:
            self._program_ids = frozenset(
                _prog_id(p.fd) for p in obj.programs.values() if _loaded(p)
            )
        self._ready.set()
        if self._on_ready is not None:
            self._on_ready(self)

    def _hold(self, ctx: GadgetContext, gadget: Gadget) -> None:
        """The run has drained: keep its object open until the caller closes the run."""
        self._stopped.set()
        self._queue.put(_END)
        self._release.wait()

    def cancel(self) -> None:
        """Ask the run to end; its last events still come (the final drain). Safe to call
        from any thread, at any time, more than once."""
        self._cancelled = True
        if self._ctx is not None:
            self._ctx.cancel()

    def wait_ready(self, timeout: float | None = 30.0) -> None:
        """Block until every program is attached. Raises the run's error if it failed first,
        :class:`TimeoutError` after ``timeout`` seconds, :class:`IgrunError` if it ended
        without getting there (cancelled while it started)."""
        self._started()
        deadline = None if timeout is None else time.monotonic() + timeout
        # Two events to wait for (ready, ended): short waits on one, then a look at the other.
        while not self._ready.wait(0.05):
            if self._ended.is_set():
                self._raise_error()
                raise IgrunError(f"{self.gadget.full_name()} ended before it was ready")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{self.gadget.full_name()} not ready after {timeout}s")

    @property
    def is_ready(self) -> bool:
        """Whether every program is attached (it stays true after the run ends)."""
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has ended and drained (its timeout, :meth:`cancel`); whether
        it has. Raises the run's error."""
        self._started()
        done = self._stopped.wait(timeout)
        if done:
            self._raise_error()
        return done

    def close(self) -> None:
        """End the run if it still runs, wait for its final drain, close its object and
        remove its pins. Raises the run's error if nothing raised it yet."""
        if self._thread is None:
            return
        self.cancel()
        self._stopped.wait()
        self._release.set()
        self._thread.join()
        self._instance = None
        self._raise_error()

    def __enter__(self) -> Self:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._error_raised = True  # the caller's own exception goes first
        self.close()

    # -- what the run produced

    def batches(self) -> Iterator[Batch]:
        """Batches as they reach the end of the operator chain, until the run has ended and
        its last events are through; then the run's error, if it failed. Each
        :class:`~igrun.core.Batch` holds numpy columns: ``batch["pid"]``."""
        self._started()
        if not self.collect:
            raise IgrunError("this run collects no batches (collect=False)")
        while True:
            item = self._queue.get()
            if item is _END:
                self._queue.put(_END)  # for the next caller, and the next iteration
                break
            yield item
        self._raise_error()

    def events(self) -> Iterator[dict[str, Any]]:
        """Events as dicts keyed as ``-o json`` prints them, every key present (an empty
        value too, which ``-o json`` leaves out as ``ig`` does); convenient, not fast."""
        for batch in self.batches():
            yield from batch.to_dicts()

    @property
    def context(self) -> GadgetContext | None:
        """The run's context (``id``, ``pins``), once the runtime has made it."""
        return self._ctx

    @property
    def pin_folder(self) -> Path | None:
        """This run's folder under the bpffs pin path, while the run has one."""
        ctx = self._ctx
        return ctx.pins.path if ctx is not None and ctx.pins is not None else None

    @property
    def lost(self) -> int | None:
        """Events the kernel dropped in this run so far, because its buffer was full (each
        one also logged as ``lost N events``); final once the run has ended, and still there
        after :meth:`close`. ``None`` when losses cannot be counted: a ring buffer declared
        without igrun's ``gadget_lost_events`` counter (``igrun/buffer.h``). 0 before the
        run is ready."""
        if not self._counts_lost:
            return None
        return 0 if self._losses is None else int(self._losses.lost_total)

    @property
    def program_ids(self) -> frozenset[int]:
        """Kernel ids of the programs of the gadget's object, taken when it became ready: a
        test checks that none is left once the run is closed."""
        return self._program_ids

    @property
    def bpf_object(self) -> BpfObject | None:
        """The gadget's BPF object while it is open (until :meth:`close`), if it has one."""
        from igrun.core.bpf.objects import BpfObject

        obj = getattr(self._instance, "obj", None)
        return obj if isinstance(obj, BpfObject) else None

    def map(self, name: str) -> Map:
        """A map of the gadget's object (``".bss"``, ``"events"``…), read once the run has
        ended, before :meth:`close`: its final values, after the last events."""
        obj = self._ended_object()
        if not obj.has_map(name):
            raise UsageError(f"{self.gadget.full_name()} has no map {name!r}")
        return obj.map(name)

    def global_value(self, name: str) -> bytes:
        """The bytes of the object's global variable ``name`` (``.bss``, ``.data`` or
        ``.rodata``), read once the run has ended, before :meth:`close`: its final value, as
        the programs left it (``int.from_bytes(run.global_value("calls"), "little")``)."""
        obj = self._ended_object()
        value = obj.global_value(name)
        if value is None:
            known = ", ".join(obj.global_names()) or "none"
            raise UsageError(
                f"{self.gadget.full_name()} has no global variable {name!r} (has: {known})"
            )
        return value

    # -- helpers

    def _ended_object(self) -> BpfObject:
        if not self._stopped.is_set():
            raise IgrunError("read maps once the run has ended: cancel() then wait()")
        obj = self.bpf_object
        if obj is None:
            raise IgrunError(f"{self.gadget.full_name()} has no BPF object open (closed?)")
        return obj

    def _started(self) -> None:
        if self._thread is None:
            raise IgrunError("the run has not started: use 'with' or start()")

    def _raise_error(self) -> None:
        if self._error is not None and not self._error_raised:
            self._error_raised = True
            raise self._error


def _loaded(prog: Any) -> bool:
    try:
        return bool(prog.fd >= 0)
    except IgrunError:
        return False


def _prog_id(fd: int) -> int:
    """The kernel id of the program behind ``fd``, from the kernel's fdinfo."""
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "prog_id":
            return int(value)
    raise IgrunError(f"fd {fd} is not a BPF program")


def resolve(gadget: GadgetSpec) -> type[Gadget]:
    """The gadget class for a name, a class, or an object's path."""
    if isinstance(gadget, type):
        return gadget
    if isinstance(gadget, os.PathLike) or (isinstance(gadget, str) and gadget.endswith(".o")):
        from igrun.core.objectrun.declarations import gadget_from_object

        return gadget_from_object(Path(gadget))
    from igrun.core.plugins import registry

    return registry().gadget(gadget)


def run_gadget(
    gadget: GadgetSpec,
    params: Mapping[str, ParamValue] | None = None,
    operators: Sequence[str | type[Operator]] | None = None,
    *,
    on_ready: Callable[[GadgetRun], None] | None = None,
    collect: bool = True,
) -> GadgetRun:
    """A run of ``gadget``, not started yet: use it with ``with`` (or :meth:`GadgetRun.start`).

    ``params`` is the flat map of config files: the gadget's own keys (``"paths": True``),
    ``"runtime.<key>"`` (``"runtime.timeout": "5s"``) and ``"operator.<name>.<key>"``
    (``"operator.filter.filter": "comm:sh"``). ``operators`` names the chain, in order
    (installed names or :class:`~igrun.core.Operator` classes); by default every installed
    operator that applies and has something to do runs, except the output that prints (name
    ``"output"`` to have it print too). ``on_ready(run)`` is called from the run's thread once
    every program is attached. With ``collect=False`` no batch is kept (for a run read only
    through its maps, or printed by ``"output"``).
    """
    return GadgetRun(resolve(gadget), params or {}, operators, on_ready=on_ready, collect=collect)
