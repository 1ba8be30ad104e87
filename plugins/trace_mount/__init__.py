"""``trace mount``: mount and umount calls, old API and new, with their result and latency.

Hooks the ``syscalls`` tracepoints of ``mount``, ``umount2`` (``umount`` in the kernel) and of
the new mount API's ``fsopen``, ``fsmount`` and ``move_mount``: a stable ABI, so it loads on
any kernel with BTF, kprobes or not. Fields, JSON names and columns are ``ig``'s, with ``op``
naming the call and ``call`` showing it as it was made.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    Schema,
    duration_field,
    fields,
    flag_fields,
    hookimpl,
    process_fields,
)
from igrun.core.tracer import BpfTracer

# The order of enum op in mount.h.
OPERATION_NAMES = ("mount", "umount", "fsopen", "fsmount", "move_mount", "unknown")
UNKNOWN_OP = len(OPERATION_NAMES) - 1


@cache
def operations() -> Any:
    """:data:`OPERATION_NAMES` as an array to index (built with the first batch, so that
    numpy is not imported before the programs are attached)."""
    return np.array(OPERATION_NAMES, dtype=object)


Names = Sequence[tuple[int, str]]

# <linux/mount.h>. Bit 9 has no name; MS_VERBOSE is the old name of MS_SILENT (bit 15).
MS_FLAGS: Names = (
    (1 << 0, "MS_RDONLY"),
    (1 << 1, "MS_NOSUID"),
    (1 << 2, "MS_NODEV"),
    (1 << 3, "MS_NOEXEC"),
    (1 << 4, "MS_SYNCHRONOUS"),
    (1 << 5, "MS_REMOUNT"),
    (1 << 6, "MS_MANDLOCK"),
    (1 << 7, "MS_DIRSYNC"),
    (1 << 8, "MS_NOSYMFOLLOW"),
    (1 << 10, "MS_NOATIME"),
    (1 << 11, "MS_NODIRATIME"),
    (1 << 12, "MS_BIND"),
    (1 << 13, "MS_MOVE"),
    (1 << 14, "MS_REC"),
    (1 << 15, "MS_SILENT"),
    (1 << 16, "MS_POSIXACL"),
    (1 << 17, "MS_UNBINDABLE"),
    (1 << 18, "MS_PRIVATE"),
    (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"),
    (1 << 21, "MS_RELATIME"),
    (1 << 22, "MS_KERNMOUNT"),
    (1 << 23, "MS_I_VERSION"),
    (1 << 24, "MS_STRICTATIME"),
    (1 << 25, "MS_LAZYTIME"),
    (1 << 26, "MS_SUBMOUNT"),
    (1 << 27, "MS_NOREMOTELOCK"),
    (1 << 28, "MS_NOSEC"),
    (1 << 29, "MS_BORN"),
    (1 << 30, "MS_ACTIVE"),
    (1 << 31, "MS_NOUSER"),
)
MS_MGC_VAL = 0xC0ED0000
"""The magic that old programs put in the high 16 bits of mount flags; the kernel drops it."""
MS_MGC_MSK = 0xFFFF0000
UMOUNT_FLAGS: Names = (
    (1, "MNT_FORCE"),
    (2, "MNT_DETACH"),
    (4, "MNT_EXPIRE"),
    (8, "UMOUNT_NOFOLLOW"),
)
FSOPEN_FLAGS: Names = ((1, "FSOPEN_CLOEXEC"),)
FSMOUNT_FLAGS: Names = ((1, "FSMOUNT_CLOEXEC"),)
MOUNT_ATTR_FLAGS: Names = (
    (0x1, "MOUNT_ATTR_RDONLY"),
    (0x2, "MOUNT_ATTR_NOSUID"),
    (0x4, "MOUNT_ATTR_NODEV"),
    (0x8, "MOUNT_ATTR_NOEXEC"),
    (0x10, "MOUNT_ATTR_NOATIME"),
    (0x20, "MOUNT_ATTR_STRICTATIME"),
    (0x80, "MOUNT_ATTR_NODIRATIME"),
    (0x100000, "MOUNT_ATTR_IDMAP"),
    (0x200000, "MOUNT_ATTR_NOSYMFOLLOW"),
)
MOVE_MOUNT_FLAGS: Names = (
    (0x1, "MOVE_MOUNT_F_SYMLINKS"),
    (0x2, "MOVE_MOUNT_F_AUTOMOUNTS"),
    (0x4, "MOVE_MOUNT_F_EMPTY_PATH"),
    (0x10, "MOVE_MOUNT_T_SYMLINKS"),
    (0x20, "MOVE_MOUNT_T_AUTOMOUNTS"),
    (0x40, "MOVE_MOUNT_T_EMPTY_PATH"),
    (0x100, "MOVE_MOUNT_SET_GROUP"),
    (0x200, "MOVE_MOUNT_BENEATH"),
)


def _names(value: int, table: Names) -> list[str]:
    """The names of the bits of ``value`` that ``table`` knows, then the rest in hex (so that
    no bit a caller passed goes unseen)."""
    out = [name for bit, name in table if value & bit]
    rest = value & ~sum(bit for bit, _ in table)
    if rest:
        out.append(hex(rest))
    return out


def decode_flags(op: str, flags: int) -> list[str]:
    """The names of the flags of one call, in the namespace of that call's flags.

    Inspektor Gadget decodes every call's flags as MS_* (so umount's MNT_DETACH reads
    MS_NOSUID there) and shifts the names of bits 9 to 14 by one; here each call has its own.
    """
    if op == "mount":
        out = []
        if flags & MS_MGC_MSK == MS_MGC_VAL:
            out.append("MS_MGC_VAL")
            flags &= ~MS_MGC_MSK
        return out + _names(flags, MS_FLAGS)
    if op == "umount":
        return _names(flags, UMOUNT_FLAGS)
    if op == "fsopen":
        return _names(flags, FSOPEN_FLAGS)
    if op == "fsmount":
        return _names(flags & 0xFFFFFFFF, FSMOUNT_FLAGS) + _names(flags >> 32, MOUNT_ATTR_FLAGS)
    if op == "move_mount":
        return _names(flags, MOVE_MOUNT_FLAGS)
    return [hex(flags)] if flags else []


def _operations(batch: Batch) -> Any:
    ops = batch.member("op").astype(np.intp)
    return operations()[np.where(ops < UNKNOWN_OP, ops, UNKNOWN_OP)]


def _flag_lists(batch: Batch) -> Any:
    """Flag names per event, decoded once per distinct (call, flags) pair of the batch: a
    burst of mounts mostly repeats a handful of them."""
    out = np.empty(len(batch), dtype=object)
    if not len(batch):
        return out
    keys = np.empty(len(batch), dtype=[("op", np.uint32), ("flags", np.uint64)])
    keys["op"] = batch.member("op")
    keys["flags"] = batch.member("flags")
    unique, inverse = np.unique(keys, return_inverse=True)
    decoded = np.empty(len(unique), dtype=object)
    for i, (op, fl) in enumerate(unique.tolist()):  # one by one: numpy would nest equal lists
        decoded[i] = decode_flags(OPERATION_NAMES[min(int(op), UNKNOWN_OP)], int(fl))
    out[:] = decoded[inverse.reshape(-1)]
    return out


def _strings(batch: Batch) -> tuple[Any, Any, Any]:
    """src, dst and data from the NUL-separated strings buffer, split in one pass."""
    src = np.empty(len(batch), dtype=object)
    dst = np.empty(len(batch), dtype=object)
    data = np.empty(len(batch), dtype=object)
    rows = []
    for buf in batch.member("strings").tolist():
        parts = buf.split(b"\0", 3)[:3]
        parts += [b""] * (3 - len(parts))  # numpy drops trailing NULs: empty last strings
        rows.append([p.decode("utf-8", "replace") for p in parts])
    if rows:
        src[:], dst[:], data[:] = zip(*rows, strict=True)
    return src, dst, data


def _string(index: int) -> Any:
    """A decoder of one of src, dst, data that hands the batch the other two as well, so the
    buffer is split once per batch, not once per field."""

    def decode(batch: Batch) -> Any:
        columns = _strings(batch)
        for name, values in zip(("src", "dst", "data"), columns, strict=True):
            if name in batch.schema:
                batch.set_column(name, values)
        return columns[index]

    return decode


def _calls(batch: Batch) -> Any:
    """Each call as it was made, ``mount("src", "dst", "fs", FLAGS, "data") = ret``."""
    out = np.empty(len(batch), dtype=object)
    rows = zip(
        batch["op"],
        batch["src"],
        batch["dst"],
        batch["fs"],
        batch["flags"],
        batch["data"],
        batch["ret"].tolist(),
        strict=True,
    )
    out[:] = [_call(*row) for row in rows]
    return out


def _call(op: str, src: str, dst: str, fs: str, flags: str, data: str, ret: int) -> str:
    flags = flags or "0"
    if op == "mount":
        return f'mount("{src}", "{dst}", "{fs}", {flags}, "{data}") = {ret}'
    if op == "umount":
        return f'umount("{dst}", {flags}) = {ret}'
    if op == "fsopen":
        return f'fsopen("{fs}", {flags}) = {ret}'
    if op == "fsmount":
        return f"fsmount({flags}) = {ret}"
    if op == "move_mount":
        return f'move_mount("{src}", "{dst}", {flags}) = {ret}'
    return f"{op}() = {ret}"


_RIGHT = Column(align="right")


class TraceMount(BpfTracer):
    name = "mount"
    category = Category.TRACE
    description = "Trace mount and umount system calls"
    bpf_object = "mount.bpf.o"
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace mount",
        "igrun trace mount --host -o json --timeout 10s",
        "igrun trace mount -F op:umount -o columns=+ret,+latency",
        "igrun trace mount -o columns=comm,pid,op,fs,src,dst,flags,data,ret",
    )
    schema = Schema(
        [
            fields.timestamp("when the call started"),
            *process_fields(
                "mntns comm pid tid",
                comm={"column": Column()},
                pid={"column": _RIGHT},
                tid={"column": _RIGHT},
            ),
            Field(
                "op",
                Kind.STR,
                "the call: mount, umount, fsopen, fsmount or move_mount",
                json="operation",
                decode=_operations,
                # ig: minWidth 5, maxWidth 7, for "mount" and "umount"; "move_mount" needs 10.
                column=Column(width=10, min_width=5, max_width=10, hidden=True),
                omit_empty=True,
            ),
            Field(
                "ret",
                Kind.INT,
                "return value (0, a file descriptor, or -errno)",
                column=Column(width=7, hidden=True, align="right", errno="returned"),
                omit_empty=True,
            ),
            duration_field(
                "latency",
                "time spent in the call",
                column=Column(min_width=3, hidden=True, align="right"),
            ),
            Field(
                "fs",
                Kind.STR,
                "filesystem type (fsmount, move_mount: of the mount the descriptor holds)",
                column=Column(width=8, min_width=3, max_width=8, hidden=True),
                omit_empty=True,
            ),
            Field(
                "src",
                Kind.STR,
                "source: the device of mount, fsmount and a move_mount by descriptor, "
                "else the path moved (up to 4095 bytes)",
                json="source",
                decode=_string(0),
                column=Column(width=16, hidden=True),
                omit_empty=True,
            ),
            Field(
                "dst",
                Kind.STR,
                "target path (up to 4095 bytes)",
                json="target",
                decode=_string(1),
                column=Column(width=16, hidden=True),
                omit_empty=True,
            ),
            Field(
                "data",
                Kind.STR,
                "mount's filesystem options (up to 511 bytes)",
                decode=_string(2),
                column=Column(width=16, hidden=True),
                omit_empty=True,
            ),
            *flag_fields(
                "flags",
                "flag names of the call (MS_*, MNT_*, FSOPEN_*, FSMOUNT_* and MOUNT_ATTR_*, "
                "MOVE_MOUNT_*), unknown bits in hex",
                decode=_flag_lists,
                separator=" | ",
                raw_name="flags_raw",
                raw_kind=Kind.UINT,
                raw_description="flags as passed (fsmount: attr_flags in the high 32 bits)",
            ),
            Field(
                "call",
                Kind.STR,
                "the call with its arguments and return value",
                json="-",
                decode=_calls,
                column=Column(width=80, order=1000),
            ),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """No params: ig's trace mount has none (filtering is by container, -F and --host)."""
        return {}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceMount)
