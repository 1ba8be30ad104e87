"""``trace signal``: every signal sent on the host (or in the selected containers).

Hooks the ``signal/signal_generate`` tracepoint, which fires in the sender for every signal
the kernel generates, whoever asked, plus the ``syscalls`` tracepoints of ``kill``, ``tkill``
and ``tgkill``, whose exit gives the sending syscall's return value: so a kill() that fails
(``ESRCH``, ``EPERM``, ``EINVAL``), which generates no signal, is still seen with its error.
All are stable tracepoints: no kprobe is needed.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    ParamDesc,
    Schema,
    TypeHint,
    fields,
    hookimpl,
    process_fields,
)
from igrun.core.errors import ParamError
from igrun.core.tracer import BpfTracer

SIGNAL_NAMES: tuple[str, ...] = (
    "",  # 0: kill(pid, 0) only checks that pid exists; Inspektor Gadget shows no name either
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
)
"""Linux's signal names by number (x86, arm64 and the other generic layouts), as ``kill -l``
and Inspektor Gadget print them."""

SIGRTMIN = 34
"""The first real-time signal a program can use: the C library keeps 32 and 33 for itself."""
SIGRTMAX = 64
_ALIASES = {"SIGIOT": 6, "SIGCLD": 17, "SIGPOLL": 29}


def signal_name(number: int) -> str:
    """``SIGKILL``, ``SIGRTMIN+3``, ``SIGRTMAX``; ``SIG<n>`` for numbers with no name."""
    if 0 <= number < len(SIGNAL_NAMES):
        return SIGNAL_NAMES[number]
    if number == SIGRTMIN:
        return "SIGRTMIN"
    if number == SIGRTMAX:
        return "SIGRTMAX"
    if SIGRTMIN < number < SIGRTMAX:
        return f"SIGRTMIN+{number - SIGRTMIN}"
    return f"SIG{number}"


@cache
def _name_table() -> Any:
    """Every signal's name by number (built with the first batch, not at import)."""
    return np.array([signal_name(n) for n in range(SIGRTMAX + 1)], dtype=object)


_BY_NAME = {name: n for n, name in enumerate(SIGNAL_NAMES) if name} | _ALIASES
_RT = re.compile(r"^SIGRT(MIN|MAX)(?:([+-])(\d+))?$")


def parse_signal(value: str) -> int:
    """The number ``--signal`` names: ``9``, ``SIGKILL``, ``KILL`` (any case), ``SIGRTMIN+2``;
    0 (every signal) when empty, as in Inspektor Gadget, which takes the number or the SIG
    name and which this extends with the short names ``kill`` accepts."""
    text = value.strip()
    if not text:
        return 0
    if re.fullmatch(r"\d+", text):
        number = int(text)
    else:
        name = text.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        number = _BY_NAME.get(name, -1)
        rt = _RT.match(name)
        if rt:
            base, sign, offset = rt.groups()
            number = SIGRTMIN if base == "MIN" else SIGRTMAX
            if sign:
                number += int(offset) if sign == "+" else -int(offset)
            if not SIGRTMIN <= number <= SIGRTMAX:
                number = -1
        if number < 0:
            raise ParamError(f"--signal: no signal found for {value!r}")
    if number > SIGRTMAX:
        raise ParamError(f"--signal: {number} is not a signal (1-{SIGRTMAX})")
    return number


def _signals(batch: Batch) -> Any:
    """Signal names from a table lookup; a number outside 0-64 (a kill() that failed with
    EINVAL) is formatted once per distinct value."""
    sig = batch.member("sig").astype(np.int64)
    known = (sig >= 0) & (sig <= SIGRTMAX)
    out = _name_table()[np.where(known, sig, 0)]
    if not known.all():
        values, inverse = np.unique(sig[~known], return_inverse=True)
        out[~known] = np.array([signal_name(v) for v in values.tolist()], dtype=object)[
            inverse.reshape(-1)
        ]
    return out


class TraceSignal(BpfTracer):
    """Inspektor Gadget's ``trace signal``: same fields, params and default columns.

    Where ig either watches signal generation (no return value) or, with ``--kill-only``, the
    kill syscalls alone, this watches both at once: a signal sent with kill(), tkill() or
    tgkill() carries the syscall's return value (``ret``), and one that failed is shown too.
    """

    name = "signal"
    category = Category.TRACE
    description = "Trace signals received by processes"
    bpf_object = "signal.bpf.o"
    params = (
        ParamDesc(
            "pid",
            type_hint=TypeHint.INT,
            default="0",
            description="show only signals sent by this process",
        ),
        ParamDesc(
            "signal",
            description="trace only this signal (it can be an int like 9 or string beginning "
            'with "SIG" like "SIGKILL"; "KILL" and "SIGRTMIN+1" work too)',
            check=parse_signal,
        ),
        ParamDesc(
            "failed-only",
            alias="f",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only events where the syscall sending a signal failed",
        ),
        ParamDesc(
            "kill-only",
            alias="k",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only events of the kill syscalls (kill, tkill, tgkill)",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace signal",
        "igrun trace signal --host -o json --timeout 10s",
        "igrun trace signal --signal SIGKILL",
        "igrun trace signal --kill-only --failed-only -o columns=+uid",
        "igrun trace signal --pid 1234 -F signal:SIGTERM",
    )
    schema = Schema(
        [
            fields.timestamp("when the signal was sent"),
            *process_fields("mntns pid comm", about="of the sender"),
            Field(
                "signal",
                Kind.STR,
                "signal name (SIGKILL, SIGRTMIN+1; empty for signal 0)",
                decode=_signals,
                column=Column(min_width=6, max_width=11, ellipsis="start"),
                omit_empty=True,
            ),
            Field(
                "tpid",
                Kind.INT,
                "target: the process (thread for tkill/tgkill) the signal went to; for a "
                "kill that failed, the pid it was asked for (negative: a process group)",
                column=Column(min_width=7, align="right"),
                omit_empty=True,
            ),
            Field(
                "ret",
                Kind.INT,
                "what the sending syscall returned (0 or -errno); for a signal the kernel "
                "raised itself 0, or -EAGAIN when it could not be queued",
                column=Column(width=7, align="right", errno="returned"),
                omit_empty=True,
            ),
            *process_fields("uid gid", about="of the sender"),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """The params as the object's globals; the signal is parsed here so a bad name ends
        the run before anything is loaded."""
        p = ctx.gadget_params
        return {
            "filtered_pid": int(p.get("pid") or 0),
            "target_signal": parse_signal(str(p.get("signal") or "")),
            "failed_only": bool(p.get("failed-only")),
            "kill_only": bool(p.get("kill-only")),
        }


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceSignal)
