"""The ``igrun`` launcher.

Run as the ``igrun`` command, or ``python -m igrun.core.cli``, this package takes SIGTERM,
SIGINT and SIGHUP first thing, before the launcher's modules are imported: a stop signal in
the first fraction of a second is noted, and :func:`igrun.core.cli.main.main` then exits 0
at once, as it does for one that comes later, instead of the process dying of it (143) or
printing a traceback from the middle of an import. The ``igrun`` command (``csrc/launcher.c``)
blocks them before it starts the interpreter and names them in :data:`BLOCKED_ENV`: they are
unblocked here, once handled, so one sent while the interpreter started is taken too. It
also starts the head start of ``igrun trace NAME`` (:mod:`igrun.core.run.headstart`), before
those imports too.
"""

import contextlib
import os
import signal
import sys

HELD_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)
"""SIGTERM last: once a process has a handler for it (``SigCgt``), it has all three."""
BLOCKED_ENV = "IGRUN_BLOCKED_SIGNALS"
"""The signals the ``igrun`` command blocked before starting the interpreter (numbers, comma
separated), for this package to unblock; taken out of the environment, so that no child sees
it."""
stopped: list[int] = []
"""The stop signals that came before ``main`` took them over."""


def note_stop(signum: int, frame: object) -> None:
    """The early handler: the signal is noted, and ``main`` acts on it."""
    stopped.append(signum)


def launched() -> bool:
    """Whether this process is the ``igrun`` command (its script, or ``python -m
    igrun.core.cli``, whose package is imported before ``__main__`` is set), not a program
    importing igrun."""
    orig = list(getattr(sys, "orig_argv", []))
    # The interpreter's own options only: a gadget's ``-m`` (``trace fsslower -m 0``,
    # ``--max-rows``) comes after them, where ``sys.argv`` begins.
    orig = orig[: max(len(orig) - len(sys.argv) + 1, 0)]
    if "-m" in orig:
        return orig[orig.index("-m") + 1 : orig.index("-m") + 2] == [__name__]
    if f"-m{__name__}" in orig:
        return True
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return os.path.basename(main_file) == "igrun"


def _hold_stop_signals() -> None:
    untouched = (signal.SIG_DFL, signal.default_int_handler)
    for sig in HELD_SIGNALS:
        if signal.getsignal(sig) in untouched:  # not when ignored (nohup) or handled
            signal.signal(sig, note_stop)


def _unblock(blocked: str) -> None:
    """Unblock the signals the ``igrun`` command blocked: one that came meanwhile is handled
    now (noted, with :func:`_hold_stop_signals` before), before any thread or child inherits
    the mask."""
    wanted = {int(n) for n in blocked.split(",") if n.strip().isdigit()}
    if wanted:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted & {int(s) for s in HELD_SIGNALS})


def _name_process() -> None:
    """Name this process ``igrun`` (its comm), as the command's own name would: the C
    command started the interpreter, whose name the kernel gave it, and ``pkill igrun``,
    ``pgrep igrun`` and ``top`` go by that name."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write("igrun")


_launched = launched()
if _launched:
    _hold_stop_signals()
_blocked = os.environ.pop(BLOCKED_ENV, None)
if _blocked is not None:  # started by the igrun command
    _unblock(_blocked)  # whoever imports this: never left blocked
    _name_process()
if _launched:
    # The gadget's programs load in a thread while the launcher's modules are imported.
    from igrun.core.run.headstart import begin as _begin_head_start

    _begin_head_start(sys.argv[1:])
