"""A small typed layer over libbpf (the cffi module ``igrun.core._libbpf``).

This is the only module that imports the C extension. It opens, configures and loads BPF
objects, attaches their programs, works with maps, and drains perf and ring buffers in batches.
Every failing call raises :class:`~igrun.core.errors.BpfError` with the errno, and a verifier
rejection carries the log lines that explain it.
"""

from __future__ import annotations

import enum
import errno
import functools
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core import _libbpf  # type: ignore[attr-defined]
from igrun.core.errors import BpfError

ffi: Any = _libbpf.ffi
lib: Any = _libbpf.lib

VERIFIER_LOG_SIZE = 4 << 20
RELEVANT_LOG_LINES = 20
SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27


def _check_version() -> None:
    from igrun.core import dists

    built = ffi.string(lib.igr_version()).decode()
    installed = dists.version()  # its dist-info folder: no importlib.metadata on the way
    if installed is None:  # pragma: no cover - running from an unusual layout
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("igrun")
        except PackageNotFoundError:
            return
    if built != installed:
        raise ImportError(
            f"igrun.core._libbpf was built for igrun {built} but igrun {installed} is installed: "
            "rebuild the extension (pip install .)"
        )


_check_version()


class MapType(enum.IntEnum):
    """The map types igrun treats specially (values of ``enum bpf_map_type``)."""

    HASH = 1
    ARRAY = 2
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    PERCPU_CGROUP_STORAGE = 21
    RINGBUF = 27


_PERCPU = {
    MapType.PERCPU_HASH,
    MapType.PERCPU_ARRAY,
    MapType.LRU_PERCPU_HASH,
    MapType.PERCPU_CGROUP_STORAGE,
}


def _raise(what: str, err: int, log: list[str] | None = None) -> None:
    raise BpfError(what, abs(err), log)


class SizeError(BpfError, ValueError):
    """What Python was about to hand to C does not fit what C (or the kernel) will touch: a
    key or value of the wrong length, a name too long or with a NUL in it, a number out of
    the C type's range. Raised before the call, so nothing is read or written out of bounds.
    A :class:`BpfError` (one line for a user) and a :class:`ValueError` (a caller's mistake)."""


U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
BPF_OBJ_NAME_LEN = 16
"""The kernel's map and program name buffer, NUL included."""
BPF_F_INNER_MAP = 1 << 12
"""An array map put into a map of maps whatever its size (the template's flag too); its
lookups are then a helper call instead of inlined code."""


def _exact(what: str, data: bytes, size: int) -> bytes:
    """``data`` when it is exactly ``size`` bytes long (C reads or writes that many)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SizeError(f"{what}: expected bytes, got {type(data).__name__}")
    length = memoryview(data).nbytes
    if length != size:
        raise SizeError(f"{what}: {length} bytes given, the map takes {size}")
    return bytes(data)


def _c_name(what: str, name: str | bytes) -> bytes:
    """``name`` for a C string argument: a NUL inside would silently cut it short."""
    raw = os.fsencode(name) if isinstance(name, str) else bytes(name)
    if b"\0" in raw:
        raise SizeError(f"{what}: {name!r} has a NUL byte in it")
    return raw


def _in_range(what: str, value: int, low: int, high: int) -> int:
    """``value`` when the C parameter's type can hold it (cffi would raise OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SizeError(f"{what}: {value!r} is out of range ({low} to {high})")
    return value


# ---- libbpf's own messages go to structlog -----------------------------------------------

_LEVELS = {0: "warning", 1: "info", 2: "debug"}
_quiet = threading.local()


@ffi.def_extern()  # type: ignore[untyped-decorator]
def igr_py_log(level: int, msg: Any) -> None:
    from igrun.core.log import get_logger

    text = ffi.string(msg).decode("utf-8", "replace")
    # While a load runs, libbpf's warnings repeat what the BpfError raised after it says.
    name = "debug" if getattr(_quiet, "on", False) else _LEVELS.get(level, "debug")
    getattr(get_logger(), name)("libbpf", message=text)


def route_libbpf_logs(verbose: bool = False) -> None:
    """Send libbpf's messages to structlog: warnings always, details (its relocation lines,
    some 200 a gadget) when ``verbose`` (``-vv``)."""
    lib.igr_install_print(2 if verbose else 0)


def _log_attached(program: str, where: str) -> None:
    """With ``-v``: each program attached, and to what (its section, a cgroup, a binary)."""
    from igrun.core.log import get_logger

    get_logger().debug("attached", program=program, to=where)


route_libbpf_logs()


def possible_cpus() -> int:
    n = lib.libbpf_num_possible_cpus()
    if n < 0:
        _raise("cannot count possible CPUs", n)
    return int(n)


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> list[int]:
    """The CPUs online now (``0-3,6``): where a per-CPU perf event can be opened."""
    with open(path) as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def has_ktime_get_boot_ns() -> bool:
    """Whether BPF programs can call ``bpf_ktime_get_boot_ns`` (Linux 5.7+)."""
    return bool(lib.igr_has_ktime_get_boot_ns() == 1)


# ---- the programs in the kernel ----------------------------------------------------------


@functools.cache
def prog_stat_dtype() -> np.dtype[Any]:
    """One row of :func:`program_stats`: ``struct igr_prog_stat`` (csrc/igrun_libbpf.h).

    Built on first use, not at import: this module is imported before a run's programs are
    loaded, and numpy must not be (:mod:`igrun.core.lazy`). The C struct and the dtype must
    agree byte for byte, since C writes rows into the array: checked here, once."""
    dtype = np.dtype(
        {
            "names": ["id", "type", "run_time_ns", "run_cnt", "map_memory", "map_count", "name",
                      "tag"],
            "formats": ["<u4", "<u4", "<u8", "<u8", "<u8", "<u4", "S16", ("u1", 8)],
            "offsets": [0, 4, 8, 16, 24, 32, 36, 52],
            "itemsize": 64,
        }
    )  # fmt: skip
    c_struct = "struct igr_prog_stat"
    assert dtype.fields is not None
    if ffi.sizeof(c_struct) != dtype.itemsize or any(
        ffi.offsetof(c_struct, name) != dtype.fields[name][1] for name in dtype.names or ()
    ):
        raise ImportError(f"{c_struct} does not match prog_stat_dtype(): rebuild the extension")
    return dtype


_FIRST_ROOM = 256
_MOST_ROWS = 1 << 22
"""More maps or programs than the kernel's ids could name in practice: a loop that keeps
asking for room stops here."""


def _grown(what: str, fill: Any, room: int) -> int:
    """Call ``fill(room)`` with more room until the rows fit; return how many there are."""
    while True:
        count = ffi.new("size_t *")
        err = fill(room, count)
        if err == -errno.ENOSPC and room < _MOST_ROWS:
            room *= 2
            continue
        if err:
            _raise(f"cannot list the kernel's {what}", err)
        return int(count[0])


class MapMemory(NamedTuple):
    """Every BPF map in the kernel (ascending ids), the bytes each is charged for (its
    fdinfo ``memlock``), and whether that can change (a map that allocates per element)."""

    ids: np.ndarray[Any, np.dtype[np.uint32]]
    memlock: np.ndarray[Any, np.dtype[np.uint64]]
    varies: np.ndarray[Any, np.dtype[np.uint8]]


def map_memory(known: MapMemory | None = None) -> MapMemory:
    """Every BPF map in the kernel and its memlock, in one C call. With ``known`` (the last
    call's answer) a map whose memlock cannot change costs one syscall (its id's), the others
    five or six (fd, fdinfo); without it, each map is read."""
    box: dict[str, Any] = {}
    if known is not None:
        k_ids = np.ascontiguousarray(known.ids, dtype=np.uint32)
        k_mem = np.ascontiguousarray(known.memlock, dtype=np.uint64)
        k_var = np.ascontiguousarray(known.varies, dtype=np.uint8)
        if not len(k_ids) == len(k_mem) == len(k_var):
            raise SizeError("known maps: ids, sizes and kinds differ in length")
    else:
        k_ids = np.zeros(0, np.uint32)
        k_mem = np.zeros(0, np.uint64)
        k_var = np.zeros(0, np.uint8)
    nknown = len(k_ids)
    known_args = (
        (
            ffi.from_buffer("unsigned int[]", k_ids),
            ffi.from_buffer("unsigned long long[]", k_mem),
            ffi.from_buffer("unsigned char[]", k_var),
        )
        if nknown
        else (ffi.NULL, ffi.NULL, ffi.NULL)
    )

    def fill(room: int, count: Any) -> int:
        box["ids"] = ids = np.zeros(room, dtype=np.uint32)
        box["mem"] = mem = np.zeros(room, dtype=np.uint64)
        box["var"] = var = np.zeros(room, dtype=np.uint8)
        return int(
            lib.igr_map_memlocks(
                ffi.from_buffer("unsigned int[]", ids),
                ffi.from_buffer("unsigned long long[]", mem),
                ffi.from_buffer("unsigned char[]", var),
                room,
                count,
                *known_args,
                nknown,
            )
        )

    n = _grown("BPF maps", fill, max(_FIRST_ROOM, nknown + 64))
    return MapMemory(box["ids"][:n], box["mem"][:n], box["var"][:n])


def _map_table(maps: MapMemory | None) -> tuple[Any, Any, int]:
    if maps is None:
        return ffi.NULL, ffi.NULL, 0
    ids = np.ascontiguousarray(maps[0], dtype=np.uint32)
    mem = np.ascontiguousarray(maps[1], dtype=np.uint64)
    if len(ids) != len(mem):
        raise SizeError(f"map table: {len(ids)} ids for {len(mem)} sizes")
    if len(ids) == 0:
        return ffi.NULL, ffi.NULL, 0
    if np.any(ids[1:] <= ids[:-1]):
        raise SizeError("map table: ids must ascend (as map_memory returns them)")
    return (
        ffi.from_buffer("unsigned int[]", ids),
        ffi.from_buffer("unsigned long long[]", mem),
        len(ids),
    )


def program_stats(maps: MapMemory | None = None, room: int = _FIRST_ROOM) -> np.ndarray[Any, Any]:
    """Every BPF program in the kernel, ascending by id, as rows of :func:`prog_stat_dtype`,
    in one C call (three syscalls a program). ``maps`` is :func:`map_memory`'s table: a
    program's ``map_memory`` is the sum of its maps' there (0 without it)."""
    map_ids, map_mem, nmaps = _map_table(maps)
    box: dict[str, Any] = {}

    def fill(size: int, count: Any) -> int:
        box["rows"] = rows = np.zeros(size, dtype=prog_stat_dtype())
        out = ffi.from_buffer("struct igr_prog_stat[]", rows)
        return int(lib.igr_prog_stats(out, size, count, map_ids, map_mem, nmaps))

    n = _grown("BPF programs", fill, max(1, min(room, _MOST_ROWS)))
    rows: np.ndarray[Any, Any] = box["rows"][:n]
    return rows


def program_stat(fd: int, maps: MapMemory | None = None) -> np.void:
    """The :func:`prog_stat_dtype` row of the program ``fd`` refers to (its id, type, run
    count...)."""
    map_ids, map_mem, nmaps = _map_table(maps)
    rows = np.zeros(1, dtype=prog_stat_dtype())
    err = lib.igr_prog_stat_of(
        _in_range("program fd", fd, 0, (1 << 31) - 1),
        ffi.from_buffer("struct igr_prog_stat[]", rows),
        map_ids,
        map_mem,
        nmaps,
    )
    if err:
        _raise(f"cannot read program fd {fd}", err)
    row: np.void = rows[0]
    return row


class RunTimeStats:
    """The kernel's run time and run count of every program, on while this is open
    (``BPF_ENABLE_STATS``). Closing restores what was before: the kernel counts the holders
    of such fds and the ``kernel.bpf_stats_enabled`` sysctl separately."""

    def __init__(self) -> None:
        fd = lib.igr_enable_run_time_stats()
        if fd < 0:
            _raise("cannot turn on BPF run time stats", fd)
        self._fd: int | None = int(fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# ---- maps --------------------------------------------------------------------------------


class Map:
    """A BPF map by file descriptor: from a loaded object or from a pinned path."""

    def __init__(self, fd: int, owned: bool = False, name: str | None = None) -> None:
        self.fd = fd
        self._owned = owned
        t, i, k, v, m = (ffi.new("unsigned int *") for _ in range(5))
        buf = ffi.new("char[]", BPF_OBJ_NAME_LEN)
        err = lib.igr_map_info(fd, t, i, k, v, m, buf, BPF_OBJ_NAME_LEN)
        if err:
            _raise("cannot read map info", err)
        self.type = int(t[0])
        self.id = int(i[0])
        self.key_size = int(k[0])
        self.value_size = int(v[0])
        self.max_entries = int(m[0])
        self.name = name or ffi.string(buf).decode("utf-8", "replace")
        self._value_len = self.value_size
        if self.type in _PERCPU:
            self._value_len = ((self.value_size + 7) // 8) * 8 * possible_cpus()

    @classmethod
    def create(
        cls,
        type: MapType | int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
    ) -> Map:
        """A new map not tied to any object (e.g. a filter map shared by several gadgets).
        ``name`` must fit the kernel's 15 characters: it is not cut. ``flags`` are the
        kernel's ``BPF_F_*`` map flags (e.g. :data:`BPF_F_INNER_MAP`)."""
        raw = _c_name("map name", name)
        if len(raw) >= BPF_OBJ_NAME_LEN:
            raise SizeError(f"map name {name!r}: at most {BPF_OBJ_NAME_LEN - 1} bytes")
        fd = lib.igr_map_create(
            _in_range(f"map {name}: type", int(type), 0, U32_MAX),
            raw,
            _in_range(f"map {name}: key size", key_size, 0, U32_MAX),
            _in_range(f"map {name}: value size", value_size, 0, U32_MAX),
            _in_range(f"map {name}: max entries", max_entries, 0, U32_MAX),
            _in_range(f"map {name}: flags", flags, 0, U32_MAX),
        )
        if fd < 0:
            _raise(f"cannot create map {name}", fd)
        return cls(int(fd), owned=True)

    @classmethod
    def from_pin(cls, path: str | os.PathLike[str]) -> Map:
        """Open a pinned map; the returned object owns (and closes) its fd."""
        fd = lib.bpf_obj_get(_c_name("pinned map path", os.fspath(path)))
        if fd < 0:
            _raise(f"cannot open pinned map {path}", fd)
        return cls(int(fd), owned=True)

    @property
    def per_cpu(self) -> bool:
        return self.type in _PERCPU

    @property
    def value_len(self) -> int:
        """The bytes of one value as user space sees it: a per-CPU value is the value
        rounded up to 8 bytes, once per possible CPU."""
        return self._value_len

    def _key(self, key: bytes) -> bytes:
        return _exact(f"map {self.name}: key", key, self.key_size)

    def lookup(self, key: bytes) -> bytes | None:
        """The value at ``key`` (all CPUs' values concatenated for per-CPU maps), or None."""
        key = self._key(key)
        value = ffi.new("char[]", max(self._value_len, 1))
        err = lib.bpf_map_lookup_elem(self.fd, key, value)
        if err == -2:  # ENOENT
            return None
        if err:
            _raise(f"map {self.name}: lookup failed", err)
        return bytes(ffi.buffer(value, self._value_len))

    def lookup_per_cpu(self, key: bytes) -> list[bytes] | None:
        """A per-CPU map's values, one per possible CPU."""
        raw = self.lookup(key)
        if raw is None:
            return None
        step = ((self.value_size + 7) // 8) * 8
        return [raw[i : i + self.value_size] for i in range(0, len(raw), step)]

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        """Set ``key`` to ``value`` (for a per-CPU map: every CPU's value, each rounded up
        to 8 bytes, see :attr:`value_len`)."""
        key = self._key(key)
        value = _exact(f"map {self.name}: value", value, self._value_len)
        flags = _in_range(f"map {self.name}: update flags", flags, 0, U64_MAX)
        err = lib.bpf_map_update_elem(self.fd, key, value, flags)
        if err:
            _raise(f"map {self.name}: update failed", err)

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; False if it was not there."""
        key = self._key(key)
        err = lib.bpf_map_delete_elem(self.fd, key)
        if err == -2:
            return False
        if err:
            _raise(f"map {self.name}: delete failed", err)
        return True

    def keys(self) -> Iterator[bytes]:
        key = ffi.NULL
        nxt = ffi.new("char[]", max(self.key_size, 1))
        while True:
            err = lib.bpf_map_get_next_key(self.fd, key, nxt)
            if err == -2:
                return
            if err:
                _raise(f"map {self.name}: iteration failed", err)
            current = bytes(ffi.buffer(nxt, self.key_size))
            yield current
            key = ffi.new("char[]", current)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every entry, with the kernel's batch lookup where it has one (hash maps)."""
        try:
            return self._lookup_batch()
        except BpfError:
            pass
        out = []
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                out.append((key, value))
        return out

    def _lookup_batch(self) -> list[tuple[bytes, bytes]]:
        chunk = max(1, min(self.max_entries, 4096))
        keys_size, values_size = chunk * self.key_size, chunk * self._value_len
        keys = ffi.new("char[]", max(keys_size, 1))
        values = ffi.new("char[]", max(values_size, 1))
        # The batch token: a hash map's is 4 bytes, an array's is one key.
        token = max(8, self.key_size)
        token_in, token_out = ffi.new("char[]", token), ffi.new("char[]", token)
        count = ffi.new("unsigned int *")
        out: list[tuple[bytes, bytes]] = []
        first = True
        while True:
            count[0] = chunk
            err = lib.igr_map_lookup_batch(
                self.fd, ffi.NULL if first else token_in, token_out, token,
                keys, keys_size, values, values_size, count,
            )  # fmt: skip
            if err and err != -2:
                _raise(f"map {self.name}: batch lookup failed", err)
            if count[0] > chunk:  # never, by the kernel's contract: do not read past the buffers
                raise BpfError(f"map {self.name}: batch lookup returned {count[0]} of {chunk}")
            kb, vb = ffi.buffer(keys), ffi.buffer(values)
            for i in range(count[0]):
                out.append(
                    (
                        bytes(kb[i * self.key_size : (i + 1) * self.key_size]),
                        bytes(vb[i * self._value_len : (i + 1) * self._value_len]),
                    )
                )
            if err == -2:
                return out
            ffi.memmove(token_in, token_out, token)
            first = False

    def drain(
        self, delete: bool = True, capacity: int | None = None
    ) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.uint8]], int]:
        """Every entry of a hash map, as two byte arrays (``count × key_size`` keys and
        ``count × value_len`` values) and the number of syscalls it took: C copies whole
        batches (:c:func:`igr_map_drain`), so the cost does not grow with the entries by a
        syscall each. With ``delete`` the entries copied are gone from the map (an interval
        gadget's counts start again from zero). At most ``capacity`` entries (default: the
        map's size) are taken; the rest stay for the next call."""
        room = self.max_entries if capacity is None else capacity
        room = _in_range(f"map {self.name}: drain capacity", room, 1, U32_MAX)
        keys = np.empty(room * self.key_size, np.uint8)
        values = np.empty(room * self._value_len, np.uint8)
        count, calls = ffi.new("unsigned int *"), ffi.new("unsigned int *")
        err = lib.igr_map_drain(
            self.fd, int(delete), ffi.from_buffer(keys), keys.nbytes,
            ffi.from_buffer(values), values.nbytes, room, count, calls,
        )  # fmt: skip
        if err:
            _raise(f"map {self.name}: batch {'drain' if delete else 'lookup'} failed", err)
        n = int(count[0])
        return (
            keys[: n * self.key_size].reshape(n, self.key_size),
            values[: n * self._value_len].reshape(n, self._value_len),
            int(calls[0]),
        )

    def lookup_many(
        self, keys: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, np.dtype[np.uint8]], np.ndarray[Any, np.dtype[np.bool_]]]:
        """The values of many keys (an array of ``key_size``-byte records) in one C loop:
        ``count × value_len`` bytes and whether each key was there (a missing key's value is
        zeros). For maps the kernel cannot read in batches, such as stack-trace maps."""
        raw = np.ascontiguousarray(keys).view(np.uint8).reshape(-1)
        if raw.nbytes % max(self.key_size, 1):
            raise SizeError(f"map {self.name}: keys are not whole {self.key_size}-byte records")
        n = raw.nbytes // max(self.key_size, 1)
        values = np.zeros(max(n, 1) * self._value_len, np.uint8)
        found = np.zeros(max(n, 1), np.uint8)
        if n:
            err = lib.igr_map_lookup_many(
                self.fd, ffi.from_buffer(raw), raw.nbytes, self.key_size,
                ffi.from_buffer(values), values.nbytes, self._value_len,
                ffi.from_buffer(found), n,
            )  # fmt: skip
            if err:
                _raise(f"map {self.name}: lookup of {n} keys failed", err)
        return values[: n * self._value_len].reshape(n, self._value_len), found[:n].astype(bool)

    def clear(self) -> None:
        for key in list(self.keys()):
            self.delete(key)

    def pin(self, path: str | os.PathLike[str]) -> None:
        err = lib.bpf_obj_pin(self.fd, _c_name("pin path", os.fspath(path)))
        if err:
            _raise(f"cannot pin map {self.name} at {path}", err)

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


LOST_COUNTER_LAYOUT = "a per-CPU array of 1 entry, u32 key, u64 value"
_MAP_KINDS: dict[int, str] = {
    MapType.PERCPU_ARRAY: "per-CPU array",
    MapType.PERCPU_HASH: "per-CPU hash",
}


def check_lost_counter(lost: Map) -> None:
    """Refuse a drop counter the reader cannot read safely: C reads one u64 per possible CPU
    at key 0, so anything else (an object that declares its own ``gadget_lost_events`` with
    another value size, say) would have the kernel write past the reader's buffer."""
    if (
        lost.type != MapType.PERCPU_ARRAY
        or lost.max_entries != 1
        or lost.key_size != 4
        or lost.value_size != 8
    ):
        try:
            kind = _MAP_KINDS.get(lost.type) or MapType(lost.type).name.lower().replace("_", " ")
        except ValueError:
            kind = f"type {lost.type}"
        entries = f"{lost.max_entries} entr{'y' if lost.max_entries == 1 else 'ies'}"
        raise BpfError(
            f"map {lost.name} must be {LOST_COUNTER_LAYOUT} (igrun/buffer.h); it is a {kind} "
            f"of {entries}, {lost.key_size}-byte key, {lost.value_size}-byte value"
        )


# ---- programs and links ------------------------------------------------------------------


class Link:
    """An attachment; destroying it detaches the program."""

    def __init__(self, ptr: Any, what: str) -> None:
        self._ptr = ptr
        self.what = what

    def _live(self) -> Any:
        if self._ptr is None:
            raise BpfError(f"link {self.what} was destroyed")
        return self._ptr

    @property
    def fd(self) -> int:
        return int(lib.bpf_link__fd(self._live()))

    def read(self) -> bytes:
        """Run an iterator link once and return everything it wrote."""
        out, size = ffi.new("char **"), ffi.new("size_t *")
        err = lib.igr_iter_read(self._live(), out, size)
        if err:
            _raise(f"cannot read iterator {self.what}", err)
        try:
            return bytes(ffi.buffer(out[0], size[0]))
        finally:
            lib.igr_free(out[0])

    def pin(self, path: str | os.PathLike[str]) -> None:
        err = lib.bpf_link__pin(self._live(), _c_name("pin path", os.fspath(path)))
        if err:
            _raise(f"cannot pin link {self.what} at {path}", err)

    def destroy(self) -> None:
        if self._ptr is not None:
            lib.bpf_link__destroy(self._ptr)
            self._ptr = None


class SocketAttachment:
    """A socket filter attached to one socket (not a link: the socket option is undone)."""

    def __init__(self, sock: socket.socket, prog_fd: int) -> None:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
        self._sock: socket.socket | None = sock

    def destroy(self) -> None:
        if self._sock is not None and self._sock.fileno() >= 0:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
        self._sock = None


class Program:
    """A program of a BPF object."""

    def __init__(self, ptr: Any, owner: BpfObject) -> None:
        self._ptr = ptr
        self._owner = owner  # the program lives in its object: not usable once that is closed
        self.name: str = ffi.string(lib.bpf_program__name(ptr)).decode()
        self.section: str = ffi.string(lib.bpf_program__section_name(ptr)).decode()

    def _live(self) -> Any:
        self._owner._obj()  # raises once the object is closed
        return self._ptr

    @property
    def fd(self) -> int:
        return int(lib.bpf_program__fd(self._live()))

    @property
    def autoload(self) -> bool:
        return bool(lib.bpf_program__autoload(self._live()))

    @autoload.setter
    def autoload(self, value: bool) -> None:
        err = lib.bpf_program__set_autoload(self._live(), bool(value))
        if err:
            _raise(f"program {self.name}: cannot change autoload", err)

    @property
    def is_iterator(self) -> bool:
        return self.section.startswith("iter/") or self.section.startswith("iter.s/")

    @property
    def is_socket_filter(self) -> bool:
        return self.section.startswith("socket")

    def attach(self) -> Link:
        """Attach by section: tracepoint, raw_tp, tp_btf, iter, and uprobes with a target."""
        err = ffi.new("int *")
        link = (
            lib.igr_attach_iter(self._live(), err)
            if self.is_iterator
            else lib.igr_attach(self._live(), err)
        )
        if link == ffi.NULL:
            _raise(f"cannot attach {self.name} ({self.section})", err[0])
        _log_attached(self.name, self.section)
        return Link(link, self.name)

    def attach_uprobe(
        self,
        binary: str,
        func: str | None = None,
        offset: int = 0,
        pid: int = -1,
        retprobe: bool = False,
    ) -> Link:
        """Attach to a function of ``binary`` (by name, or an offset) for ``pid`` (-1: all)."""
        err = ffi.new("int *")
        link = lib.igr_attach_uprobe(
            self._live(),
            bool(retprobe),
            _in_range("uprobe pid", pid, -1, (1 << 31) - 1),
            _c_name("uprobe binary", binary),
            _c_name("uprobe function", func) if func else ffi.NULL,
            _in_range("uprobe offset", offset, 0, U64_MAX),
            err,
        )
        if link == ffi.NULL:
            _raise(f"cannot attach uprobe {self.name} to {binary}:{func or hex(offset)}", err[0])
        _log_attached(self.name, f"{self.section} {binary}:{func or hex(offset)} pid {pid}")
        return Link(link, self.name)

    def attach_perf_event(self, cpu: int, freq: int) -> Link:
        """Run this ``perf_event`` program ``freq`` times a second on ``cpu``, from a software
        CPU-clock event (no hardware PMU needed). The link owns the event."""
        err = ffi.new("int *")
        link = lib.igr_attach_perf_event(
            self._live(),
            _in_range("perf event cpu", cpu, 0, (1 << 31) - 1),
            _in_range("perf event frequency", freq, 1, (1 << 31) - 1),
            err,
        )
        if link == ffi.NULL:
            _raise(f"cannot attach {self.name} to cpu {cpu}'s clock at {freq} Hz", err[0])
        _log_attached(self.name, f"{self.section} cpu {cpu} {freq} Hz")
        return Link(link, self.name)

    def run_stats(self) -> tuple[int, int]:
        """``(run_time_ns, run_cnt)``: time spent in this program and runs, counted while
        :class:`RunTimeStats` is on."""
        ns, cnt = ffi.new("unsigned long long *"), ffi.new("unsigned long long *")
        err = lib.igr_prog_run_stats(self.fd, ns, cnt)
        if err:
            _raise(f"cannot read program {self.name}'s statistics", err)
        return int(ns[0]), int(cnt[0])

    def attach_cgroup(self, cgroup: str | os.PathLike[str]) -> Link:
        """Attach to a cgroup (v2) folder with a link: programs others attached there stay,
        and destroying the link detaches only this one."""
        err = ffi.new("int *")
        fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            link = lib.igr_attach_cgroup(self._live(), fd, err)
        finally:
            os.close(fd)
        if link == ffi.NULL:
            _raise(f"cannot attach {self.name} ({self.section}) to cgroup {cgroup}", err[0])
        _log_attached(self.name, f"{self.section} {os.fspath(cgroup)}")
        return Link(link, self.name)

    @property
    def is_cgroup(self) -> bool:
        return self.section.startswith(("cgroup/", "cgroup_skb/", "sockops"))

    def attach_socket(self, sock: socket.socket) -> SocketAttachment:
        """Attach a socket filter to ``sock``."""
        try:
            return SocketAttachment(sock, self.fd)
        except OSError as exc:
            raise BpfError(f"cannot attach socket filter {self.name}", exc.errno or 0) from None

    def test_run(self, data: bytes, repeat: int = 1) -> tuple[int, int]:
        """Run the loaded program ``repeat`` times on ``data`` (``BPF_PROG_TEST_RUN``: a
        packet for socket and tc programs); its return value and mean run time in ns."""
        retval, duration = ffi.new("unsigned int *"), ffi.new("unsigned int *")
        data = bytes(data)
        err = lib.igr_prog_test_run(
            self.fd, data, len(data), _in_range("test run repeat", repeat, 0, U32_MAX), retval,
            duration,
        )  # fmt: skip
        if err:
            _raise(f"cannot test-run {self.name}", err)
        return int(retval[0]), int(duration[0])

    def pin(self, path: str | os.PathLike[str]) -> None:
        err = lib.bpf_program__pin(self._live(), _c_name("pin path", os.fspath(path)))
        if err:
            _raise(f"cannot pin program {self.name} at {path}", err)


# ---- objects -----------------------------------------------------------------------------


_INT_CODES = {1: "i1", 2: "i2", 4: "i4", 8: "i8"}
STRUCT = lib.IGR_KIND_STRUCT


def _member_dtype(m: Any) -> str | tuple[str, int] | np.dtype[Any]:
    kind, size = int(m.kind), int(m.size)
    if kind in (lib.IGR_KIND_INT, lib.IGR_KIND_ENUM) and size in _INT_CODES:
        code = _INT_CODES[size]
        return "<" + (code if m.is_signed else code.replace("i", "u"))
    if kind == lib.IGR_KIND_PTR:
        return "<u8"
    if kind == lib.IGR_KIND_ARRAY:
        if m.is_char and m.elem_size == 1:
            return f"S{m.nelems}"
        if m.elem_kind in (lib.IGR_KIND_INT, lib.IGR_KIND_ENUM) and m.elem_size in _INT_CODES:
            code = _INT_CODES[m.elem_size]
            elem = "<" + (code if m.is_signed else code.replace("i", "u"))
            return np.dtype((elem, (int(m.nelems),)))
    return f"V{size}"


class BpfObject:
    """One BPF object: open, configure, load, attach, close.

    Use it as a context manager; closing detaches every link made through it and frees the
    kernel objects (programs and maps that nothing else holds).
    """

    def __init__(self, ptr: Any, log_buf: Any, source: str) -> None:
        self._ptr = ptr
        self._log_buf = log_buf
        self.source = source
        self.links: list[Link | SocketAttachment] = []
        self.loaded = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BpfObject:
        log_buf = ffi.new("char[]", VERIFIER_LOG_SIZE)
        err = ffi.new("int *")
        raw = _c_name("BPF object path", os.fspath(path))
        ptr = lib.igr_open_file(raw, log_buf, VERIFIER_LOG_SIZE, err)
        if ptr == ffi.NULL:
            _raise(f"cannot open BPF object {path}", err[0])
        return cls(ptr, log_buf, str(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str) -> BpfObject:
        log_buf = ffi.new("char[]", VERIFIER_LOG_SIZE)
        err = ffi.new("int *")
        keep = ffi.from_buffer(data)
        raw = _c_name("BPF object name", name)
        ptr = lib.igr_open_mem(keep, len(keep), raw, log_buf, VERIFIER_LOG_SIZE, err)
        if ptr == ffi.NULL:
            _raise(f"cannot open BPF object {name}", err[0])
        return cls(ptr, log_buf, name)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _obj(self) -> Any:
        """The libbpf object, or a clear error once closed (libbpf would be handed NULL)."""
        if self._ptr is None:
            raise BpfError(f"{self.source}: the BPF object is closed")
        return self._ptr

    @property
    def name(self) -> str:
        return str(ffi.string(lib.bpf_object__name(self._obj())).decode())

    # -- before load

    def global_names(self) -> list[str]:
        """Every global variable's name, whole: C says how much room they need and is asked
        again with that much when the first buffer was too small."""
        size = 1 << 12
        while True:
            buf = ffi.new("char[]", size)
            n = lib.igr_global_names(self._obj(), buf, size)
            if n < 0:
                _raise(f"{self.source}: cannot list global variables", n)
            if n <= size:
                raw = bytes(ffi.buffer(buf, n))
                return [s.decode("utf-8", "replace") for s in raw.split(b"\0") if s]
            size = n

    def global_size(self, name: str) -> int | None:
        """The size in bytes of global variable ``name`` (its BTF's), or None."""
        size = lib.igr_set_global(self._obj(), _c_name("global name", name), ffi.NULL, 0)
        if size == -errno.ENOENT:
            return None
        if size < 0:
            _raise(f"{self.source}: global variable {name!r} cannot be set", size)
        return int(size)

    def global_value(self, name: str) -> bytes | None:
        """The bytes of global variable ``name``, or None without such a variable. Before
        load: as compiled, or as :meth:`set_global` left it (zeros in ``.bss``); after load,
        read from the kernel (the section's map): the value the programs see now, e.g. a
        counter they keep."""
        size = self.global_size(name)
        if size is None:
            return None
        if self.loaded:
            return self._loaded_global(name, size)
        out = ffi.new("char[]", size)
        err = lib.igr_global_value(self._obj(), _c_name("global name", name), out, size)
        if err:
            _raise(f"{self.source}: cannot read global {name}", err)
        return bytes(ffi.buffer(out, size))

    def global_location(self, name: str, size: int) -> tuple[int, int] | None:
        """Where a loaded object's global variable ``name`` of ``size`` bytes lives: the fd of
        its section's map and its offset in that map's value; None without such a variable."""
        fd, offset = ffi.new("int *"), ffi.new("size_t *")
        err = lib.igr_global_location(self._obj(), _c_name("global name", name), size, fd, offset)
        if err == -errno.ENOENT:
            return None
        if err:
            _raise(f"{self.source}: cannot find global {name} ({size} bytes)", err)
        return int(fd[0]), int(offset[0])

    def _loaded_global(self, name: str, size: int) -> bytes:
        """A global's bytes from its section's map in the kernel: libbpf before 1.5 keeps
        only the values it loaded in its own copy."""
        from igrun.core.bpf.btf import ObjectBtf

        this: Any = self  # mypy sees this module under two names (core., igrun.core.)
        where = ObjectBtf(this).global_location(name)
        if where is None:
            raise BpfError(f"{self.source}: global {name} is in no section of its BTF")
        section, offset = where
        value = self.map(section).lookup(b"\0\0\0\0")
        if value is None or offset + size > len(value):
            raise BpfError(f"{self.source}: section {section} does not hold global {name}")
        return bytes(value[offset : offset + size])

    def set_global(self, name: str, value: bytes | int | bool) -> None:
        """Set a ``.rodata``/``.data``/``.bss`` variable before load (e.g. a target pid).
        Bytes must be exactly the variable's size and a number must fit it: nothing is cut
        or padded silently."""
        data = self.pack_global(name, value)
        err = lib.igr_set_global(self._obj(), _c_name("global name", name), data, len(data))
        if err:
            _raise(f"{self.source}: cannot set {name} ({len(data)} bytes)", err)

    def pack_global(self, name: str, value: bytes | int | bool) -> bytes:
        """The bytes :meth:`set_global` would write to ``name`` for ``value``."""
        size = self.global_size(name)
        if size is None:
            known = ", ".join(self.global_names()) or "none"
            raise BpfError(f"{self.source}: no global variable {name!r} (has: {known})")
        if isinstance(value, bool | int):
            signed = isinstance(value, int) and value < 0
            try:
                data = int(value).to_bytes(size, "little", signed=signed)
            except OverflowError:
                raise SizeError(
                    f"{self.source}: {value} does not fit global {name} ({size} bytes)"
                ) from None
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
            if len(data) != size:
                raise SizeError(f"{self.source}: global {name} is {size} bytes, {len(data)} given")
        else:
            raise SizeError(f"{self.source}: global {name}: {type(value).__name__} given")
        return data

    def has_global(self, name: str) -> bool:
        found = lib.igr_set_global(self._obj(), _c_name("global name", name), ffi.NULL, 0)
        return bool(found != -errno.ENOENT)

    def _map_ptr(self, name: str) -> Any:
        ptr = lib.bpf_object__find_map_by_name(self._obj(), _c_name("map name", name))
        if ptr == ffi.NULL:
            raise BpfError(f"{self.source}: no map {name!r}")
        return ptr

    def has_map(self, name: str) -> bool:
        ptr = lib.bpf_object__find_map_by_name(self._obj(), _c_name("map name", name))
        return bool(ptr != ffi.NULL)

    def reuse_map(self, name: str, source: Map | int | str | os.PathLike[str]) -> None:
        """Use an existing map (a Map, an fd or a pinned path) in place of the object's own."""
        owned = None
        if isinstance(source, Map):
            fd = source.fd
        elif isinstance(source, int):
            fd = source
        else:
            owned = Map.from_pin(source)
            fd = owned.fd
        try:
            err = lib.bpf_map__reuse_fd(self._map_ptr(name), fd)
            if err:
                _raise(f"{self.source}: cannot reuse map for {name}", err)
        finally:
            if owned:
                owned.close()  # libbpf holds its own dup of the fd

    def map_type(self, name: str) -> int:
        """The type a map has (or will have once loaded), e.g. :attr:`MapType.RINGBUF`."""
        return int(lib.igr_map_type(self._map_ptr(name)))

    def new_map_like(self, name: str) -> Map:
        """A new map of the type, key and value sizes and size that map ``name`` of this
        object will have: made before any object loads, it can be given to several of them
        (:meth:`reuse_map`), which then load at the same time. Not for maps with flags."""
        ptr = self._map_ptr(name)
        return Map.create(
            int(lib.igr_map_type(ptr)),
            name,
            int(lib.bpf_map__key_size(ptr)),
            int(lib.bpf_map__value_size(ptr)),
            int(lib.bpf_map__max_entries(ptr)),
        )

    def set_max_entries(self, name: str, n: int) -> None:
        n = _in_range(f"{self.source}: map {name}: max entries", n, 0, U32_MAX)
        err = lib.bpf_map__set_max_entries(self._map_ptr(name), n)
        if err:
            _raise(f"{self.source}: cannot size map {name}", err)

    def struct_dtype(self, name: str, nested: bool = False) -> np.dtype[Any]:
        """A numpy dtype with the layout of ``struct name`` as the object's BTF describes it.

        A member that is itself a named struct is opaque bytes, unless ``nested``: then its
        members take its place, named ``outer.inner`` at their offsets in the whole struct
        (``proc.pid`` of a ``struct gadget_process proc``), so an event decodes as one flat
        record whatever structs it embeds."""
        names, formats, offsets, itemsize = self._struct_layout(name, nested)
        return np.dtype(
            {"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize}
        )

    def _struct_layout(
        self, name: str, nested: bool
    ) -> tuple[list[str], list[Any], list[int], int]:
        raw = _c_name("struct name", name)
        size = ffi.new("unsigned int *")
        count = lib.igr_struct_members(self._obj(), raw, ffi.NULL, 0, size)
        if count < 0:
            _raise(f"{self.source}: no usable BTF for struct {name}", count)
        members = ffi.new("struct igr_member[]", max(count, 1))
        n = lib.igr_struct_members(self._obj(), raw, members, count, size)
        if n < 0:
            _raise(f"{self.source}: no usable BTF for struct {name}", n)
        names, formats, offsets = [], [], []
        for i in range(n):
            m = members[i]
            member_name = ffi.string(m.name).decode("utf-8", "replace")
            if not member_name:
                continue  # anonymous unions: exposed through their named siblings only
            type_name = ffi.string(m.type_name).decode("utf-8", "replace")
            inner = self._inner_layout(type_name) if nested and m.kind == STRUCT else None
            if inner is not None:
                names += [f"{member_name}.{n}" for n in inner[0]]
                formats += inner[1]
                offsets += [int(m.offset) + o for o in inner[2]]
                continue
            names.append(member_name)
            formats.append(_member_dtype(m))
            offsets.append(int(m.offset))
        return names, formats, offsets, int(size[0])

    def _inner_layout(self, type_name: str) -> tuple[list[str], list[Any], list[int], int] | None:
        """The flattened layout of a member's struct, or None (opaque bytes) when it has no
        struct name to look up (an anonymous struct, or one behind a typedef)."""
        if not type_name:
            return None
        try:
            return self._struct_layout(type_name, True)
        except BpfError:
            return None

    @property
    def programs(self) -> dict[str, Program]:
        out: dict[str, Program] = {}
        obj = self._obj()
        ptr = lib.bpf_object__next_program(obj, ffi.NULL)
        while ptr != ffi.NULL:
            prog = Program(ptr, self)
            out[prog.name] = prog
            ptr = lib.bpf_object__next_program(obj, ptr)
        return out

    def map_names(self, include_internal: bool = False) -> list[str]:
        out = []
        obj = self._obj()
        ptr = lib.bpf_object__next_map(obj, ffi.NULL)
        while ptr != ffi.NULL:
            if include_internal or not lib.bpf_map__is_internal(ptr):
                out.append(ffi.string(lib.bpf_map__name(ptr)).decode())
            ptr = lib.bpf_object__next_map(obj, ptr)
        return out

    # -- load

    def load(self) -> None:
        """Load every program and create the maps; a rejection shows the verifier's reasons."""
        _quiet.on = True
        try:
            err = lib.bpf_object__load(self._obj())
        finally:
            _quiet.on = False
        if err:
            log = ffi.string(self._log_buf).decode("utf-8", "replace")
            _raise(f"{self.source}: the kernel refused to load it", err, relevant_log_lines(log))
        self.loaded = True
        self._log_buf = None  # the verifier log is only needed for a failure

    # -- after load

    def map(self, name: str) -> Map:
        if not self.loaded:
            raise BpfError(f"{self.source}: map {name} has no fd before load")
        fd = lib.bpf_map__fd(self._map_ptr(name))
        if fd < 0:
            _raise(f"{self.source}: map {name} has no fd", fd)
        return Map(int(fd), owned=False, name=name)

    def attach(self, program: str) -> Link:
        link = self.programs[program].attach()
        self.links.append(link)
        return link

    def attach_all(self) -> list[Link]:
        """Attach every loaded program whose section says where (iterators, socket filters and
        cgroup programs excluded: they need a reader, a socket or a cgroup)."""
        links = []
        for prog in self.programs.values():
            if not prog.autoload or prog.is_iterator or prog.is_socket_filter or prog.is_cgroup:
                continue
            try:
                links.append(self.attach(prog.name))
            except BpfError as exc:
                if exc.errno != errno.EOPNOTSUPP:
                    raise
                # A section with no target (a bare "uprobe"): attached by its gadget instead.
        return links

    def keep(self, attachment: Link | SocketAttachment) -> None:
        """Let this object detach ``attachment`` when it closes."""
        self.links.append(attachment)

    def close(self) -> None:
        for link in reversed(self.links):
            link.destroy()
        self.links.clear()
        if self._ptr is not None:
            lib.bpf_object__close(self._ptr)
            self._ptr = None


def relevant_log_lines(log: str, count: int = RELEVANT_LOG_LINES) -> list[str]:
    """The end of a verifier log, where it says why it gave up."""
    lines = [line for line in log.splitlines() if line.strip()]
    keep = [line for line in lines if not line.startswith(("func#", "processed "))]
    return keep[-count:] if keep else lines[-count:]


# ---- draining buffers --------------------------------------------------------------------


class Reader:
    """Drains a perf or ring buffer in batches of fixed-size records.

    A poll copies every available record (up to ``max_records`` for ring buffers) into one
    reusable C buffer, then sleeps until the buffer wakes it (its watermark, see
    ``igr_reader_poll``) or the timeout passes, and takes what came; a ring poll sleeps on
    after a wakeup until its batch holds a quarter of the ring: one Python call per batch,
    never per event. The GIL is released while it waits (cffi does that for every
    call). :meth:`records` gives the batch as an array that is the caller's to keep;
    :meth:`poll` as a buffer that is the caller's too.
    """

    def __init__(
        self, ptr: Any, record_size: int, lost_map: Map | None, ring_records: int = 0
    ) -> None:
        self._ptr = ptr
        self.record_size = record_size
        self._lost_map = lost_map  # kept open as long as C reads it
        self._ring_records = ring_records
        """A ring reader's batch size limit: records() lends C room for that many."""
        self._spare = np.empty(0, dtype=np.uint8)
        """The last batch's memory; nothing else may hold a reference to it (see records)."""
        self._spare_last = False
        """Whether the last poll into the caller's memory wrote into ``_spare``."""
        self._reported = 0
        self._count = 0  # records in the last batch, which sizes() may read
        self._lent: np.ndarray[Any, Any] | None = None
        """The batch out on loan (see lend), until give_back."""
        self._last_lent = False  # whether the last batch was lent: its sizes are all full
        self._kept: list[tuple[np.ndarray[Any, Any], Any]] = []
        """Lent batches kept past give_back, and the C address of the copy each lives in."""
        self._where = ffi.new("size_t[2]")  # a lent batch's offset and stride, from C
        self._lock = threading.Lock()
        if lost_map is not None:  # its shape was checked (check_lost_counter); C checks too
            err = lib.igr_reader_count_lost_in(ptr, lost_map.fd)
            if err:
                lib.igr_reader_free(ptr)
                self._ptr = None
                _raise(f"cannot read drop counter {lost_map.name}", err)

    @classmethod
    def ring(
        cls, buffer: Map, record_size: int, max_records: int = 65536, lost_map: Map | None = None
    ) -> Reader:
        if lost_map is not None:
            check_lost_counter(lost_map)
        err = ffi.new("int *")
        ptr = lib.igr_ring_new(buffer.fd, record_size, max_records, err)
        if ptr == ffi.NULL:
            _raise(f"cannot read ring buffer {buffer.name}", err[0])
        return cls(ptr, record_size, lost_map, ring_records=max_records)

    @classmethod
    def perf(
        cls,
        buffer: Map,
        record_size: int,
        pages: int = 64,
        wakeup_bytes: int = 0,
        max_records: int = 65536,
        lost_map: Map | None = None,
    ) -> Reader:
        """A perf buffer reader, woken once ``wakeup_bytes`` wait in a CPU's buffer (0: at
        every record). With ``lost_map`` (the BPF side counts failed outputs, see
        ``gadget_perf_output``) losses come from there instead of perf's lost records."""
        if lost_map is not None:
            check_lost_counter(lost_map)
        err = ffi.new("int *")
        ptr = lib.igr_perf_new(buffer.fd, pages, wakeup_bytes, record_size, max_records, err)
        if ptr == ffi.NULL:
            _raise(f"cannot read perf buffer {buffer.name}", err[0])
        return cls(ptr, record_size, lost_map)

    def _open(self) -> Any:
        if self._ptr is None:
            raise BpfError("the reader is closed")
        return self._ptr

    def poll(self, timeout_ms: int = 100) -> memoryview | None:
        """Wait up to ``timeout_ms`` for records; return them as one buffer (None if none).

        The buffer is a copy: it stays valid after later polls and after :meth:`close`."""
        with self._lock:
            n = self._poll(timeout_ms)
            if n == 0:
                return None
            return memoryview(
                bytes(ffi.buffer(lib.igr_reader_data(self._ptr), n * self.record_size))
            )

    def _poll(self, timeout_ms: int) -> int:
        self._last_lent = False
        n = int(lib.igr_reader_poll(self._open(), timeout_ms))
        if n < 0:
            self._count = 0
            _raise("reading events failed", n)
        self._count = n
        return n

    def records(self, timeout_ms: int, dtype: np.dtype[Any]) -> np.ndarray[Any, Any] | None:
        """:meth:`poll`, as an array of ``dtype`` records that is the caller's to keep.

        The records land in the memory of an earlier batch when nothing holds on to that one
        any more (no array, view or buffer of it is left: its reference count tells), which
        is what happens when batches go straight to the output: a ring reader then copies
        them there straight from the ring buffer. Otherwise (and for perf readers) they are
        copied from the reader's own slots into memory of their own: a fresh allocation per
        batch costs page faults every time, at low rates more than the copy itself.
        """
        if dtype.itemsize != self.record_size:
            raise BpfError(f"records of {self.record_size} bytes read as {dtype.itemsize}")
        with self._lock:
            self._last_lent = False
            return self._records(self._open(), timeout_ms, dtype)

    def _records(
        self, ptr: Any, timeout_ms: int, dtype: np.dtype[Any]
    ) -> np.ndarray[Any, Any] | None:
        """:meth:`records`, with the lock held."""
        slots = self._ring_records
        # Free means two references: the attribute and getrefcount's argument.
        if slots and sys.getrefcount(self._spare) <= 2:
            size = slots * self.record_size
            if len(self._spare) < size:
                self._spare = np.empty(size, dtype=np.uint8)
                self._spare_last = False
            fresh, self._spare_last = not self._spare_last, True
            n = int(
                lib.igr_reader_poll_into(
                    ptr, timeout_ms, ffi.from_buffer(self._spare), slots, fresh
                )
            )
            self._count = max(n, 0)
            if n < 0:
                _raise("reading events failed", n)
            return np.ndarray((n,), dtype, self._spare) if n else None
        n = self._poll(timeout_ms)
        if n == 0:
            return None
        size = n * self.record_size
        if sys.getrefcount(self._spare) > 2:  # held on to: this batch gets its own memory
            memory = np.empty(size, dtype=np.uint8)
        else:
            if len(self._spare) < size:
                self._spare = np.empty(max(size, 2 * len(self._spare)), dtype=np.uint8)
            memory = self._spare
            self._spare_last = False  # written by a copy, not by a poll into it
        ffi.memmove(memory, lib.igr_reader_data(ptr), size)
        return np.ndarray((n,), dtype, memory)

    def watch_seen(self, map_fd: int, offset: int) -> None:
        """Tell the BPF side how far each lend looked (``gadget_ring_seen`` of
        ``igrun/buffer.h``, found with :meth:`BpfObject.global_location`), so that it counts
        its wakeup watermark from there and lent batches may grow past it."""
        with self._lock:
            err = lib.igr_reader_watch_seen(self._open(), map_fd, offset)
        if err:
            _raise("cannot share the reader's position with the BPF side", err)

    def lend(self, timeout_ms: int, dtype: np.dtype[Any]) -> np.ndarray[Any, Any] | None:
        """:meth:`records` without the copy, for a ring reader: the batch is read where it
        lies in the ring buffer, as a read-only array, and its space is given back to the
        ring only by :meth:`give_back`. A record that is not one whole event (a gadget that
        sends records of several lengths) comes copied instead, as :meth:`records` reads it.

        What still references a lent batch at :meth:`give_back` (the array, or a view of
        it) keeps reading the same records: they are copied first, in place, into memory of
        their own, and give_back says so.
        """
        if dtype.itemsize != self.record_size:
            raise BpfError(f"records of {self.record_size} bytes read as {dtype.itemsize}")
        with self._lock:
            ptr = self._open()
            if self._lent is not None:
                raise BpfError("the lent batch was not given back")
            start = time.monotonic()
            n = int(lib.igr_reader_lend(ptr, timeout_ms, self._where, self._where + 1))
            if n == -lib.IGR_UNEVEN:  # copied, with what is left of the timeout
                self._last_lent = False
                left = timeout_ms - int((time.monotonic() - start) * 1000) if timeout_ms else 0
                return self._records(ptr, max(left, 0), dtype)
            self._count = max(n, 0)
            self._last_lent = n > 0
            if n < 0:
                _raise("reading events failed", n)
            if n == 0:
                return None
            size = ffi.new("size_t *")
            memory = ffi.buffer(lib.igr_reader_ring_memory(ptr, size), size[0])
            # numpy checks that the batch lies within the memory it is given.
            lent: np.ndarray[Any, Any] = np.ndarray(
                (n,), dtype, memory, offset=int(self._where[0]), strides=(int(self._where[1]),)
            )
            lent.flags.writeable = False
            self._lent = lent
            return lent

    def give_back(self) -> bool:
        """Return the lent batch's space to the ring buffer. Whether the batch was still
        referenced (kept by whoever read it): its records were then copied first, into
        private memory at the same address, so that what kept it reads them unchanged."""
        with self._lock:
            return self._give_back()

    def _give_back(self) -> bool:
        """:meth:`give_back`, with the lock held."""
        lent, self._lent = self._lent, None
        if self._ptr is None:
            return False
        if lent is None:
            self._drop_kept()
            return False
        # Free means two references: ``lent`` and getrefcount's argument.
        kept = sys.getrefcount(lent) > 2
        if kept:
            address = lib.igr_reader_keep_lent(self._ptr)
            if address == ffi.NULL:
                self._lent = lent  # still out: its space cannot be given back
                _raise("cannot keep a lent batch", -ffi.errno)
            self._kept.append((lent, address))
        else:
            lib.igr_reader_give_back(self._ptr)
        del lent
        self._drop_kept()
        return kept

    def _drop_kept(self) -> None:
        """Unmap the copies of kept batches that nothing references any more (the list's
        tuple and getrefcount's argument are then the last two references)."""
        for entry in list(self._kept):
            if sys.getrefcount(entry[0]) <= 2:
                self._kept.remove(entry)
                lib.igr_reader_drop_kept(self._ptr, entry[1])

    def sizes(self, count: int) -> np.ndarray[Any, np.dtype[np.uint32]]:
        """The real length of each record of the last batch (before padding or cutting)."""
        with self._lock:
            ptr = self._open()
            if not 0 <= count <= self._count:
                raise BpfError(f"the last batch has {self._count} records, not {count}")
            if self._last_lent:  # a lent batch holds whole records only
                return np.full(count, self.record_size, dtype=np.uint32)
            buf = ffi.buffer(lib.igr_reader_sizes(ptr), count * 4)
            return np.frombuffer(buf, dtype=np.uint32).copy()

    def fill_peak(self) -> int:
        """The most bytes a drain found waiting in the ring buffer since the last call (0 for
        a perf buffer): how close the buffer came to full."""
        with self._lock:
            return int(lib.igr_reader_fill_peak(self._open()))

    def lost(self) -> int:
        """Events lost since the last call: the drop counter the BPF side bumps when an output
        fails (``gadget_lost_events``), or else perf's lost records."""
        with self._lock:
            total = int(lib.igr_reader_lost(self._open()))
        new, self._reported = total - self._reported, total
        return new

    def close(self) -> None:
        """Free the reader. A lent batch still out is given back (kept first if it is
        referenced); the copies of kept batches that are still referenced stay mapped."""
        with self._lock:
            if self._ptr is not None:
                self._give_back()
                self._drop_kept()
                lib.igr_reader_free(self._ptr)
                self._ptr = None
