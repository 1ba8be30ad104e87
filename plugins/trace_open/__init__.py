"""``trace open``: every file opened on the host (or in the selected containers).

Hooks the ``syscalls`` tracepoints of ``open``, ``openat`` and ``openat2`` (enter keeps the
arguments per thread, exit adds the result); a stable ABI, so it loads on any kernel with BTF,
kprobes or not.

``--full-path`` is resolved in BPF, not from ``/proc/<pid>/cwd``: a short-lived process is gone
before user space could look, and another thread may ``chdir`` meanwhile. Without kprobes or
``bpf_d_path`` the program names the directory a relative path is relative to (the working
directory, or openat's dirfd) by walking its dentries up to the task's root, crossing mounts,
in a bounded ``bpf_loop`` (as many steps as components fit in PATH_MAX); ``..`` and symbolic
links stay as written. A path that is absolute already is its own full path.
"""

from __future__ import annotations

import struct
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
    ParamError,
    Schema,
    TypeHint,
    fields,
    flag_fields,
    hookimpl,
    mode_fields,
    process_fields,
)
from igrun.core.events.fields import format_mode as format_mode  # as before it moved to core
from igrun.core.tracer import BpfTracer

PARAM_FULL_PATH = "full-path"
PARAM_PREFIXES = "prefixes"
PARAM_FAILED = "failed"

PREFIX_MAX = 255
"""Bytes of a prefix the kernel compares (``open.h``): the most an LPM trie key holds."""
MAX_PREFIXES = 64
PREFIXES_MAP = "prefixes"

_ACCESS_MODES = ("O_RDONLY", "O_WRONLY", "O_RDWR")
# Bits 6 and up of the O_* flags (asm-generic/fcntl.h), in ig's order; ig stops at O_CLOEXEC,
# the last three are kernel bit names it leaves out (O_SYNC is __O_SYNC|O_DSYNC, O_TMPFILE is
# __O_TMPFILE|O_DIRECTORY).
_FLAG_NAMES = (
    "O_CREAT",
    "O_EXCL",
    "O_NOCTTY",
    "O_TRUNC",
    "O_APPEND",
    "O_NONBLOCK",
    "O_DSYNC",
    "O_FASYNC",
    "O_DIRECT",
    "O_LARGEFILE",
    "O_DIRECTORY",
    "O_NOFOLLOW",
    "O_NOATIME",
    "O_CLOEXEC",
    "__O_SYNC",
    "O_PATH",
    "__O_TMPFILE",
)
_FLAGS_SHIFT = 6

_TID = Column(min_width=7, align="right")
_FULL_PATH_HIDDEN = Column(min_width=24, width=32, hidden=True)
_FULL_PATH_COLUMN = Column(min_width=24, width=32)


def decode_flags(flags: int) -> list[str]:
    """The names of open flags, as ig's ``DecodeFlags``: the access mode, then each flag bit."""
    names = [_ACCESS_MODES[flags & 0b11]] if flags & 0b11 != 0b11 else []
    bits = (flags & 0xFFFFFFFF) >> _FLAGS_SHIFT
    names += [name for i, name in enumerate(_FLAG_NAMES) if bits & (1 << i)]
    return names


def _strings(batch: Batch, which: int) -> Any:
    """String ``which`` (0: the path as passed, 1: the full path) of the packed strings."""
    out = np.empty(len(batch), dtype=object)
    if not len(batch):
        return out
    # Only the bytes the event used: the rest of the 8 KiB is zeros, which tolist() would
    # scan through for every row (most of the gadget's time at 20k opens/s).
    full_len = batch.member("full_len")
    if which == 1 and not full_len.any():
        out[:] = ""
        return out
    used = batch.member("path_len").astype(np.int64) + full_len
    strings = batch.member("strings").astype(f"S{max(int(used.max()), 1)}")
    rows = [buf.split(b"\0", 2) for buf in strings.tolist()]
    # numpy drops trailing NULs: a missing full path is an empty one.
    out[:] = [p[which].decode("utf-8", "replace") if len(p) > which else "" for p in rows]
    return out


def _ret(batch: Batch) -> Any:
    """What the syscall returned, as ``ig``'s ``ret``: the descriptor, or -errno."""
    err = batch.member("err").astype(np.int64)
    return np.where(err != 0, -err, batch.member("fd").astype(np.int64))


def _path(batch: Batch) -> Any:
    return _strings(batch, 0)


def _full_path(batch: Batch) -> Any:
    return _strings(batch, 1)


def prefix_key(prefix: str) -> bytes:
    """An LPM trie key (``struct prefix_key``): the prefix length in bits, then its bytes."""
    data = prefix.encode()
    return struct.pack("<I", len(data) * 8) + data.ljust(PREFIX_MAX + 1, b"\0")


class TraceOpen(BpfTracer):
    name = "open"
    category = Category.TRACE
    description = "Trace open system calls"
    bpf_object = "open.bpf.o"
    ring_buffer_size: ClassVar[int] = 2 * 1024 * 1024
    """Eight times the default: a busy host opens tens of thousands of files a second, and
    at 50,000 opens/s 256 KiB (about 2,300 events) is 50 ms, less than a reader on a host
    whose CPUs are all busy may wait for one."""
    params = (
        ParamDesc(
            PARAM_FULL_PATH,
            type_hint=TypeHint.BOOL,
            default="false",
            description="show the full path of the opened file (a relative path joined to its "
            "directory)",
        ),
        ParamDesc(
            PARAM_PREFIXES,
            type_hint=TypeHint.STRING_LIST,
            description=f"show only files whose path starts with one of these prefixes "
            f"(comma list, up to {MAX_PREFIXES}; the full path with --full-path)",
            check=lambda prefixes: TraceOpen._checked_prefixes(prefixes),
        ),
        ParamDesc(
            PARAM_FAILED,
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only failed opens",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace open",
        "igrun trace open --full-path -o json --timeout 10s",
        "igrun trace open --prefixes /etc,/var/run --full-path",
        "igrun trace open --failed -F comm:bash",
        "igrun trace open -o columns=+flags,+mode,+uid",
    )
    schema = Schema(
        [
            fields.timestamp("when the open returned"),
            *process_fields(
                "mntns pid tid uid gid comm",
                tid={"description": "thread id that called open", "column": _TID},
                uid={
                    "column": Column(min_width=10, hidden=True, align="right"),
                    "omit_empty": True,
                },
                gid={"column": Column(hidden=True, align="right")},
            ),
            Field(
                "fd",
                Kind.UINT,
                "the new file descriptor (0 when the open failed)",
                column=Column(min_width=2, width=3, align="right"),
                omit_empty=True,
            ),
            Field(
                "err",
                Kind.INT,
                "errno of a failed open (positive), else 0",
                column=Column(width=7, align="right", errno="positive"),
                omit_empty=True,
            ),
            Field(
                "ret",
                Kind.INT,
                "what open returned: the new file descriptor, or -errno",
                decode=_ret,
                column=Column(width=3, fixed=True, hidden=True, align="right"),
                omit_empty=True,
            ),
            *flag_fields("flags", "flag names: the access mode, then O_* flags", decode_flags),
            *mode_fields("permissions of a created file (none without O_CREAT or O_TMPFILE)"),
            Field(
                "path",
                Kind.STR,
                "path as passed to open (up to 4095 bytes)",
                decode=_path,
                column=Column(min_width=24, width=32),
                omit_empty=True,
            ),
            Field(
                "fullPath",
                Kind.STR,
                "with --full-path: the path joined to the directory it is relative to (a "
                "column by default then)",
                decode=_full_path,
                column=_FULL_PATH_HIDDEN,
                omit_empty=True,
            ),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        prefixes = self._prefixes(ctx)
        return {
            "targ_failed": bool(ctx.gadget_params.get(PARAM_FAILED)),
            "get_full_path": bool(ctx.gadget_params.get(PARAM_FULL_PATH)),
            "prefixes_nr": len(prefixes),
        }

    @staticmethod
    def _prefixes(ctx: GadgetContext) -> list[str]:
        """The --prefixes, checked against what the kernel side can hold."""
        return TraceOpen._checked_prefixes(ctx.gadget_params.get(PARAM_PREFIXES) or [])

    @staticmethod
    def _checked_prefixes(given: list[str]) -> list[str]:
        """``given`` without repeats, checked (also in the check phase, as the param's check:
        before anything loads)."""
        prefixes: list[str] = list(dict.fromkeys(given))
        if len(prefixes) > MAX_PREFIXES:
            raise ParamError(
                f"--{PARAM_PREFIXES}: {MAX_PREFIXES} prefixes at most, got {len(prefixes)}"
            )
        for prefix in prefixes:
            if len(prefix.encode()) > PREFIX_MAX:
                raise ParamError(
                    f"--{PARAM_PREFIXES}: {prefix[:20]!r}… is longer than {PREFIX_MAX} bytes"
                )
        return prefixes

    def init(self, ctx: GadgetContext) -> None:
        super().init(ctx)
        assert self.obj is not None
        # The trie is filled once the programs are attached: until then prefixes_nr > 0 with
        # an empty trie drops every event, so none slips through unfiltered.
        trie = self.obj.map(PREFIXES_MAP)
        try:
            for prefix in self._prefixes(ctx):
                trie.update(prefix_key(prefix), b"\1")
        except BaseException:
            self.close()
            raise
        if ctx.gadget_params.get(PARAM_FULL_PATH) and ctx.schema is not None:
            # --full-path decides whether the column is shown by default, as ig's column tag.
            ctx.schema = ctx.schema.with_column("fullPath", _FULL_PATH_COLUMN)


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceOpen)
