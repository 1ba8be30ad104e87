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

import contextlib
import hashlib
import os
import platform
import stat
from functools import cache
from pathlib import Path
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
from igrun.plugins.trace_capabilities.syscalls import TABLES

KALLSYMS = Path("/proc/kallsyms")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
CACHE_DIR = Path("/run/igrun")
"""Where the caller ranges of this boot are kept (a tmpfs: gone with the boot whose kernel
addresses they are)."""

# What a kernel function means when it is on the stack of a check (enum caller_kind in
# capabilities.h).
CALLER_CAP_CAPABLE = 1
CALLER_PASS = 2
CALLER_NOAUDIT = 3
CALLER_INSETID = 4
MAX_CALLERS = 32

CALLERS: dict[str, int] = {
    # The check itself: the frames above it on the stack are who asked.
    "cap_capable": CALLER_CAP_CAPABLE,
    # Pass their caller's options through.
    "security_capable": CALLER_PASS,
    "ns_capable_common": CALLER_PASS,
    # Ask with CAP_OPT_NOAUDIT.
    "ns_capable_noaudit": CALLER_NOAUDIT,
    "has_ns_capability_noaudit": CALLER_NOAUDIT,
    "has_capability_noaudit": CALLER_NOAUDIT,
    "kallsyms_show_value": CALLER_NOAUDIT,
    "cap_vm_enough_memory": CALLER_NOAUDIT,
    "security_vm_enough_memory_mm": CALLER_NOAUDIT,
    # Asks with CAP_OPT_INSETID (setuid, setgid ... checks).
    "ns_capable_setid": CALLER_INSETID,
}
"""Kernel functions that decide a check's options, by name (``.cold``/``.isra`` parts too)."""

_RANGE_LAYOUT = [("start", "=u8"), ("end", "=u8"), ("kind", "=u4"), ("pad", "=u4")]
_RANGE_SIZE = 24
"""One caller range in the ``callers`` global: start, end, kind, padding."""

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


def caller_ranges(kallsyms: Path = KALLSYMS) -> bytes:
    """The ``callers`` global: where each function of :data:`CALLERS` is in kernel text.

    A function ends where the next text symbol starts. Without readable addresses (not root, or
    ``kptr_restrict``) the table stays empty and every check is reported as audited.
    """
    starts: list[int] = []
    found: list[tuple[int, int]] = []
    with kallsyms.open() as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ("t", "T", "w", "W"):
                continue  # data, or a module's symbol (4th column)
            addr = int(parts[0], 16)
            if not addr:
                continue
            starts.append(addr)
            kind = CALLERS.get(parts[2].partition(".")[0])
            if kind:
                found.append((kind, addr))
    table = np.zeros(MAX_CALLERS, dtype=np.dtype(_RANGE_LAYOUT))
    if not found:
        return table.tobytes()
    addrs = np.unique(np.array(starts, dtype=np.uint64))
    found.sort()  # the check and the pass-through functions first, should the table be full
    found = found[:MAX_CALLERS]
    begin = np.array([a for _, a in found], dtype=np.uint64)
    after = np.searchsorted(addrs, begin, side="right")
    ends = np.where(after < len(addrs), addrs[np.minimum(after, len(addrs) - 1)], begin + 4096)
    n = len(found)
    table["start"][:n] = begin
    table["end"][:n] = ends
    table["kind"][:n] = [k for k, _ in found]
    return table.tobytes()


def _cache_file(cache_dir: Path) -> Path | None:
    """The cache of this boot's caller ranges, named after the boot and the table it holds,
    or ``None`` when the boot cannot be told (no boot id)."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    table = hashlib.sha256(repr((sorted(CALLERS.items()), MAX_CALLERS)).encode()).hexdigest()
    return cache_dir / f"capabilities-callers-{boot}-{table[:16]}.bin"


def _trusted(folder: Path) -> bool:
    """Only a folder of root's that no one else may write to holds ranges the BPF program
    trusts."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def cached_caller_ranges(cache_dir: Path = CACHE_DIR, kallsyms: Path = KALLSYMS) -> bytes:
    """:func:`caller_ranges`, read from ``/proc/kallsyms`` once per boot.

    Reading and parsing the 120,000 lines of kallsyms takes about half a second, which
    would stand between launch and attach at every start; kernel text addresses only
    change at boot, so the first run of a boot keeps the table for the ones after it.
    """
    size = MAX_CALLERS * _RANGE_SIZE
    cache = _cache_file(cache_dir) if os.geteuid() == 0 else None
    if cache is not None and _trusted(cache_dir):
        with contextlib.suppress(OSError):
            data = cache.read_bytes()
            if len(data) == size:
                return data
    table = caller_ranges(kallsyms)
    if cache is not None and any(table):
        with contextlib.suppress(OSError):
            cache_dir.mkdir(mode=0o700, exist_ok=True)
            if _trusted(cache_dir):
                partial = cache.with_suffix(f".{os.getpid()}")
                partial.write_bytes(table)
                partial.replace(cache)
    return table


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
