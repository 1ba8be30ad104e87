"""The local runtime: runs one gadget on this host, with its operator chain.

The lifecycle follows Inspektor Gadget's local runtime: check the host, instantiate the gadget,
init it (BPF objects load here, so the event layout is known), instantiate and order the
operators, pre-run, run, post-run, close. Every piece that started is stopped again, whatever
ends the run: its timeout, Ctrl-C, SIGTERM, SIGHUP (a closed terminal or ssh session), a limit
reached, or an error.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from igrun.core.bpf.pins import PIN_ROOT, PinDir
from igrun.core.errors import EnvironmentProblem, output_failed
from igrun.core.events.schema import Batch
from igrun.core.gadget import (
    ContainerAttacher,
    Gadget,
    GadgetContext,
    InitClose,
    ResultRunner,
    Runner,
)
from igrun.core.log import get_logger
from igrun.core.log import preload as preload_logging
from igrun.core.operator import PRIORITY_OUTPUT, Chain, Operator, check_chain, order
from igrun.core.params import ParamDesc, Params, TypeHint
from igrun.core.run.attach import attached
from igrun.core.run.resources import Resources

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
LOST_REPORT_INTERVAL = 1.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
BUFFER_MAX = 1 << 30
READY_EVENT = "ready"
"""The log line (at the default level, on stderr) that says every program of a run is
attached: what scripts and tests wait for before they trigger events."""


def _size_flag(n: int) -> str:
    """A size the way ``--buffer-size`` takes it: 4K, 2M, 1G."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def check_buffer_size(size: int) -> None:
    """The kernel takes a ring buffer of a power-of-two number of pages, and libbpf a perf
    buffer of a power-of-two number of pages per CPU: any other size is refused here, with
    the sizes that are allowed, instead of being rounded behind the user's back (or
    overflowing the kernel's 32-bit size)."""
    if size == 0:
        return
    low, high = _size_flag(PAGE_SIZE), _size_flag(BUFFER_MAX)
    if not PAGE_SIZE <= size <= BUFFER_MAX:
        raise ValueError(
            f"{_size_flag(size)} is out of range: from {low} to {high} (or 0: the gadget's own)"
        )
    if size & (size - 1):
        below = 1 << (size.bit_length() - 1)
        raise ValueError(
            f"{_size_flag(size)} is not a power of two (the kernel's rule for ring and perf "
            f"buffers): use {_size_flag(below)} or {_size_flag(below * 2)}"
        )


LOST_GROWTH = 4
"""How much larger a buffer the lost-events summary suggests: losses come in bursts, and a
burst that filled the buffer once usually needs more than twice the room."""


def lost_summary(ctx: GadgetContext) -> str | None:
    """The one line a run that lost events ends with (``None`` when nothing was lost): how
    many, and the ``--buffer-size`` to try, from the size this run had."""
    from igrun.core.tracer import EventsBuffer

    run = ctx.resources.get(Run)
    if run is None or not run.lost_total:
        return None
    message = f"lost {run.lost_total} events (buffer full)"
    buffer = ctx.resources.get(EventsBuffer)
    if buffer is None:
        return message
    if buffer.size >= BUFFER_MAX:
        return f"{message} with the largest --buffer-size: narrow the trace with filters"
    return f"{message}: try --buffer-size {_size_flag(min(buffer.size * LOST_GROWTH, BUFFER_MAX))}"


RUNTIME_PARAMS: tuple[ParamDesc, ...] = (
    ParamDesc(
        "timeout",
        alias="t",
        type_hint=TypeHint.DURATION,
        default="0",
        description="stop after this long (e.g. 10s, 500ms); 0 runs until Ctrl-C",
    ),
    ParamDesc(
        "interval",
        type_hint=TypeHint.DURATION,
        default="0",
        description="gather events for this long, then print them as one window (one JSON "
        "array, or a block under a timestamped line); 0 prints each batch as it comes",
    ),
    ParamDesc(
        "buffer-size",
        type_hint=TypeHint.BYTES,
        default="0",
        description="the events buffer of BPF gadgets: ring buffer bytes, or perf buffer bytes "
        "per CPU; a power of two from 4K to 1G (e.g. 4M); 0 keeps the gadget's own size",
        check=check_buffer_size,
    ),
)


def check_host(pin_root: Path = PIN_ROOT) -> None:
    """Fail early, with one clear line, where gadgets cannot run."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("igrun needs root to load BPF programs (try sudo)")
    if not VMLINUX_BTF.exists():
        raise EnvironmentProblem(
            f"this kernel has no BTF ({VMLINUX_BTF} is missing): CO-RE gadgets cannot load"
        )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""What ends a run cleanly, like Ctrl-C: a kill, a closed terminal or ssh session."""


def on_stop_signals(handler: Any) -> dict[int, Any]:
    """Install ``handler`` for each stop signal, SIGHUP only when it is not ignored
    (``nohup igrun …`` keeps running when its terminal closes); return the handlers it
    replaced."""
    previous: dict[int, Any] = {}
    for sig in STOP_SIGNALS:
        if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, handler)
    return previous


@contextmanager
def _stop_on_signals(ctx: GadgetContext) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP end the run cleanly; a second one interrupts at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if ctx.done:
            raise KeyboardInterrupt
        ctx.cancel()

    previous = on_stop_signals(handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _write_result(data: bytes) -> None:
    """A result gadget's whole output to stdout (a write may take only part of it)."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(1, view) :]
    except OSError as exc:
        raise output_failed(exc) from None


class Run:
    """The wiring of one run: emits batches into the chain, reports losses, ticks intervals."""

    def __init__(self, ctx: GadgetContext, chain: Chain, interval: float) -> None:
        self.ctx = ctx
        self.chain = chain
        self.interval = interval
        self.lost_total = 0
        self.events_total = 0
        """Events the gadget handed to the chain, before any filter (for the metrics)."""
        self.batches_total = 0
        self._lost_pending = 0
        self._next_lost_report = time.monotonic() + LOST_REPORT_INTERVAL
        clocked = interval and not ctx.gadget.type.ends_windows
        self._next_flush = time.monotonic() + interval if clocked else None
        self.windows_ended = 0
        """Windows the gadget ended itself (:meth:`end_window`)."""
        self._window_open = False

    def emit(self, batch: Batch) -> None:
        if self.ctx.schema is not None and batch.schema is not self.ctx.schema:
            batch = batch.with_schema(self.ctx.schema)
        self.events_total += len(batch)
        self.batches_total += 1
        self._window_open = True
        self.chain.process(batch)
        self.heartbeat()

    def end_window(self) -> None:
        """The gadget's window ends here (an interval's rows, a snapshot): the chain
        releases and writes it."""
        self.chain.flush()
        self.windows_ended += 1
        self._window_open = False

    def finish(self) -> None:
        """The run's last window: what the clock or the gadget left open (a gadget that ends
        its own windows and closed its last one adds no empty one)."""
        if self._window_open or not self.windows_ended:
            self.chain.flush()

    def report_lost(self, n: int) -> None:
        self.lost_total += n
        self._lost_pending += n

    def heartbeat(self) -> None:
        """Called by gadgets between polls (at least every 100 ms) and after every batch."""
        now = time.monotonic()
        if self._lost_pending and now >= self._next_lost_report:
            self.flush_lost()
            self._next_lost_report = now + LOST_REPORT_INTERVAL
        if self._next_flush is not None and now >= self._next_flush:
            self.chain.flush()
            self._next_flush = now + self.interval

    def flush_lost(self) -> None:
        if not self._lost_pending:
            return
        message = f"lost {self._lost_pending} events"
        get_logger().warning(message, total=self.lost_total)
        self.chain.warn(message)
        self._lost_pending = 0


class Runtime:
    """Runs gadgets on the local host.

    ``chain`` (operator names, from a config file) fixes which operators run and in what
    order; operators with the output priority still come last, and those that are
    :attr:`~igrun.core.operator.Operator.always` on (the container selection) come first
    when the chain does not name them. Without it, every operator that
    applies runs, ordered by dependencies and priority.
    """

    def __init__(
        self,
        operators: list[type[Operator]],
        pin_root: Path = PIN_ROOT,
        chain: Sequence[str] | None = None,
        pin_name: str | None = None,
    ) -> None:
        self.operators = operators
        self.pin_root = pin_root
        self.chain = chain
        self.pin_name = pin_name

    def operators_for(self, gadget: type[Gadget]) -> list[type[Operator]]:
        applicable = [op for op in self.operators if op.can_operate_on(gadget)]
        if self.chain is None:
            return order(applicable)
        by_name = {op.name: op for op in applicable}
        chosen = [by_name[name] for name in self.chain if name in by_name]
        kept = [op for op in order(applicable) if op.always and op not in chosen]  # first
        outputs = [op for op in order(applicable) if op.priority >= PRIORITY_OUTPUT]
        return kept + [op for op in chosen if op not in outputs] + outputs

    def check_chain(self, gadget: type[Gadget]) -> None:
        """Refuse, before anything loads, a chain lacking what its gadget or an operator
        needs (:class:`~igrun.core.run.resources.MissingDependency` names both)."""
        check_chain(gadget, self.operators_for(gadget), self.operators)

    def params_for(
        self, gadget: type[Gadget], values: Mapping[str, str] | None = None
    ) -> tuple[Params, Params, dict[str, Params]]:
        """Fresh gadget, runtime and operator params for ``gadget`` (with flat-map values)."""
        from igrun.core.gadget import gadget_param_defaults
        from igrun.core.params import params_from_map, with_defaults

        defaults = gadget_param_defaults(gadget)
        gadget_params = Params(gadget.params)
        runtime_params = Params(with_defaults(RUNTIME_PARAMS, defaults))
        operator_params = {
            op.name: Params(with_defaults(op.params, defaults)) for op in self.operators_for(gadget)
        }
        params_from_map(values or {}, gadget_params, runtime_params, operator_params)
        return gadget_params, runtime_params, operator_params

    def check(
        self,
        gadget_cls: type[Gadget],
        gadget_params: Params,
        runtime_params: Params,
        operator_params: dict[str, Params],
    ) -> None:
        """Everything the user gave this run, checked before anything starts (see
        :mod:`igrun.core.run.check`): needs no root, loads nothing."""
        from igrun.core.operator import RunPlan
        from igrun.core.run.check import check_run

        applicable = tuple(op for op in self.operators if op.can_operate_on(gadget_cls))
        chain = tuple(self.operators_for(gadget_cls))
        check_run(
            RunPlan(gadget_cls, gadget_params, runtime_params, operator_params, chain, applicable)
        )

    def run(
        self,
        gadget_cls: type[Gadget],
        gadget_params: Params,
        runtime_params: Params,
        operator_params: dict[str, Params],
        *,
        hooks: Any = None,
        prepare: Any = None,
        resources: Iterable[object] = (),
        process: Resources | None = None,
        tag: str | None = None,
        on_context: Any = None,
        on_ready: Callable[[GadgetContext, Gadget], None] | None = None,
        on_stopped: Callable[[GadgetContext, Gadget], None] | None = None,
    ) -> GadgetContext:
        """Run ``gadget_cls`` until it ends; return its context (e.g. for ``lost_total``).

        ``prepare(ctx, operators)`` may adjust operator instances before they start (tests use
        it to capture output); ``resources`` seeds :attr:`GadgetContext.resources`, each
        object under its own type (e.g. a ``MntnsFilter`` of a test's own map), on top of
        ``process`` (what the runs of one process share); ``tag`` names the run in a shared
        output. ``on_context(ctx)``, when given,
        replaces the SIGINT/SIGTERM handling (only the main thread may install it): a caller
        running several gadgets in threads gets each context to cancel them itself.

        ``on_ready(ctx, gadget)`` is called once every program is attached, when the ``ready``
        line is logged; ``on_stopped(ctx, gadget)`` once the run has ended and its last events went
        through the chain, before anything is closed: the gadget's BPF object and maps are
        still open (a caller reads a map's final values there). Neither is called when the run
        fails before that point.
        """
        self.check(gadget_cls, gadget_params, runtime_params, operator_params)
        self.check_chain(gadget_cls)
        check_host(self.pin_root)
        timeout = runtime_params.get("timeout") or None
        ctx = GadgetContext(
            id=os.urandom(6).hex(),  # 12 hex digits, as uuid4().hex[:12] without uuid
            gadget=gadget_cls,
            gadget_params=gadget_params,
            runtime_params=runtime_params,
            operator_params=operator_params,
            logger=get_logger(gadget=gadget_cls.full_name()),
            timeout=timeout,
            resources=Resources(process),
            tag=tag,
        )
        ctx.resources.providers = {
            kind: [op.name for op in self.operators if kind in op.provides]
            for op in self.operators
            for kind in op.provides
        }
        for value in resources:
            ctx.resources.provide(value, by="the caller")
        error: BaseException | None = None
        if on_context is not None:
            on_context(ctx)
        with ExitStack() as stack:
            try:
                self._run(ctx, stack, hooks, prepare, on_context is None, on_ready, on_stopped)
            except BaseException as exc:
                error = exc
                raise
            finally:
                stack.close()  # stop everything before reporting the end
                if hooks is not None:
                    hooks.igrun_run_finished(ctx=ctx, error=error)
        return ctx

    def _run(
        self,
        ctx: GadgetContext,
        stack: ExitStack,
        hooks: Any,
        prepare: Any,
        signals: bool,
        on_ready: Callable[[GadgetContext, Gadget], None] | None = None,
        on_stopped: Callable[[GadgetContext, Gadget], None] | None = None,
    ) -> None:
        if signals:  # before the pin folder exists: no signal leaves it behind
            stack.enter_context(_stop_on_signals(ctx))
        if self.pin_name is None:
            pins = PinDir.create(self.pin_root)
        else:
            pins = PinDir.inside(self.pin_root, self.pin_name)
        stack.callback(pins.cleanup)
        ctx.pins = pins

        op_classes = self.operators_for(ctx.gadget)
        ctx.schema = ctx.gadget.schema.extend([f for op in op_classes for f in op.fields])
        operators: list[Operator] = []
        for op_cls in op_classes:
            op = op_cls.instantiate(ctx, ctx.operator_params.get(op_cls.name, Params(())))
            if op is not None:
                operators.append(op)
                stack.callback(op.post_run)
        if ctx.done:  # Ctrl-C while the operators started (waiting for a runtime, say)
            return

        ctx.schema = None
        preload_logging()  # while the programs load: the ready line then costs no import
        gadget = ctx.gadget()
        ctx.resources.provide(gadget, by="runtime")  # the live instance (its own -o formats)
        if isinstance(gadget, InitClose):
            gadget.init(ctx)
            stack.callback(gadget.close)
        if isinstance(gadget, ContainerAttacher):  # detached before the gadget closes
            stack.enter_context(attached(ctx, gadget))
        bound = ctx.schema if ctx.schema is not None else ctx.gadget.schema
        ctx.schema = bound.extend([f for op in operators for f in op.fields])
        if prepare is not None:
            prepare(ctx, operators)
        for op in operators:
            op.pre_run(ctx.schema)

        run = Run(ctx, Chain(operators), ctx.runtime_params.get("interval") or 0.0)
        ctx.emit = run.emit
        ctx.report_lost = run.report_lost
        ctx.heartbeat = run.heartbeat
        ctx.end_window = run.end_window
        ctx.resources.provide(run, by="runtime")
        ctx.start()
        if hooks is not None:
            hooks.igrun_run_started(ctx=ctx)
        run.chain.started()  # the columns header: tracing has begun
        # The documented readiness signal (docs/api.md): every program is attached.
        ctx.logger.info(READY_EVENT, id=ctx.id)
        if on_ready is not None:
            on_ready(ctx, gadget)
        try:
            if isinstance(gadget, Runner):
                gadget.run(ctx)
            elif isinstance(gadget, ResultRunner):
                result = gadget.run_with_result(ctx)
                if not run.chain.result(result):  # no output operator in the chain
                    _write_result(result)
        finally:
            run.flush_lost()
        run.finish()
        ctx.logger.debug("gadget_stopped", id=ctx.id, lost=run.lost_total)
        if on_stopped is not None:
            on_stopped(ctx, gadget)
