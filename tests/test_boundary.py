"""The Python/C boundary checks what it is handed.

Every buffer Python gives C is as long as what C, or the kernel behind it, will read or write;
every name comes back whole; every size C computes is overflow-checked. Each test here hands
over something that does not fit and expects a clear error instead of a call that reads or
writes out of bounds (before these checks, most of them corrupted memory silently).
"""

from __future__ import annotations

import errno
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.objects import (
    BpfObject,
    Map,
    MapType,
    Reader,
    SizeError,
    check_lost_counter,
    ffi,
    lib,
    possible_cpus,
)
from igrun.core.errors import BpfError
from igrun.core.events.schema import Batch, Field, Kind, Schema
from igrun.core.output.cbuffers import TOO_BIG, DescriptionError, check_table, texts_table
from igrun.core.output.columns import ColumnLines
from igrun.core.output.jsonlines import JsonLines

U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

# ---- maps --------------------------------------------------------------------------------


@pytest.fixture
def hash_map() -> Iterator[Map]:
    m = Map.create(MapType.HASH, "igrt_bound", 4, 8, 16)
    yield m
    m.close()


@pytest.mark.bpf
@pytest.mark.parametrize("key", [b"", b"\1\2\3", b"\1\2\3\4\5"])
def test_a_key_of_the_wrong_length_never_reaches_the_kernel(hash_map: Map, key: bytes) -> None:
    """A short key would have the kernel read past it (a long one: the wrong key)."""
    hash_map.update(U32.pack(1), U64.pack(7))
    for call in (
        lambda: hash_map.lookup(key),
        lambda: hash_map.update(key, U64.pack(1)),
        lambda: hash_map.delete(key),
    ):
        with pytest.raises(SizeError, match=f"map igrt_bound: key: {len(key)} bytes given, "
                           "the map takes 4"):  # fmt: skip
            call()
    assert dict(hash_map.items()) == {U32.pack(1): U64.pack(7)}


@pytest.mark.bpf
@pytest.mark.parametrize("value", [b"", b"\1\2\3\4", bytes(9)])
def test_a_value_of_the_wrong_length_is_refused(hash_map: Map, value: bytes) -> None:
    with pytest.raises(SizeError, match=f"value: {len(value)} bytes given, the map takes 8"):
        hash_map.update(U32.pack(1), value)
    assert hash_map.lookup(U32.pack(1)) is None
    # Both are ValueErrors (a caller's mistake) and BpfErrors (one line for a user).
    with pytest.raises(ValueError):
        hash_map.update(U32.pack(1), value)
    with pytest.raises(BpfError):
        hash_map.update(U32.pack(1), value)


@pytest.mark.bpf
def test_per_cpu_values_are_rounded_to_8_bytes_per_possible_cpu() -> None:
    """The kernel copies round8(value_size) bytes per possible CPU: one value_size is short."""
    ncpus = possible_cpus()
    m = Map.create(MapType.PERCPU_ARRAY, "igrt_percpu", 4, 4, 2)
    try:
        assert m.value_len == 8 * ncpus
        with pytest.raises(SizeError, match=f"value: 4 bytes given, the map takes {8 * ncpus}"):
            m.update(U32.pack(0), U32.pack(5))
        per_cpu = b"".join(U32.pack(10 + cpu) + b"\0" * 4 for cpu in range(ncpus))
        m.update(U32.pack(1), per_cpu)
        assert m.lookup_per_cpu(U32.pack(1)) == [U32.pack(10 + cpu) for cpu in range(ncpus)]
        # The batch lookup of an array (its token is one key) sizes every buffer the same way.
        items = dict(m.items())
        assert items[U32.pack(1)] == per_cpu and items[U32.pack(0)] == bytes(8 * ncpus)
    finally:
        m.close()


@pytest.mark.bpf
def test_c_checks_batch_lookup_buffers_against_the_map(hash_map: Map) -> None:
    """igr_map_lookup_batch knows the map's sizes: buffers too small for `count` entries, or a
    token smaller than a key, are refused before the kernel writes into them."""
    hash_map.update(U32.pack(1), U64.pack(7))
    count = ffi.new("unsigned int *", 4)
    keys, values, token = ffi.new("char[]", 16), ffi.new("char[]", 32), ffi.new("char[]", 8)

    def call(keys_size: int, values_size: int, token_size: int) -> int:
        count[0] = 4
        return int(
            lib.igr_map_lookup_batch(
                hash_map.fd, ffi.NULL, token, token_size, keys, keys_size, values, values_size,
                count,
            )
        )  # fmt: skip

    assert call(15, 32, 8) == -errno.ENOSPC
    assert call(16, 31, 8) == -errno.ENOSPC
    assert call(16, 32, 3) == -errno.ENOSPC
    assert call(16, 32, 8) == -errno.ENOENT  # all of it in one batch: the end
    assert count[0] == 1 and bytes(ffi.buffer(values, 8)) == U64.pack(7)


@pytest.mark.bpf
def test_map_names_are_never_cut() -> None:
    with pytest.raises(SizeError, match="at most 15 bytes"):
        Map.create(MapType.HASH, "igrt_sixteen_chr", 4, 4, 1)
    with pytest.raises(SizeError, match="NUL"):
        Map.create(MapType.HASH, "igrt\0x", 4, 4, 1)
    m = Map.create(MapType.HASH, "igrt_fifteen_ch", 4, 4, 1)
    try:
        # Read back from the kernel into a buffer C checks: too small is an error, not a cut.
        info = [ffi.new("unsigned int *") for _ in range(5)]
        small = ffi.new("char[]", 15)
        assert lib.igr_map_info(m.fd, *info, small, 15) == -errno.ENAMETOOLONG
        assert Map(m.fd).name == "igrt_fifteen_ch"
    finally:
        m.close()


@pytest.mark.bpf
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((MapType.HASH, "igrt_neg", -1, 4, 1), "key size: -1 is out of range"),
        ((MapType.HASH, "igrt_big", 4, 1 << 32, 1), "value size: 4294967296 is out of range"),
        ((MapType.HASH, "igrt_max", 4, 4, -5), "max entries: -5 is out of range"),
        ((MapType.ARRAY, "igrt_flags", 4, 4, 1, 1 << 32), "flags: 4294967296 is out of range"),
    ],
)
def test_sizes_out_of_the_c_types_range_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(SizeError, match=message):
        Map.create(*args)


@pytest.mark.bpf
def test_the_drop_counter_must_have_the_readers_layout() -> None:
    """The reader reads one u64 per possible CPU at key 0: anything else is refused."""
    good = Map.create(MapType.PERCPU_ARRAY, "igrt_lost_ok", 4, 8, 1)
    wide = Map.create(MapType.PERCPU_ARRAY, "igrt_lost_wide", 4, 32, 1)
    shared = Map.create(MapType.ARRAY, "igrt_lost_arr", 4, 8, 1)
    ring = Map.create(MapType.RINGBUF, "igrt_lost_ring", 0, 0, 4096)
    try:
        check_lost_counter(good)
        with pytest.raises(BpfError) as refused:
            check_lost_counter(wide)
        assert str(refused.value) == (
            "map igrt_lost_wide must be a per-CPU array of 1 entry, u32 key, u64 value "
            "(igrun/buffer.h); it is a per-CPU array of 1 entry, 4-byte key, 32-byte value"
        )
        with pytest.raises(BpfError, match="it is a array of 1 entry"):
            check_lost_counter(shared)
        # The reader's own setup calls it: no C reader is made around a bad counter.
        with pytest.raises(BpfError, match="igrt_lost_wide must be a per-CPU array"):
            Reader.ring(ring, 8, lost_map=wide)
        Reader.ring(ring, 8, lost_map=good).close()
    finally:
        for m in (good, wide, shared, ring):
            m.close()


# ---- objects: names whole, globals exact ---------------------------------------------------

LONG = "x" * 100
MANY_MEMBERS = 300
MANY_GLOBALS = 200  # 200 names of ~90 bytes: more than the first 4 KiB C is offered


def _names_source() -> str:
    members = "\n".join(f"\t__u8 m{i};" for i in range(MANY_MEMBERS))
    globals_ = "\n".join(f"__u32 g{i:03d}_{'y' * 84} = {i};" for i in range(MANY_GLOBALS))
    return f"""// SPDX-License-Identifier: GPL-2.0
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>

typedef __u32 type_with_a_very_long_name_{LONG};

struct long_names {{
\ttype_with_a_very_long_name_{LONG} member_{LONG};
\t__u64 tail;
}};

struct many {{
{members}
}};

struct long_names long_names_global;
struct many many_global;
__u64 wide_global = 1;
{globals_}

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_names(void *ctx)
{{
\treturn long_names_global.tail + many_global.m0;
}}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.fixture(scope="module")
def names_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("boundary")
    source = out / "names.bpf.c"
    source.write_text(_names_source())
    return compile_bpf(source, out / "names.bpf.o", build_dir=out / "b")


@pytest.mark.bpf
def test_member_names_and_member_counts_are_not_limited(names_object: Path) -> None:
    """Names past 63 bytes came back cut, and a struct of more than 256 members failed."""
    with BpfObject.open(names_object) as obj:
        dtype = obj.struct_dtype("long_names")
        assert dtype.names == (f"member_{LONG}", "tail")
        many = obj.struct_dtype("many")
        assert many.names == tuple(f"m{i}" for i in range(MANY_MEMBERS))
        assert many.itemsize == MANY_MEMBERS


@pytest.mark.bpf
def test_every_global_name_comes_back_whole(names_object: Path) -> None:
    with BpfObject.open(names_object) as obj:
        names = obj.global_names()
        wanted = {f"g{i:03d}_{'y' * 84}" for i in range(MANY_GLOBALS)}
        assert wanted <= set(names)
        assert {"long_names_global", "many_global", "wide_global"} <= set(names)
        # C says how much room all of them need when it is given too little.
        needed = sum(len(n.encode()) + 1 for n in names)
        small = ffi.new("char[]", 64)
        assert lib.igr_global_names(obj._obj(), small, 64) == needed
        # The error for an unknown name lists them all, whole.
        with pytest.raises(BpfError, match=f"g{MANY_GLOBALS - 1:03d}_{'y' * 84}"):
            obj.set_global("nope", 1)


@pytest.mark.bpf
def test_set_global_takes_exactly_the_variables_size(names_object: Path) -> None:
    with BpfObject.open(names_object) as obj:
        assert obj.global_size("wide_global") == 8
        with pytest.raises(SizeError, match="global wide_global is 8 bytes, 4 given"):
            obj.set_global("wide_global", b"\1\2\3\4")
        with pytest.raises(SizeError, match="does not fit global g000_"):
            obj.set_global(f"g000_{'y' * 84}", 1 << 32)
        with pytest.raises(SizeError, match="NUL"):
            obj.set_global("wide\0global", 1)
        obj.set_global("wide_global", 1 << 63)
        obj.set_global("wide_global", U64.pack(5))


@pytest.mark.bpf
def test_a_closed_object_and_a_destroyed_link_are_errors_not_null(names_object: Path) -> None:
    obj = BpfObject.open(names_object)
    prog = obj.programs["igrt_names"]
    obj.close()
    for call in (obj.map_names, obj.global_names, lambda: obj.has_map("x"), lambda: prog.fd):
        with pytest.raises(BpfError, match="the BPF object is closed"):
            call()
    with pytest.raises(SizeError, match="max entries"):
        BpfObject.open(names_object).set_max_entries("x", -1)


@pytest.mark.bpf
def test_a_struct_member_count_is_asked_for_before_the_array_is_made(names_object: Path) -> None:
    with BpfObject.open(names_object) as obj:
        size = ffi.new("unsigned int *")
        assert lib.igr_struct_members(obj._obj(), b"many", ffi.NULL, 0, size) == MANY_MEMBERS
        members = ffi.new("struct igr_member[]", 10)
        assert lib.igr_struct_members(obj._obj(), b"many", members, 10, size) == -errno.E2BIG


# ---- the writers ---------------------------------------------------------------------------

DTYPE = np.dtype([("pid", "<u4"), ("comm", "S8")])
FIELDS = [Field("pid", Kind.UINT), Field("comm", Kind.STR), Field("name", Kind.STR)]


def _batch(rows: int, column: np.ndarray) -> Batch:
    raw = np.zeros(rows, DTYPE)
    raw["pid"] = np.arange(rows)
    raw["comm"] = b"sh"
    # The constructor takes columns as they are (set_column checks their length).
    return Batch(Schema(FIELDS, "event", DTYPE), raw, columns={"name": column})


def test_writers_refuse_a_column_shorter_than_the_batch() -> None:
    """C reads one value per row: a column of 2 values for 64 rows was read past its end."""
    short_numbers = Field("n", Kind.UINT)
    fields = [*FIELDS, short_numbers]
    raw = np.zeros(64, DTYPE)
    batch = Batch(Schema(fields, "event", DTYPE), raw, columns={"n": np.arange(2, dtype="<u8")})
    with pytest.raises(DescriptionError, match="n: 2 values for 64 rows"):
        JsonLines([f for f in fields if f.name != "name"]).encode(batch)
    with pytest.raises(DescriptionError, match="n: 2 values for 64 rows"):
        ColumnLines([short_numbers], [8]).encode(batch)
    texts = _batch(64, np.array(["a", "b"], dtype=object))
    with pytest.raises(DescriptionError, match="name: 2 values for 64 rows"):
        JsonLines(FIELDS).encode(texts)
    with pytest.raises(DescriptionError, match="name: 2 values for 64 rows"):
        ColumnLines(FIELDS, [5, 8, 8]).encode(texts)
    # The same batch with a whole column goes through.
    whole = _batch(64, np.array(["a", "b"] * 32, dtype=object))
    assert bytes(JsonLines(FIELDS).encode(whole)).count(b"\n") == 64


def _json_col(kind: int, size: int, keep: list) -> object:
    col = ffi.new("struct igr_json_col *")
    prefix = ffi.new("char[]", b'{"x":')
    keep.append(prefix)
    col.prefix, col.prefix_len, col.kind, col.size = prefix, 5, kind, size
    values = np.zeros(4, dtype="<u8")
    keep.append(values)
    col.values, col.stride = ffi.from_buffer(values), 8
    return col


def test_c_writers_refuse_what_they_cannot_write() -> None:
    """An unknown kind was written as a table of texts (from a NULL table); an integer size
    of 3 read 8 bytes; a table whose offsets go backwards wrapped its length; row products
    wrapped around 64 bits. Each now gives 2^64 - 1 as its size, and no write."""
    keep: list = []
    out = ffi.new("char[]", 4096)
    suffix = b"}\n"
    for kind, size in [(9, 8), (lib.IGR_JSON_UINT, 3), (lib.IGR_JSON_WALL_TIME, 4)]:
        col = _json_col(kind, size, keep)
        assert lib.igr_json_bound(col, 1, 2, 1) == TOO_BIG
        assert lib.igr_json_lines(col, 1, ffi.NULL, 0, suffix, 2, 1, out, 4096) == -1
    col = _json_col(lib.IGR_JSON_UINT, 8, keep)
    # key, value, the commas a column may write (before its open and its key), suffix
    assert lib.igr_json_bound(col, 1, 2, 4) == 4 * (5 + 21 + 2 + 2)
    assert lib.igr_json_bound(col, 1, 2, 1 << 62) == TOO_BIG
    assert lib.igr_json_lines(col, 1, ffi.NULL, 0, suffix, 2, 4, out, 4096) > 0
    # An open text it has no pointer to, or more objects to close than any row opens.
    col.open_len = 3
    assert lib.igr_json_bound(col, 1, 2, 1) == TOO_BIG
    col.open_len, col.closes = 0, 65
    assert lib.igr_json_bound(col, 1, 2, 1) == TOO_BIG
    col.closes = 0
    # A table of texts whose offsets go backwards.
    blob, offsets, pointer, count = texts_table([b'"a"', b'"bc"'])
    offsets[1:] = [3, 1]
    text = _json_col(lib.IGR_JSON_TEXT, count, keep)
    text.texts, text.offsets = blob, pointer
    assert lib.igr_json_bound(text, 1, 2, 1) == TOO_BIG
    # The columns writer: a cell width near 2^32 wrapped to 1 in its bound.
    cell = ffi.new("struct igr_cell_col *")
    cell.kind, cell.size, cell.width, cell.fit = lib.IGR_JSON_UINT, 8, 0xFFFFFFFF, lib.IGR_FIT_LEFT
    values = np.zeros(1, dtype="<u8")
    cell.values, cell.stride = ffi.from_buffer(values), 8
    assert lib.igr_column_bound(cell, 1, 0, 1) > 0xFFFFFFFF
    assert lib.igr_column_lines(cell, 1, ffi.NULL, 0, b"", 0, 1, out, 4096) == -1
    cell.size = 5
    assert lib.igr_column_bound(cell, 1, 0, 1) == TOO_BIG


def test_the_output_buffer_refuses_an_impossible_size() -> None:
    from igrun.core.output.cbuffers import OutputBuffer

    buf = OutputBuffer()
    with pytest.raises(DescriptionError):
        buf.reserve(TOO_BIG)
    buf.reserve(16)
    with pytest.raises(DescriptionError):
        buf.written(1 << 20)


def test_a_table_of_texts_must_match_its_blob() -> None:
    table = texts_table([b"ab", b"cde"])
    check_table("t", table)
    blob, offsets, pointer, count = table
    with pytest.raises(DescriptionError, match="t: a table of 2 texts is inconsistent"):
        check_table("t", (blob, offsets[:2], pointer, count))
    longer = offsets.copy()
    longer[-1] = 99  # past the end of the 5 bytes of texts
    with pytest.raises(DescriptionError):
        check_table("t", (blob, longer, pointer, count))


def test_a_long_libbpf_message_is_logged_whole(tmp_path: Path) -> None:
    """libbpf's messages were formatted into 1 KiB and cut there."""
    missing = tmp_path.joinpath(*["d" * 100] * 15, "x.bpf.o")
    code = (
        "import sys\n"
        "from igrun.core.bpf.objects import BpfObject\n"
        "from igrun.core.errors import BpfError\n"
        "try:\n"
        "    BpfObject.open(sys.argv[1])\n"
        "except BpfError:\n"
        "    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(missing)], capture_output=True, text=True, timeout=30
    )
    (line,) = [x for x in done.stderr.splitlines() if "libbpf: elf: failed to open" in x]
    assert len(line) > 1500
    assert f"failed to open {missing}: " in line


@pytest.mark.bpf
def test_map_flags_reach_the_kernel() -> None:
    """``BPF_F_INNER_MAP`` (traceloop's rings, put into a map of maps whatever their size:
    test_traceloop) is taken for an array, and refused, with the map named, for a map type
    it does not apply to: the flags are passed, not dropped."""
    import struct

    from igrun.core.bpf.objects import BPF_F_INNER_MAP
    from igrun.core.errors import BpfError

    inner = Map.create(MapType.ARRAY, "igrt_inner", 4, 8, 1000, BPF_F_INNER_MAP)
    try:
        inner.update(struct.pack("<I", 999), struct.pack("<Q", 7))
        assert inner.lookup(struct.pack("<I", 999)) == struct.pack("<Q", 7)
    finally:
        inner.close()
    with pytest.raises(BpfError, match="cannot create map igrt_badflag"):
        Map.create(MapType.PERCPU_ARRAY, "igrt_badflag", 4, 8, 1, BPF_F_INNER_MAP)
