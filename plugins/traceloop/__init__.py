"""``traceloop``: a flight recorder of each container's syscalls, read after the fact.

Every syscall of a selected container is written, in the kernel, into that container's own
ring of ``--max-syscalls`` slots (``tp_btf/sys_enter`` and ``sys_exit``): who made it
(pid, tid, comm, CPU), when, its six arguments, up to three of the strings and buffers they
point to (paths, written and read bytes), and what it returned. Nothing crosses to user space
while the run lasts; when it ends (Ctrl-C, SIGTERM, ``-t``) each container's ring is read and
its syscalls are printed in the order they were made. SIGUSR1 prints every ring as it is at
that moment, and the recording goes on. A container that stops during the run
is printed as it stops (while it can still be named), and its ring freed.

Why a ring of slots (an array of ``--max-syscalls`` entries and a head counter per
container, in a hash of maps keyed by mount-ns id) rather than Inspektor Gadget's overwritable
perf buffers (``write_backward``): a slot holds one whole syscall, entry and exit together, so
the ring keeps exactly the last N syscalls (a perf buffer keeps the last so many bytes per
CPU, with enter, exit and each string as separate records to pair up again); it is read with
one batched map lookup; and the size is the same whatever the number of CPUs. The head is
advanced with an atomic add, so threads on several CPUs never share a slot. ``ig`` keeps
64 pages per CPU, which hold 1170 syscalls without strings (224 bytes each with the perf
headers): that is the default here, per container.

The argument names and types come from the running kernel's ``sys_enter_*`` tracepoint
formats (:mod:`igrun.core.events.syscall_formats`), and from them what to copy: a ``const
char *`` is a string read at entry (or a buffer of the length the next argument gives, as
``write``'s), a ``char *`` followed by a length is a buffer the call fills, read at exit for
as many bytes as it returned (``read``, ``getcwd``).
"""

from __future__ import annotations

import errno
import importlib.resources
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Container,
    Field,
    Gadget,
    GadgetContext,
    Kind,
    ParamDesc,
    Schema,
    TypeHint,
    fields,
    hookimpl,
)
from igrun.core.bpf.objects import BPF_F_INNER_MAP, BpfObject, Map, MapType
from igrun.core.events.syscall_formats import Arg, syscall_formats, syscall_numbers
from igrun.core.events.syscalls import syscall_name
from igrun.core.tracer import open_object, pin_maps

PARAM_SYSCALL_FILTERS = "syscall-filters"
PARAM_MAX_SYSCALLS = "max-syscalls"
DEFAULT_MAX_SYSCALLS = 64 * 4096 // 224
"""What ``ig``'s ring (64 pages per CPU) holds of syscalls without strings (224 bytes
each: the enter and the exit record with their perf headers)."""
MAX_SYSCALLS_LIMIT = 1 << 20

SYSCALL_ARGS = 6
CONTENTS = 3
CONTENT_LEN = 128
COPY_NONE, COPY_STR, COPY_BUF, COPY_BUF_RET = 0, 1, 2, 3
FAILED = 0xFFFF
RECORD = "syscall_record"
NO_EXIT = frozenset({"exit", "exit_group", "rt_sigreturn"})
"""Syscalls that do not return (``ig`` shows ``X`` as their return value)."""

_LENGTH_NAMES = ("count", "len", "size", "bufsiz", "nbytes")
_WIDE = ("long", "size_t", "off_t", "u64", "s64", "aio_context_t")


# ---- what to copy, from the tracepoint formats ---------------------------------------------


def _is_length(arg: Arg) -> bool:
    return not arg.pointer and arg.name.endswith(_LENGTH_NAMES)


def copy_plan(name: str, args: list[Arg]) -> tuple[list[int], list[int]]:
    """For each argument of syscall ``name``: what the kernel side copies of it (``COPY_*``)
    and, for a buffer, which argument holds its length."""
    kinds, lens = [COPY_NONE] * SYSCALL_ARGS, [0xFF] * SYSCALL_ARGS
    for i, arg in enumerate(args[:SYSCALL_ARGS]):
        t = " ".join(arg.type.split())
        if t.count("*") != 1 or not t.endswith("char *") or t.startswith("unsigned"):
            continue
        after = args[i + 1] if i + 1 < len(args) else None
        sized = after is not None and _is_length(after)
        if t.startswith("const"):
            kinds[i] = COPY_BUF if sized else COPY_STR
        elif sized and not name.startswith("set"):  # read(fd, char *buf, size_t count)
            kinds[i] = COPY_BUF_RET
        elif sized:  # sethostname(char *name, int len)
            kinds[i] = COPY_BUF
        elif not arg.name.endswith(("addr", "optval")):  # mount(char *dev_name, ...)
            kinds[i] = COPY_STR
        if kinds[i] == COPY_BUF or kinds[i] == COPY_BUF_RET:
            lens[i] = i + 1
    return kinds, lens


def syscall_defs() -> dict[int, bytes]:
    """``struct syscall_def`` of each syscall number that has something to copy."""
    numbers = syscall_numbers()
    out = {}
    for name, args in syscall_formats().items():
        nr = numbers.get(name)
        if nr is None:
            continue
        kinds, lens = copy_plan(name, args)
        if any(kinds):
            out[nr] = bytes(kinds) + bytes(lens)
    return out


# ---- how values are shown ------------------------------------------------------------------


def go_quote(data: bytes) -> str:
    """``data`` quoted as Go's ``strconv.Quote`` writes it (as ``ig`` shows contents)."""
    text = data.decode("utf-8", "replace")
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _names(value: int, table: list[tuple[int, str]], zero: str = "0") -> str:
    names = [name for bit, name in table if bit and value & bit == bit]
    rest = value & ~sum({bit for bit, _ in table if value & bit == bit})
    if rest:
        names.append(hex(rest))
    return "|".join(names) or zero


def _consts(prefix: str, module: Any) -> list[tuple[int, str]]:
    return sorted(
        ((int(getattr(module, n)), n) for n in dir(module) if n.startswith(prefix)),
        key=lambda kv: -bin(kv[0]).count("1"),
    )


def _open_flags(value: int) -> str:
    from igrun.plugins.trace_open import decode_flags

    return "|".join(decode_flags(value)) or "0"


def _prot(value: int) -> str:
    import mmap

    return _names(value, _consts("PROT_", mmap), "PROT_NONE")


def _map_flags(value: int) -> str:
    import mmap

    table = [
        (v, n) for v, n in _consts("MAP_", mmap) if n not in ("MAP_DENYWRITE", "MAP_EXECUTABLE")
    ]
    return _names(value, table)


def _signal(value: int) -> str:
    try:
        return signal.Signals(value).name
    except ValueError:
        return str(value)


_WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
AT_FDCWD = -100


def named_value(syscall: str, arg: Arg, value: int) -> str | None:
    """An argument's value by name where one is known (open flags, mmap's prot and flags, a
    signal, ``AT_FDCWD``, a mode in octal); None to show the number."""
    if arg.name in ("dfd", "olddfd", "newdfd", "dirfd") and value == AT_FDCWD:
        return "AT_FDCWD"
    if arg.name == "flags" and syscall in ("open", "openat", "creat"):
        return _open_flags(value)
    if arg.name == "mode" and arg.type.endswith("umode_t"):
        return f"0{value & 0o7777:o}"
    if syscall in ("mmap", "mprotect") and arg.name == "prot":
        return _prot(value)
    if syscall == "mmap" and arg.name == "flags":
        return _map_flags(value)
    if arg.name in ("sig", "signum"):
        return _signal(value)
    if arg.name == "whence":
        return _WHENCE.get(value)
    return None


def _integer(arg: Arg, raw: int) -> int:
    """The register value as the C type the format declares."""
    if any(w in arg.type for w in _WIDE):
        return raw - (1 << 64) if arg.signed and raw >= 1 << 63 else raw
    raw &= 0xFFFFFFFF
    return raw - (1 << 32) if arg.signed and raw >= 1 << 31 else raw


def strerror(code: int) -> str:
    """Go's text for an errno (``syscall.Errno.Error()``): the C library's, lower case."""
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


def ret_text(ret: int, exited: bool, syscall: str) -> str:
    """The return value as ``ig`` writes it: ``3``, ``-1 (no such file or directory)``, ``X``
    for a call that does not return, ``unfinished`` for one still running."""
    if not exited:
        return "X" if syscall in NO_EXIT else "unfinished"
    if -4095 <= ret <= -1:
        return f"-1 ({strerror(-ret)})"
    return str(ret)


_BY_TEXT = {f"-1 ({strerror(code)})": f"-1 ({name})" for code, name in errno.errorcode.items()}


def ret_column(value: Any) -> str:
    """The columns output's return value: the error by name (``-1 (ENOENT)``)."""
    return _BY_TEXT.get(str(value), str(value))


def params_column(value: Any) -> str:
    """``name=value, ...`` as ``ig``'s params column, contents instead of their pointers."""
    return ", ".join(f"{p['name']}={p.get('content', p['value'])}" for p in value or ())


def _as_bytes(records: Any) -> Any:
    """``records`` with their byte arrays as arrays of bytes: BTF's ``__u8[3]`` and
    ``char[384]`` are numpy strings, which lose their trailing zeros."""
    dtype = records.dtype
    formats = [
        ("u1", (int(dtype.fields[n][0].itemsize),))
        if dtype.fields[n][0].kind == "S"
        else dtype.fields[n][0]
        for n in dtype.names
    ]
    layout = np.dtype(
        {
            "names": list(dtype.names),
            "formats": formats,
            "offsets": [dtype.fields[n][1] for n in dtype.names],
            "itemsize": dtype.itemsize,
        }
    )
    return np.ascontiguousarray(records).view(layout)


@dataclass
class _Decoded:
    syscall: Any
    params: Any
    ret: Any
    result: Any


def decode_records(records: Any) -> _Decoded:
    """The syscall names, parameters and return texts of ``records`` (one container's ring,
    in order): once per row, for what one read gives, at the end of a run."""
    formats = syscall_formats()
    records = _as_bytes(records)
    n = len(records)
    names = np.empty(n, dtype=object)
    params = np.empty(n, dtype=object)
    rets = np.empty(n, dtype=object)
    results = np.zeros(n, dtype=np.int64)
    content = records["content"]
    for row in range(n):
        rec = records[row]
        nr = int(rec["nr"])
        name = syscall_name(nr)
        if name == str(nr):
            name = f"syscall_{nr:x}"
        names[row] = name
        args = formats.get(name, [])
        raw = [int(a) for a in rec["args"]]
        contents = {}
        for c in range(CONTENTS):
            i = int(rec["content_arg"][c])
            if i >= SYSCALL_ARGS:
                continue
            length = int(rec["content_len"][c])
            if length == FAILED:
                contents[i] = "(Failed to dereference pointer)"
                continue
            start = c * CONTENT_LEN
            data = content[row][start : start + min(length, CONTENT_LEN)].tobytes()
            text = go_quote(data.rstrip(b"\0") if name == "getcwd" else data)
            contents[i] = text + ("..." if rec["content_cut"][c] else "")
        out = []
        for i, arg in enumerate(args[:SYSCALL_ARGS]):
            if arg.pointer:
                value = f"0x{raw[i]:x}"
            else:
                number = _integer(arg, raw[i])
                value = named_value(name, arg, number) or str(number)
            p = {"name": arg.name, "value": value}
            if i in contents:
                p["content"] = contents[i]
            out.append(p)
        params[row] = out
        exited = bool(rec["exited"])
        ret = int(rec["ret"])
        rets[row] = ret_text(ret, exited, name)
        results[row] = ret if exited else 0
    return _Decoded(names, params, rets, results)


def _decoded(attr: str) -> Any:
    def decode(batch: Batch) -> Any:
        cached = getattr(batch, "_traceloop", None)
        if cached is None:
            cached = decode_records(batch.raw)
            object.__setattr__(batch, "_traceloop", cached)
        return getattr(cached, attr)

    return decode


# ---- the gadget ----------------------------------------------------------------------------


def _checked_filters(names: list[str]) -> list[str]:
    known = syscall_numbers()
    for name in names:
        if name and name not in known:
            raise ValueError(f"syscall {name!r} does not exist")
    return [n for n in names if n]


def _checked_size(n: int) -> None:
    if not 1 <= n <= MAX_SYSCALLS_LIMIT:
        raise ValueError(f"from 1 to {MAX_SYSCALLS_LIMIT}, got {n}")


@dataclass
class _Ring:
    container: Container
    map: Map


class Traceloop(Gadget):
    name = "traceloop"
    category = Category.TRACELOOP
    description = "Get strace-like logs of a container from the past"
    bpf_object = "traceloop.bpf.o"
    params = (
        ParamDesc(
            PARAM_SYSCALL_FILTERS,
            type_hint=TypeHint.STRING_LIST,
            description="record only these syscalls, by name (join several with ',')",
            check=_checked_filters,
        ),
        ParamDesc(
            PARAM_MAX_SYSCALLS,
            type_hint=TypeHint.UINT,
            default=str(DEFAULT_MAX_SYSCALLS),
            description="how many syscalls each container's ring keeps (the last ones)",
            check=_checked_size,
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun traceloop -c web",
        "igrun traceloop -c web --syscall-filters openat,write -o json",
        "igrun traceloop -c web --max-syscalls 100000 -t 60s",
    )
    schema = Schema(
        [
            fields.timestamp("when the syscall was entered"),
            fields.mntns(),
            Field(
                "cpu",
                Kind.UINT,
                "CPU it ran on",
                column=Column(width=3, fixed=True, align="right"),
                omit_empty=True,
            ),
            Field(
                "pid",
                Kind.UINT,
                "process id",
                column=Column(min_width=7, align="right"),
                omit_empty=True,
            ),
            Field(
                "tid",
                Kind.UINT,
                "thread id",
                column=Column(min_width=7, align="right", hidden=True),
                omit_empty=True,
            ),
            Field(
                "comm", Kind.STR, "command of the thread", column=Column(width=16), omit_empty=True
            ),
            Field(
                "syscall",
                Kind.STR,
                "the syscall's name",
                decode=_decoded("syscall"),
                column=Column(width=16),
                omit_empty=True,
            ),
            Field(
                "params",
                Kind.LIST,
                "each argument (name, value, and the string or bytes it points to)",
                json="parameters",
                decode=_decoded("params"),
                column=Column(width=40, text=params_column),
                omit_empty=True,
            ),
            Field(
                "ret",
                Kind.STR,
                "what it returned, as ig writes it (-1 and the error; X: it does not return)",
                decode=_decoded("ret"),
                column=Column(width=3, text=ret_column),
                omit_empty=True,
            ),
            Field(
                "result",
                Kind.INT,
                "the return value as a number (-errno on failure)",
                decode=_decoded("result"),
                column=Column(hidden=True, align="right", errno="returned"),
            ),
            Field(
                "seq",
                Kind.UINT,
                "its place among the container's syscalls (1: first)",
                column=Column(hidden=True, align="right"),
            ),
        ],
        struct=RECORD,
    )

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.ctx: GadgetContext | None = None
        self.size = DEFAULT_MAX_SYSCALLS
        self.lock = threading.Lock()
        self.rings: dict[str, _Ring] = {}
        """By container id: each attached container's ring."""
        self.owners: dict[int, str] = {}
        """Mount-ns id -> the container whose ring is in ``rings`` for it."""
        self.stopped: list[_Ring] = []
        """Rings of containers that stopped, to print and free."""
        self.done = False
        self.asked = threading.Event()
        """Set by SIGUSR1: print every ring as it is now, and go on recording."""
        self._previous_usr1: Any = None

    def init(self, ctx: GadgetContext) -> None:
        self.ctx = ctx
        if threading.current_thread() is threading.main_thread():  # the command line
            self._previous_usr1 = signal.signal(signal.SIGUSR1, lambda *_: self.asked.set())
        self.size = int(ctx.gadget_params.get(PARAM_MAX_SYSCALLS) or DEFAULT_MAX_SYSCALLS)
        filters = _checked_filters(ctx.gadget_params.get(PARAM_SYSCALL_FILTERS) or [])
        obj = self.obj = open_object(importlib.resources.files(__name__) / self.bpf_object)
        try:
            obj.set_global("ring_size", self.size)
            obj.set_global("filter_syscall", bool(filters))
            obj.set_global("ignore_tgid", os.getpid())
            ctx.schema = self.schema.bind(obj.struct_dtype(RECORD, nested=True))
            obj.load()
            pin_maps(ctx, obj, self.id())
            defs = obj.map("syscalls")
            for nr, value in syscall_defs().items():
                if nr < defs.max_entries:
                    defs.update(struct.pack("<I", nr), value)
            wanted = obj.map("syscall_filters")
            numbers = syscall_numbers()
            for name in filters:
                wanted.update(struct.pack("<I", numbers[name]), b"\1")
            obj.attach_all()
        except BaseException:
            self.close()
            raise

    # -- per container

    def attach_container(self, container: Container) -> None:
        assert self.obj is not None and self.ctx is not None
        record = self.ctx.schema.dtype.itemsize if self.ctx.schema and self.ctx.schema.dtype else 0
        ring = Map.create(
            MapType.ARRAY, "traceloop_ring", 4, record, self.size + 1, BPF_F_INNER_MAP
        )
        try:
            self.obj.map("rings").update(
                struct.pack("<Q", container.mntns), struct.pack("<I", ring.fd)
            )
        except BaseException:
            ring.close()
            raise
        with self.lock:
            self.rings[container.id] = _Ring(container, ring)
            self.owners[container.mntns] = container.id

    def detach_container(self, container: Container) -> None:
        with self.lock:
            entry = self.rings.pop(container.id, None)
            if entry is None:
                return
            if self.owners.get(container.mntns) == container.id:
                del self.owners[container.mntns]
                if self.obj is not None:
                    self.obj.map("rings").delete(struct.pack("<Q", container.mntns))
            if self.done:
                entry.map.close()
            else:
                self.stopped.append(entry)  # printed by run(), then freed

    # -- reading

    def read_ring(self, ring: Map) -> Any:
        """The syscalls in ``ring``, oldest first (the head slot left out)."""
        assert self.ctx is not None and self.ctx.schema is not None
        dtype = self.ctx.schema.dtype
        assert dtype is not None
        keys, values, _ = ring.drain(delete=False)
        slots = keys.reshape(-1).view("<u4")
        records = values.reshape(-1).view(dtype)
        return np.sort(records[(slots != self.size) & (records["seq"] != 0)], order="seq")

    def _emit(self, ctx: GadgetContext, entry: _Ring) -> None:
        assert ctx.schema is not None
        records = self.read_ring(entry.map)
        made = int(records["seq"][-1]) if len(records) else 0
        ctx.logger.debug(
            "ring_read", container=entry.container.name, syscalls=made, kept=len(records)
        )
        if len(records):
            ctx.emit(Batch(ctx.schema, records))

    def run(self, ctx: GadgetContext) -> None:
        assert self.obj is not None
        while not ctx.done:
            self._print_stopped(ctx)
            if self.asked.is_set():
                self.asked.clear()
                with self.lock:
                    live = list(self.rings.values())
                for entry in live:
                    self._emit(ctx, entry)
            ctx.heartbeat()
            time.sleep(ctx.remaining(0.1))
        for link in list(self.obj.links):  # what is in the rings now is what is printed
            link.destroy()
        self.obj.links.clear()
        self._print_stopped(ctx)
        with self.lock:
            self.done = True
            live = list(self.rings.values())
        for entry in live:
            self._emit(ctx, entry)

    def _print_stopped(self, ctx: GadgetContext) -> None:
        with self.lock:
            stopped, self.stopped = self.stopped, []
        for entry in stopped:
            try:
                self._emit(ctx, entry)
            finally:
                entry.map.close()

    def close(self) -> None:
        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        with self.lock:
            self.done = True
            entries = [*self.rings.values(), *self.stopped]
            self.rings.clear()
            self.stopped = []
            self.owners.clear()
        for entry in entries:
            entry.map.close()
        if self.obj is not None:
            self.obj.close()
            self.obj = None


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(Traceloop)
