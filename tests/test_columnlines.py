"""The C columns writer gives what formatting each row in Python gives, byte for byte."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest

from igrun.core.events.schema import Batch, Column, Field, Kind, Schema
from igrun.core.output.columns import ColumnLines, cell_text, fit, format_value
from igrun.core.output.jsonlines import JsonLines
from igrun.core.output.printable import printable

DTYPE = np.dtype(
    [("pid", "<u4"), ("ret", "<i4"), ("comm", "S16"), ("ok", "u1"), ("big", "<u8"), ("s8", "i1")]
)


def reference(batch: Batch, fields: list[Field], widths: list[int], tag: str | None) -> str:
    """The row-at-a-time formatting the C writer replaces."""
    last = len(fields) - 1
    cols = []
    for i, (f, width) in enumerate(zip(fields, widths, strict=True)):
        texts = [format_value(f.kind, v) for v in batch.values(f.name)]
        as_is = i == last and f.column.align == "left"
        cols.append(texts if as_is else [fit(t, width, f) for t in texts])
    lines = [" ".join(row).rstrip() for row in zip(*cols, strict=True)]
    if tag:
        lines = [f"{tag:<22} {line}" for line in lines]
    return "".join(line + "\n" for line in lines)


def field(name: str, kind: Kind, width: int = 0, **column: object) -> Field:
    return Field(name, kind, column=Column(width=width, **column))  # type: ignore[arg-type]


FIELDS = [
    field("pid", Kind.UINT, 7, align="right"),
    field("ret", Kind.INT, 4, align="right", ellipsis="start"),
    field("comm", Kind.STR, 6, ellipsis="middle"),
    field("ok", Kind.BOOL, 4),
    field("big", Kind.UINT, 12, ellipsis="none"),
    field("s8", Kind.INT, 3),
    field("runtime.containerName", Kind.STR, 8),
    field("args", Kind.LIST, 10),
    field("ratio", Kind.FLOAT, 5, align="right"),
    field("tail", Kind.STR, 5),
]


@pytest.fixture
def batch() -> Batch:
    raw = np.zeros(6, DTYPE)
    raw["pid"] = [1, 22, 333, 4294967295, 0, 1234567]
    raw["ret"] = [-1, 0, 12345, -2147483648, 2147483647, -22]
    raw["comm"] = [b"bash", b"a-long-command!", b"caf\xc3\xa9", b"\xff\xfe", b"", b"x y "]
    raw["ok"] = [0, 1, 2, 0, 255, 1]
    raw["big"] = [0, 10**12 - 1, 10**12, 2**64 - 1, 5, 10**17]
    raw["s8"] = [-128, 127, 0, -1, 1, -10]
    b = Batch(Schema(FIELDS, "event", DTYPE), raw)
    names = ["web", "", "wéb", "a-very-long-name", "db", "web"]
    b.set_column("runtime.containerName", np.array(names, dtype=object))
    args = np.empty(6, dtype=object)
    args[:] = [["ls", "-l"], [], ["b"], ["\x01"], ["é", "ü"], ["x"]]
    b.set_column("args", args)
    b.set_column("ratio", np.array([1.5, 0.1, 1e300, -0.0, 3.0, 2.25]))
    # trailing blanks of every kind Python's rstrip removes, and a blank last cell
    tails = ["end", "nbsp\u00a0", "ideo\u3000", " ", "", "t\t"]
    b.set_column("tail", np.array(tails, dtype=object))
    return b


@pytest.mark.parametrize("tag", [None, "trace exec"])
def test_every_kind_fits_as_python_does(batch: Batch, tag: str | None) -> None:
    widths = [f.width for f in FIELDS]
    got = bytes(ColumnLines(FIELDS, widths, tag).encode(batch)).decode()
    assert got == reference(batch, FIELDS, widths, tag)
    assert "…" in got  # cuts happened


def test_narrow_columns_cut_numbers_every_way(batch: Batch) -> None:
    fields = [
        field("pid", Kind.UINT, 3, align="right"),
        field("ret", Kind.INT, 3, ellipsis="start"),
        field("big", Kind.UINT, 5, ellipsis="middle"),
        field("s8", Kind.INT, 1),
        field("ok", Kind.BOOL, 3, align="right"),
        field("comm", Kind.STR, 1),
    ]
    widths = [3, 3, 5, 1, 3, 4]
    got = bytes(ColumnLines(fields, widths).encode(batch)).decode()
    assert got == reference(batch, fields, widths, None)


def test_coded_reordered_strided_and_empty(batch: Batch) -> None:
    codes = np.array([1, -1, 0, 1, -1, 0])
    batch.set_coded("runtime.containerName", np.array(["web", "db", ""], dtype=object), codes)
    widths = [f.width for f in FIELDS]
    writer = ColumnLines(FIELDS, widths)
    taken = batch.take(np.array([5, 3, 0]))
    assert bytes(writer.encode(taken)).decode() == reference(taken, FIELDS, widths, None)
    strided = Batch(batch.schema, batch.raw[::2])
    members = FIELDS[:6]
    plain = ColumnLines(members, widths[:6])
    assert bytes(plain.encode(strided)).decode() == reference(strided, members, widths[:6], None)
    assert bytes(writer.encode(batch.take(np.zeros(6, bool)))) == b""
    # A table of one text is every row's, whatever its code (0, or -1 from the end).
    batch.set_coded(
        "runtime.containerName", np.array([""], dtype=object), np.where(codes < 0, -1, 0)
    )
    assert bytes(writer.encode(batch)).decode() == reference(batch, FIELDS, widths, None)


HOSTILE = [
    "x\r\x1b[2K",
    "a\nb\tc\\d",
    "\x00\x7f\x9b2J",
    "rtl\u202eevil\u2066",
    "line\u2028para\u2029nel\x85",
    "\ud800lone",
]
SHOWN = [
    "x\\r\\x1b[2K",
    "a\\nb\\tc\\\\d",
    "\\x00\\x7f\\u009b2J",
    "rtl\\u202eevil\\u2066",
    "line\\u2028para\\u2029nel\\u0085",
    "\\ud800lone",
]


def test_text_is_escaped_visibly_in_one_scheme() -> None:
    assert [printable(t) for t in HOSTILE] == SHOWN
    assert [format_value(Kind.STR, t) for t in HOSTILE] == SHOWN
    assert format_value(Kind.LIST, ["x\r", "\x1b[2K"]) == "x\\r \\x1b[2K"
    assert printable("plain café 東京 \u00a0") == "plain café 東京 \u00a0"
    # widths count the escapes: what is shown is what is fitted
    f = field("comm", Kind.STR, 6)
    assert fit(format_value(Kind.STR, "\x1b[2J"), 6, f) == "\\x1b[…"


BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def unsafe(text: str) -> list[str]:
    """What a terminal acts on, by Unicode's own categories (not by the code under test):
    controls (line feeds apart), line and paragraph separators, surrogates, bidi controls."""
    return [
        c
        for c in text
        if c != "\n" and (unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs") or c in BIDI)
    ]


def unsafe_bytes(data: bytes) -> list[str]:
    return unsafe(data.decode())


def test_every_code_point_is_shown_safely_and_as_python_does() -> None:
    """All of the Basic Multilingual Plane and a few beyond, one per row, through the C
    writer: equal to the reference, nothing unsafe, and only the chosen ones escaped."""
    points = [*range(0x3000), *range(0xD7F0, 0xE010), *range(0xFFF0, 0x10000), 0x1F600]
    texts = [chr(p) for p in points]
    fields = [field("comm", Kind.STR, 6), field("tail", Kind.STR, 3)]
    raw = np.zeros(len(texts), DTYPE)
    b = Batch(Schema(fields, "event", DTYPE), raw)
    b.set_column("comm", np.array(texts, dtype=object))
    b.set_column("tail", np.array(texts, dtype=object))
    got = bytes(ColumnLines(fields, [6, 3]).encode(b)).decode()
    assert got == reference(b, fields, [6, 3], None)
    assert unsafe(got) == []
    escaped = {t for t in texts if printable(t) != t}
    assert escaped == {t for t in texts if unsafe(t) or t in "\n\\"}


@pytest.mark.parametrize("tag", [None, "trace exec"])
def test_hostile_text_is_escaped_by_the_writer_as_by_python(batch: Batch, tag: str | None) -> None:
    """Event text (a char array and decoded columns) with controls: the C writer's lines are
    the reference's, and no raw control reaches them; rows stay one line each."""
    raw = batch.raw
    raw["comm"] = [b"x\r\x1b[2K", b"\x1b]0;t\x07", b"ok", b"\x7f\xc2\x9b", b"", b"t\n"]
    hostile = Batch(batch.schema, raw)
    hostile.set_column("runtime.containerName", np.array(HOSTILE, dtype=object))
    args = np.empty(6, dtype=object)
    args[:] = [[h] for h in HOSTILE]
    hostile.set_column("args", args)
    hostile.set_column("ratio", np.zeros(6))
    hostile.set_column("tail", np.array(HOSTILE[::-1], dtype=object))
    widths = [f.width for f in FIELDS]
    for fields in (FIELDS, FIELDS[:7]):  # the last column cut, and as it is
        got = bytes(ColumnLines(fields, widths[: len(fields)], tag).encode(hostile))
        assert got.decode() == reference(hostile, fields, widths[: len(fields)], tag)
        assert unsafe_bytes(got) == []
        assert got.count(b"\n") == 6
    got = bytes(ColumnLines(FIELDS, widths).encode(hostile)).decode()
    first = got.splitlines()[0].split()
    assert first[2:3] == ["x\\…[2K"]  # comm: its escaped text fitted to 6, cut in the middle
    assert first[6:8] == ["x\\r\\x1b…", "x\\r\\x1b[2K"]  # name cut at 8; args whole
    assert first[-1] == "\\ud800lone"  # the last column, whole


def test_errnos_by_name_in_columns_and_numbers_in_json() -> None:
    """An errno column shows the name (``ENOENT``), a returned one too (``-2``); values that
    are no error stay numbers; JSON keeps the number, as ``ig`` writes it."""
    dtype = np.dtype([("ret", "<i4"), ("err", "<i4"), ("flag", "u1")])
    fields = [
        field("ret", Kind.INT, 7, align="right", errno="returned"),
        field("err", Kind.INT, 7, align="right", errno="positive"),
    ]
    raw = np.zeros(5, dtype)
    raw["ret"] = [0, -2, -13, 3, -4095]
    raw["err"] = [0, 2, 13, -1, 4095]
    b = Batch(Schema(fields, "event", dtype), raw)
    text = bytes(ColumnLines(fields, [7, 7]).encode(b)).decode()
    assert text.splitlines() == [
        "      0       0",
        " ENOENT  ENOENT",
        " EACCES  EACCES",
        "      3      -1",
        "  -4095    4095",
    ]
    assert [cell_text(fields[0], v) for v in (-2, 0)] == ["ENOENT", "0"]
    assert JsonLines(fields).encode(b).tobytes().splitlines()[1] == b'{"ret":-2,"err":2}'


def test_byte_counts_as_ig_sizes_in_columns_and_numbers_in_json() -> None:
    """A ``units="bytes"`` column shows go-units' ``BytesSize`` (powers of 1024, four
    significant digits), as ``ig``'s top gadgets do; JSON keeps the number."""
    dtype = np.dtype([("sent", "<u8")])
    fields = [field("sent", Kind.UINT, 9, align="right", units="bytes")]
    raw = np.zeros(6, dtype)
    raw["sent"] = [0, 1000, 1024, 100000, 10 * 2**20, 2**64 - 1]
    b = Batch(Schema(fields, "event", dtype), raw)
    text = bytes(ColumnLines(fields, [9]).encode(b)).decode()
    assert text.splitlines() == [
        "       0B",
        "    1000B",
        "     1KiB",
        " 97.66KiB",
        "    10MiB",
        "    16EiB",
    ]
    assert JsonLines(fields).encode(b).tobytes().splitlines()[3] == b'{"sent":100000}'


def test_args_the_kernel_cut_end_with_a_mark() -> None:
    """As ``execsnoop``: `` ...`` after arguments the kernel cut (the row's flag), in any
    column position; ``…`` stays the columns output's own cut."""
    dtype = np.dtype([("truncated", "u1"), ("pid", "<u4")])
    fields = [
        Field("truncated", Kind.BOOL, column=Column(hidden=True)),
        field("args", Kind.LIST, 12, cut_by="truncated"),
        field("pid", Kind.UINT, 3),
    ]
    raw = np.zeros(3, dtype)
    raw["truncated"] = [0, 1, 1]
    b = Batch(Schema(fields, "event", dtype), raw)
    args = np.empty(3, dtype=object)
    args[:] = [["ls", "-l"], ["echo", "a"], ["a" * 20]]
    b.set_column("args", args)
    shown = [fields[1], fields[2]]
    lines = bytes(ColumnLines(shown, [12, 3]).encode(b)).decode().splitlines()
    assert lines == ["ls -l        0", "echo a ...   0", "aaaaaaa… ... 0"]  # both cuts show
    last = bytes(ColumnLines(shown[:1], [12]).encode(b)).decode().splitlines()
    assert last == ["ls -l", "echo a ...", "a" * 20 + " ..."]
