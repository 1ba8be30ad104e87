"""``trace fsslower``: file reads, writes, opens and fsyncs slower than a threshold.

Inspektor Gadget times the file system's own functions with kprobes; this gadget needs none.
It times the syscalls instead (``read``, ``readv``, ``pread64``, ``preadv``, ``preadv2``,
their ``write`` counterparts, ``openat``, ``openat2``, ``fsync`` and ``fdatasync``) through
their ``syscalls`` tracepoints, and keeps only the files whose inode is on the chosen file
system type (``--filesystem``), looked up in the kernel from the fd. The latency is therefore
the whole syscall's, and an open counts the path lookup too.
"""

from __future__ import annotations

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
    duration_field,
    errno_field,
    fields,
    hookimpl,
    process_fields,
)
from igrun.core.tracer import BpfTracer
from igrun.plugins.trace_fsslower.constants import (
    FS_NAME_LEN,
    MIN_LATENCY_DEFAULT_MS,
    fs_name_constant,
    object_constants,
)

__all__ = ["FS_NAME_LEN", "MIN_LATENCY_DEFAULT_MS", "TraceFsslower", "fs_name_constant"]

# Inspektor Gadget's op letters, indexed by the BPF side's enum fs_file_op.
_OPS = ("R", "W", "O", "F")


def _ops(batch: Batch) -> Any:
    """The op letter of every event at once (an unknown value shows as ``?``)."""
    codes = batch.member("op").astype(np.intp)
    out = np.full(len(codes), "?", dtype=object)
    known = codes < len(_OPS)
    out[known] = np.array(_OPS, dtype=object)[codes[known]]
    return out


class TraceFsslower(BpfTracer):
    name = "fsslower"
    category = Category.TRACE
    description = "Trace open, read, write and fsync operations slower than a threshold"
    bpf_object = "fsslower.bpf.o"
    ring_buffer_size: ClassVar[int] = 1024 * 1024
    """Four times the default: with a low --min, every file read and write of the host is an
    event, and a busy host fills 256 KiB between two polls."""
    params = (
        ParamDesc(
            "min",
            alias="m",
            type_hint=TypeHint.UINT,
            default=str(MIN_LATENCY_DEFAULT_MS),
            description="show only operations that took at least this many milliseconds",
        ),
        ParamDesc(
            "filesystem",
            alias="f",
            default="ext4",
            description="file system to trace: a type of /proc/filesystems (btrfs, ext4, nfs, "
            "xfs, tmpfs …); overlay files count as the file system below",
            check=fs_name_constant,
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace fsslower",
        "igrun trace fsslower --filesystem xfs --min 50",
        "igrun trace fsslower -f tmpfs --min 0 -o json --timeout 10s",
        "igrun trace fsslower -F T:F -o columns=+timestamp,+error",
    )
    schema = Schema(
        [
            fields.timestamp("when the operation ended"),
            *process_fields(
                "mntns pid tid comm", tid={"description": "thread id that made the call"}
            ),
            Field(
                "T",
                Kind.STR,
                "operation: R read, W write, O open, F fsync or fdatasync",
                decode=_ops,
                json="op",
                column=Column(width=1, fixed=True),
                omit_empty=True,
            ),
            Field(
                "bytes",
                Kind.UINT,
                "bytes read or written; 0 for open or a failed call; fsync: the range "
                "synced, as ig: 2^63-1 (all)",
                member="size",
                column=Column(width=10, align="right"),
                omit_empty=True,
            ),
            Field(
                "offset",
                Kind.INT,
                "where the read or write started (file position, or pread/pwrite offset)",
                column=Column(width=10, align="right"),
                omit_empty=True,
            ),
            duration_field("lat", "latency of the syscall", "us", "delta_us", "latency"),
            Field(
                "file",
                Kind.STR,
                "file name (last part of the path, up to 31 bytes)",
                column=Column(width=24, max_width=32, cut_by="truncated"),
                omit_empty=True,
            ),
            Field(
                "truncated",
                Kind.BOOL,
                "the file name was cut to 31 bytes (columns end it with ' ...')",
                member="file_truncated",
                column=Column(hidden=True),
            ),
            errno_field("errno name of a failed read, write or fsync"),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """The params as the object's globals: the latency in ns (capped, so a huge --min
        means "nothing" rather than an overflow) and the file system names, compared in the
        kernel so that only matching files ever take a map entry."""
        p = ctx.gadget_params
        return object_constants(str(p.get("filesystem")), int(p.get("min")))


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceFsslower)
