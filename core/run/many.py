"""Several gadgets at once, from one config file.

Each run gets a thread of its own and its own pin folder inside the process's one, and they
share what operators declare process-wide (:meth:`Operator.share`): the containers operator's
collection, discovery and one mount-ns filter map per selection, the output's lock. Their
output goes to the same stdout, one whole batch at a time, each record or line tagged with
its gadget. One Ctrl-C (or SIGTERM, or SIGHUP) ends them all; each still ends on its own
timeout. Params are all checked before anything loads; a run that fails later (its BPF object
does not load, say) is reported in one line and the others go on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from igrun.core.bpf.pins import PIN_ROOT, PinDir
from igrun.core.config.runs import RunSpec
from igrun.core.errors import OutputClosed, OutputError
from igrun.core.gadget import GadgetContext
from igrun.core.operator import Operator
from igrun.core.run.local import Runtime, check_host, on_stop_signals
from igrun.core.run.resources import Resources

JOIN_SECONDS = 0.2  # how often the main thread looks up from waiting, to take signals


def run_all(
    specs: Sequence[RunSpec],
    operators: list[type[Operator]],
    hooks: Any = None,
    on_error: Callable[[RunSpec, BaseException], None] | None = None,
    on_end: Callable[[RunSpec, GadgetContext], None] | None = None,
) -> list[BaseException]:
    """Run every spec until each ends; return the failures (``on_error`` hears of each as
    it happens, ``on_end`` of each run that ended without one). Ctrl-C during the run is
    not a failure."""
    params = []
    for spec in specs:  # every run checked before anything starts, root or not
        rt = Runtime(operators, chain=spec.chain)
        p = rt.params_for(spec.gadget, spec.values)
        rt.check(spec.gadget, *p)
        rt.check_chain(spec.gadget)
        params.append(p)
    check_host()

    process = Resources()
    for op in operators:
        op.share(process)
    contexts: list[GadgetContext] = []
    errors: list[BaseException] = []
    lock = threading.RLock()  # the signal handler may run again while it holds it
    ending: list[str] = []
    """Why every run ends (a signal, or the shared stdout is closed or failed); a run that
    registers afterwards is cancelled at once."""

    def started(ctx: GadgetContext) -> None:
        with lock:
            contexts.append(ctx)
            if ending:  # a signal or a closed stdout came before this run had started
                ctx.cancel()

    def cancel_all(why: str = "signal") -> bool:
        """End every run; True for the first reason given."""
        with lock:
            first = not ending
            ending.append(why)
            for ctx in contexts:
                ctx.cancel()
        return first

    def work(rt: Runtime, spec: RunSpec, p: tuple[Any, Any, Any]) -> None:
        try:
            ctx = rt.run(
                spec.gadget,
                *p,
                hooks=hooks,
                process=process,
                tag=spec.gadget.full_name(),
                on_context=started,
            )
            if on_end is not None:
                on_end(spec, ctx)
        except OutputClosed:  # stdout is every run's: they all end, quietly
            cancel_all("closed")
        except BaseException as exc:  # the other runs go on, unless the output failed
            if isinstance(exc, OutputError) and not cancel_all("output"):
                return  # reported once, by the run that met it first
            with lock:
                errors.append(exc)
            if on_error is not None:
                on_error(spec, exc)

    previous = on_stop_signals(lambda signum, frame: cancel_all())
    top: PinDir | None = None  # made once a signal can no longer leave it behind
    try:
        top = PinDir.create(PIN_ROOT)
        runtimes = [
            Runtime(operators, pin_root=top.path, chain=spec.chain, pin_name=f"run{i}")
            for i, spec in enumerate(specs)
        ]
        threads = [
            threading.Thread(target=work, args=(rt, spec, p), name=f"igrun-{spec.gadget.id()}")
            for rt, spec, p in zip(runtimes, specs, params, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(JOIN_SECONDS)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if top is not None:
            top.cleanup()
    if not errors and "closed" in ending:
        raise OutputClosed("output closed")
    return errors
