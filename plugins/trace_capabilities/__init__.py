"""``trace capabilities``: every capability check the kernel makes, and its verdict.

Hooks the ``capability/cap_capable`` tracepoint (Linux 6.14 and later), which fires in the task
that asked, after the kernel decided; no kprobe is needed. The tracepoint does not carry the
check's options, so whether the check is audited (``audit``) and whether it comes from a
set*id syscall (``insetid``) are read from who asked: the BPF program finds the first caller of
``cap_capable`` on the kernel stack and looks it up in the address ranges of the kernel functions
that pass those options (:data:`CALLERS`), which this module reads from ``/proc/kallsyms``
once per boot (:func:`cached_caller_ranges`).

The syscall a check happens in is the number recorded per thread at ``sys_enter``, named from
the architecture's table in user space.
"""

from __future__ import annotations

import platform
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
from igrun.core.tracer import BpfTracer
from igrun.plugins.trace_capabilities.callers import (
    CALLERS,
    MAX_CALLERS,
    cached_caller_ranges,
    caller_ranges,
)
from igrun.plugins.trace_capabilities.syscalls import TABLES

__all__ = ["CALLERS", "CAP_NAMES", "MAX_CALLERS", "TraceCapabilities", "cached_caller_ranges",
           "caller_ranges"]  # fmt: skip

CAP_NAMES: tuple[str, ...] = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
)
"""Capability names by number, as Inspektor Gadget prints them (``capName``: no ``CAP_``)."""


@cache
def _cap_tables() -> tuple[Any, Any]:
    """The capability names as arrays to index, and their lower-case spelling: ``capsNames``
    are lower case in Inspektor Gadget (its capability library's). Built with the first
    batch, not at import."""
    return (
        np.array(CAP_NAMES, dtype=object),
        np.array([n.lower() for n in CAP_NAMES], dtype=object),
    )


_HIDDEN_ID = Column(min_width=8, hidden=True)
_NS = Column(width=12, hidden=True, align="right")


@cache
def _syscall_table(machine: str) -> Any:
    """The syscall names of ``machine`` as a numpy array indexed by number (``""``: gap)."""
    return np.array(TABLES.get(machine, ()), dtype=object)


def _named(numbers: Any, table: Any, unknown: str, none_below_zero: bool = False) -> Any:
    """Names of ``numbers`` from ``table``; numbers without one become ``unknown % n``.

    Only the distinct unnamed numbers are formatted, so a batch costs a few array operations.
    """
    nr = numbers.astype(np.int64)
    out = np.full(len(nr), "", dtype=object)
    known = (nr >= 0) & (nr < len(table))
    out[known] = table[nr[known]]
    unnamed = out == ""
    if none_below_zero:
        unnamed &= nr >= 0
    if unnamed.any():
        values, inverse = np.unique(nr[unnamed], return_inverse=True)
        texts = np.array([unknown % v for v in values.tolist()], dtype=object)
        out[unnamed] = texts[inverse.reshape(-1)]
    return out


def _syscalls(batch: Batch) -> Any:
    """The syscall's name (``""`` when the check happened outside any syscall)."""
    table = _syscall_table(platform.machine())
    return _named(batch.member("syscall"), table, "syscall%d", none_below_zero=True)


def _cap_names(batch: Batch) -> Any:
    return _named(batch.member("cap"), _cap_tables()[0], "UNKNOWN (%d)")


def _verdicts(batch: Batch) -> Any:
    return np.where(batch.member("ret") == 0, "Allow", "Deny").astype(object)


def _caps_names(batch: Batch) -> Any:
    """The names of the effective capabilities, computed once per distinct set in the batch."""
    masks, inverse = np.unique(batch.member("cap_effective"), return_inverse=True)
    octets = masks.astype("<u8").view(np.uint8).reshape(-1, 8)
    lower = _cap_tables()[1]
    bits = np.unpackbits(octets, axis=1, bitorder="little")[:, : len(lower)].astype(bool)
    names = np.empty(len(masks), dtype=object)
    for i, row in enumerate(bits):
        names[i] = lower[row].tolist()
    return names[inverse.reshape(-1)]


class TraceCapabilities(BpfTracer):
    """Inspektor Gadget's ``trace capabilities``: same fields, params and default columns.

    ``tid`` is an extra (hidden) field: the check is made by one thread, and which one helps
    when a multi-threaded server is denied a capability.
    """

    name = "capabilities"
    category = Category.TRACE
    description = "Trace security capability checks"
    bpf_object = "capabilities.bpf.o"
    params = (
        ParamDesc(
            "audit-only",
            type_hint=TypeHint.BOOL,
            default="true",
            description="show only audit checks",
        ),
        ParamDesc(
            "unique",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show a capability only once per container",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace capabilities",
        "igrun trace capabilities --host -o json --timeout 10s",
        "igrun trace capabilities --audit-only=false -F verdict:Deny",
        "igrun trace capabilities --unique -o columns=+uid,+capsnames",
    )
    schema = Schema(
        [
            fields.timestamp("when the check was made"),
            *process_fields(
                "mntns pid tid comm", tid={"description": "thread id that made the check"}
            ),
            Field(
                "syscall",
                Kind.STR,
                "syscall the check was made in (empty outside syscalls)",
                decode=_syscalls,
                column=Column(width=18, max_width=28),
                omit_empty=True,
            ),
            *process_fields("uid gid", uid={"column": _HIDDEN_ID}, gid={"column": _HIDDEN_ID}),
            Field(
                "cap",
                Kind.INT,
                "capability number",
                column=Column(width=3, fixed=True, align="right"),
                omit_empty=True,
            ),
            Field(
                "capName",
                Kind.STR,
                "capability name (without CAP_)",
                decode=_cap_names,
                column=Column(width=18, fixed=True),
                omit_empty=True,
            ),
            Field(
                "audit",
                Kind.INT,
                "1 when the check is audited, 0 for a no-audit check",
                column=Column(min_width=5, align="right"),
                omit_empty=True,
            ),
            Field(
                "verdict",
                Kind.STR,
                "Allow or Deny",
                decode=_verdicts,
                column=Column(width=7, fixed=True),
                omit_empty=True,
            ),
            Field(
                "insetid",
                Kind.BOOL,
                "the check is made for a set*id syscall",
                column=Column(width=7, fixed=True, hidden=True),
            ),
            Field(
                "targetuserns",
                Kind.UINT,
                "user namespace the capability is needed in",
                member="target_userns",
                column=_NS,
                omit_empty=True,
            ),
            Field(
                "currentuserns",
                Kind.UINT,
                "user namespace of the task",
                member="current_userns",
                column=_NS,
                omit_empty=True,
            ),
            Field(
                "caps",
                Kind.UINT,
                "effective capabilities of the task (bit mask)",
                member="cap_effective",
                column=Column(hidden=True),
                omit_empty=True,
            ),
            Field(
                "capsnames",
                Kind.LIST,
                "effective capabilities of the task",
                json="capsNames",
                decode=_caps_names,
                column=Column(hidden=True),
                omit_empty=True,
            ),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """The params, and the kernel functions that tell a check's options (read at each
        start: kernel addresses change with every boot)."""
        callers = cached_caller_ranges()
        if not any(callers):
            ctx.logger.warning(
                "kernel symbol addresses are not readable: audit and insetid are not known, "
                "every check is shown as audited"
            )
        return {
            "audit_only": bool(ctx.gadget_params.get("audit-only")),
            "unique": bool(ctx.gadget_params.get("unique")),
            "callers": callers,
        }


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceCapabilities)
