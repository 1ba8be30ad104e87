"""The C JSON lines writer gives exactly what json.dumps gives, row for row."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from igrun.core.events.fields import timestamp
from igrun.core.events.schema import Batch, Field, Kind, Schema
from igrun.core.output.jsonlines import JsonLines

DTYPE = np.dtype(
    [("pid", "<u4"), ("ret", "<i4"), ("comm", "S16"), ("ok", "u1"), ("ts", "<u8"), ("s8", "i1")]
)
FIELDS = [
    Field("pid", Kind.UINT),
    Field("ret", Kind.INT),
    Field("comm", Kind.STR),
    Field("ok", Kind.BOOL),
    Field("ts", Kind.TIME),
    Field("s8", Kind.INT),
    Field("runtime.containerName", Kind.STR),
    Field("runtime.args", Kind.LIST),
    Field("k8s.pod", Kind.STR),
    Field("ratio", Kind.FLOAT),
    Field("shown", Kind.STR, json="-"),
]


def reference(batch: Batch, fields: list[Field]) -> str:
    rows = batch.to_dicts(fields)
    return "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)


@pytest.fixture
def batch() -> Batch:
    raw = np.zeros(5, DTYPE)
    raw["pid"] = [1, 2, 3, 4294967295, 0]
    raw["ret"] = [-1, 0, 5, -2147483648, 2147483647]
    raw["comm"] = [
        b"bash",
        b'qu"o\\te\n\t\x01\x7f',
        b"\xe2\x82caf\xc3\xa9\xed\xa0\x80\xf0\x9f\x98\x80",  # cut, valid, surrogate, emoji
        b"0123456789abcdef",  # full width, no NUL
        b"\xff\xfe\xc0\xaf\xf4\x90\x80",  # never valid
    ]
    raw["ok"] = [0, 1, 2, 0, 255]
    raw["ts"] = [0, 1, 2**64 - 1, 5, 10**18]
    raw["s8"] = [-128, 127, 0, -1, 1]
    b = Batch(Schema(FIELDS, "event", DTYPE), raw)
    b.set_column("runtime.containerName", np.array(["web", "", "wéb", "web", '"'], dtype=object))
    args = np.empty(5, dtype=object)
    args[:] = [["a"], [], ["b", "c"], ["\x01"], ["é"]]
    b.set_column("runtime.args", args)
    b.set_column("k8s.pod", np.array(["p"] * 5, dtype=object))
    b.set_column("ratio", np.array([1.5, 0.1, 1e300, -0.0, 3.0]))
    b.set_column("shown", np.array(["h"] * 5, dtype=object))
    return b


def test_every_kind_matches_json_dumps(batch: Batch) -> None:
    got = bytes(JsonLines(FIELDS).encode(batch)).decode()
    assert got == reference(batch, FIELDS)
    assert json.loads(got.splitlines()[2])["comm"] == "\ufffdcafé\ufffd\ufffd\ufffd😀"


def test_rows_taken_and_reordered(batch: Batch) -> None:
    taken = batch.take(np.array([4, 0, 2]))
    assert bytes(JsonLines(FIELDS).encode(taken)).decode() == reference(taken, FIELDS)


def test_a_column_selection_and_an_operator_replacing_a_member(batch: Batch) -> None:
    batch.set_column("comm", np.array(["x", "y", "z", "w", "v"], dtype=object))
    fields = [FIELDS[2], FIELDS[0]]
    assert bytes(JsonLines(fields).encode(batch)).decode() == reference(batch, fields)
    assert bytes(JsonLines(fields).encode(batch.take(np.zeros(5, bool)))) == b""


def test_no_fields_gives_empty_objects(batch: Batch) -> None:
    assert bytes(JsonLines([]).encode(batch)) == b"{}\n" * 5


def test_coded_columns_are_written_without_being_built(batch: Batch) -> None:
    table = np.array(["web", "db", ""], dtype=object)
    batch.set_coded("runtime.containerName", table, np.array([0, 1, -1, 0, 2]))
    got = bytes(JsonLines(FIELDS).encode(batch.take(np.array([4, 2, 1])))).decode()
    assert "runtime.containerName" not in batch._columns
    assert got == reference(batch.take(np.array([4, 2, 1])), FIELDS)
    assert [json.loads(line)["runtime"]["containerName"] for line in got.splitlines()] == [
        "",
        "",
        "db",
    ]


def test_equal_values_of_other_types_stay_apart(batch: Batch) -> None:
    mixed = np.empty(5, dtype=object)
    mixed[:] = [True, 1, 1.0, False, 0]
    batch.set_column("k8s.pod", mixed)
    got = bytes(JsonLines(FIELDS).encode(batch)).decode()
    assert [json.loads(line)["k8s"]["pod"] for line in got.splitlines()] == [True, 1, 1.0, False, 0]
    assert got == reference(batch, FIELDS)


def test_negative_zero_keeps_its_sign_across_batches(batch: Batch) -> None:
    """A writer keeps tables by content, and ``-0.0 == 0.0``: a later batch's ``0.0`` must
    not take the text of an earlier ``-0.0``, alone or beside another coded column."""
    writer = JsonLines(FIELDS)
    codes = np.zeros(5, dtype=np.int32)
    for zero in (-0.0, 0.0, -0.0):
        batch.set_coded("k8s.pod", np.array([zero], dtype=object), codes)
        got = bytes(writer.encode(batch)).decode()
        assert got == reference(batch, FIELDS)
        batch.set_coded_group(
            {
                "k8s.pod": np.array([zero], dtype=object),
                "runtime.containerName": np.array([zero], dtype=object),
            },
            codes,
        )
        assert bytes(writer.encode(batch)).decode() == reference(batch, FIELDS)


def test_columns_sharing_codes_and_a_strided_batch(batch: Batch) -> None:
    """Enrichers give several columns the same codes (converted once); records that are a
    strided view, not one block, are read member by member; one writer serves both."""
    codes = np.array([1, -1, 0, 1, -1])
    batch.set_coded("runtime.containerName", np.array(["web", "db", ""], dtype=object), codes)
    batch.set_coded("k8s.pod", np.array(["p-web", "p-db", ""], dtype=object), codes)
    writer = JsonLines(FIELDS)
    assert bytes(writer.encode(batch)).decode() == reference(batch, FIELDS)
    strided = Batch(batch.schema, batch.raw[::2])
    assert not strided.raw.flags.c_contiguous
    members = JsonLines(FIELDS[:6])
    assert bytes(members.encode(strided)).decode() == reference(strided, FIELDS[:6])
    assert bytes(members.encode(batch)).decode() == reference(batch, FIELDS[:6])
    # A table of one text is every row's, whatever its code (0, or -1 from the end).
    one = np.array([0, -1, 0, -1, 0])
    batch.set_coded("runtime.containerName", np.array(["solo"], dtype=object), one)
    got = bytes(writer.encode(batch)).decode()
    assert got == reference(batch, FIELDS)
    assert [json.loads(line)["runtime"]["containerName"] for line in got.splitlines()] == [
        "solo"
    ] * 5


def test_wall_time_from_a_boot_time_member_is_written_by_c() -> None:
    """A boot timestamp shows as wall time; C adds the offset (0 means now), as the decoder
    does: both take the clocks at their own moment, so they agree to well within a
    millisecond, not to the nanosecond."""
    dtype = np.dtype([("timestamp", "<u8"), ("pid", "<u4")])
    raw = np.zeros(3, dtype)
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    raw["timestamp"] = [boot - 5_000_000_000, 0, boot]
    raw["pid"] = [1, 2, 3]
    fields = [timestamp(), Field("pid", Kind.UINT)]
    batch = Batch(Schema(fields, "event", dtype), raw)
    writer = JsonLines(fields)
    got = [json.loads(line) for line in bytes(writer.encode(batch)).decode().splitlines()]
    want = batch.to_dicts(fields)
    assert [g["pid"] for g in got] == [1, 2, 3]
    for g, w in zip(got, want, strict=True):
        assert abs(g["timestamp"] - w["timestamp"]) < 1_000_000
    assert got[2]["timestamp"] - got[0]["timestamp"] == 5_000_000_000
    assert writer._layouts  # read in place, not through the decoder
    (layout,) = writer._layouts.values()
    assert layout.other == []


def test_integers_at_every_digit_count() -> None:
    """Integers are written in blocks of digits: each length, and each block edge."""
    unsigned = sorted({v for k in range(20) for v in (10**k - 1, 10**k, 10**k + 1)} | {2**64 - 1})
    unsigned = [v for v in unsigned if v < 2**64]
    signed = [v for v in (-x for x in unsigned) if v >= -(2**63)] + [-(2**63), 2**63 - 1]
    n = max(len(unsigned), len(signed))
    dtype = np.dtype([("u", "<u8"), ("i", "<i8")])
    raw = np.zeros(n, dtype)
    raw["u"][: len(unsigned)] = unsigned
    raw["i"][: len(signed)] = signed
    fields = [Field("u", Kind.UINT), Field("i", Kind.INT)]
    batch = Batch(Schema(fields, "event", dtype), raw)
    assert bytes(JsonLines(fields).encode(batch)).decode() == reference(batch, fields)


def test_empty_values_of_omit_empty_fields_are_left_out(batch: Batch) -> None:
    """Go's ``omitempty``, as ``ig`` writes events: an empty value of a marked field (0,
    false, "", an empty list) has no key, whether C reads it from the record, an operator's
    column or a coded group; its object stays (``"runtime":{}``); commas stay right."""
    fields = [
        Field(f.name, f.kind, f.description, f.member, f.json, f.column, f.decode, True)
        if f.name in ("pid", "ret", "comm", "ok", "runtime.containerName", "runtime.args")
        else f
        for f in FIELDS
    ]
    codes = np.array([1, -1, 0, 1, -1])
    batch.set_coded("runtime.containerName", np.array(["web", "", ""], dtype=object), codes)
    batch.set_coded("k8s.pod", np.array(["p-web", "", ""], dtype=object), codes)
    writer = JsonLines(fields, "trace x", "normal")
    got = bytes(writer.encode(batch)).decode()
    want = [{"gadget": "trace x", "type": "normal", **r} for r in batch.to_dicts(fields, True)]
    assert got == "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                          for r in want)  # fmt: skip
    rows = [json.loads(line) for line in got.splitlines()]
    assert [("pid" in r, "ret" in r, "ok" in r) for r in rows] == [
        (True, True, False),
        (True, False, True),
        (True, True, True),
        (True, True, False),
        (False, True, True),
    ]
    assert [r["runtime"] for r in rows][:3] == [
        {"args": ["a"]},
        {},
        {"containerName": "web", "args": ["b", "c"]},
    ]
    assert rows[0]["k8s"] == {"pod": ""}  # not marked: written empty
    # The same rows, read from an operator's column instead of codes.
    batch.set_column("runtime.containerName", np.array(["", "", "x", "", ""], dtype=object))
    got = bytes(writer.encode(batch)).decode()
    assert [json.loads(line)["runtime"] for line in got.splitlines()][1:3] == [
        {},
        {"containerName": "x", "args": ["b", "c"]},
    ]


def test_only_empty_fields_leave_only_the_lead() -> None:
    fields = [
        Field("n", Kind.UINT, omit_empty=True),
        Field("runtime.x", Kind.UINT, omit_empty=True),
    ]
    dtype = np.dtype([("n", "<u4")])
    batch = Batch(Schema(fields, "event", dtype), np.zeros(2, dtype))
    batch.set_column("runtime.x", np.zeros(2, dtype=np.uint32))
    assert bytes(JsonLines(fields, None, "normal").encode(batch)) == (
        b'{"type":"normal","runtime":{}}\n' * 2
    )
    assert bytes(JsonLines(fields).encode(batch)) == b'{"runtime":{}}\n' * 2


def test_order_is_gos_struct_order_with_additions_after(batch: Batch) -> None:
    """With an order (``ig``'s, as Go writes its struct): its keys in its order, an object
    where its first member is (its own additions after its named members), ``type`` where
    the order names it, the keys it does not name after every named one, in schema order;
    the values are those of the unordered writer, whichever way C reads them."""
    order = ("runtime", "runtime.args", "k8s", "k8s.pod", "ts", "type", "comm", "ok", "pid")
    writer = JsonLines(FIELDS, "trace x", "normal", order)
    lines = bytes(writer.encode(batch)).decode().splitlines()
    plain = bytes(JsonLines(FIELDS, "trace x", "normal").encode(batch)).decode().splitlines()
    for line, same in zip(lines, plain, strict=True):
        row = json.loads(line)
        assert row == json.loads(same)
        assert list(row) == [
            *("gadget", "runtime", "k8s", "ts", "type", "comm", "ok", "pid"),
            *("ret", "s8", "ratio"),  # not in the order: after it, in schema order
        ]
        assert list(row["runtime"]) == ["args", "containerName"]
    assert lines[0].startswith('{"gadget":"trace x","runtime":{"args":["a"],"containerName"')


def test_order_keeps_commas_right_around_omitted_keys() -> None:
    """A placed ``type`` between keys that may all be left out, and one after every named
    key: the comma before and after it is decided per row."""
    fields = [
        Field("n", Kind.UINT, omit_empty=True),
        Field("m", Kind.UINT, omit_empty=True),
        Field("runtime.x", Kind.UINT, omit_empty=True),
    ]
    dtype = np.dtype([("n", "<u4"), ("m", "<u4")])
    raw = np.zeros(4, dtype)
    raw["n"] = [0, 1, 0, 1]
    raw["m"] = [0, 0, 2, 2]
    batch = Batch(Schema(fields, "event", dtype), raw)
    batch.set_column("runtime.x", np.array([0, 0, 0, 3], dtype=np.uint32))
    got = bytes(JsonLines(fields, None, "normal", ("n", "type", "m", "runtime")).encode(batch))
    assert got.decode().splitlines() == [
        '{"type":"normal","runtime":{}}',  # the order names the object, not its member
        '{"n":1,"type":"normal","runtime":{}}',
        '{"type":"normal","m":2,"runtime":{}}',
        '{"n":1,"type":"normal","m":2,"runtime":{"x":3}}',
    ]
    # No order names type: after the named keys (here the last, after an object).
    got = bytes(JsonLines(fields, "g", "normal", ("runtime", "n", "m")).encode(batch))
    assert got.decode().splitlines()[0] == '{"gadget":"g","runtime":{},"type":"normal"}'
    # Last after keys that may all be left out: it cannot know the comma, so goes first.
    got = bytes(JsonLines(fields[:2], None, "normal", ("n", "m")).encode(batch))
    assert got.decode().splitlines()[:2] == ['{"type":"normal"}', '{"type":"normal","n":1}']
