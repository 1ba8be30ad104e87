"""Fuzzing the C writers against their Python references: random batches (integers of every
width and sign at their extremes, C strings with any bytes, NULs and invalid UTF-8, text with
control characters, lists, floats, mixed objects, coded columns that share codes, rows taken
and reordered, strided records), each written by ``JsonLines`` and ``ColumnLines`` and
compared byte for byte with ``json.dumps`` of :meth:`Batch.to_dicts` and with the row-by-row
columns formatting (``format_value`` and ``fit``). The references are the specification:
whatever escaping they do, the C writers must do the same."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fuzzlab import fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st
from test_columnlines import reference

from igrun.core.events.schema import Batch, Column, Field, Kind, Schema
from igrun.core.output.columns import ColumnLines
from igrun.core.output.jsonlines import JsonLines

FUZZ = fuzz_settings(120)

INTS = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8"]
GROUPS = ["runtime", "k8s"]
WIDEST = st.text(st.characters(codec="utf-8"), max_size=12)
"""Text as containers and operators give it: any character that UTF-8 can carry (control
characters, bidi controls, NUL, astral). Lone surrogates have a JSON test of their own below;
the columns output shows them only once escaped."""
COLUMN_TEXT = st.one_of(WIDEST, st.sampled_from(["", " ", "a\tb", "\x1b[2K", "é", "😀"]))


@functools.cache
def extremes(dtype: str) -> st.SearchStrategy[int]:
    """Integers of ``dtype``, its limits and their neighbours often."""
    info = np.iinfo(np.dtype(dtype))
    edges = [info.min, info.max, 0, 1, info.max // 2]
    if info.min < 0:
        edges += [-1, info.min + 1]
    return st.one_of(st.sampled_from(edges), st.integers(int(info.min), int(info.max)))


@dataclass
class Spec:
    """A schema to fuzz with: the record layout, the fields (members and columns beside
    them), and what each extra column holds."""

    dtype: np.dtype[Any]
    fields: list[Field]
    extra: dict[str, str]
    """field name -> what its values are: "str", "list", "float", "mixed", "num:<dtype>"."""


def json_key(draw: st.DrawFn, name: str) -> str | None:
    """A flat key, a key inside a group (``runtime.x``), or ``-`` (not in JSON)."""
    where = draw(st.integers(0, 5))
    if where == 0:
        return "-"
    if where == 1:
        return f"{draw(st.sampled_from(GROUPS))}.{name}"
    return None


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    members: list[tuple[str, str]] = []
    fields: list[Field] = []
    for i in range(draw(st.integers(0, 6))):
        name = f"m{i}"
        if draw(st.integers(0, 3)) == 0:
            members.append((name, f"S{draw(st.integers(1, 24))}"))
            kind = Kind.STR
        else:
            code = draw(st.sampled_from(INTS))
            members.append((name, "<" + code))
            kinds = [Kind.INT if code[0] == "i" else Kind.UINT, Kind.BOOL]
            if code[1] == "8":
                kinds.append(Kind.TIME)
            kind = draw(st.sampled_from(kinds))
        # A field named otherwise than its member, now and then.
        field_name = f"f{i}" if draw(st.integers(0, 4)) == 0 else name
        member = name if field_name != name else None
        fields.append(
            Field(
                field_name,
                kind,
                member=member,
                json=json_key(draw, field_name),
                omit_empty=draw(st.booleans()),
            )
        )
    # Padding between members, as C leaves it.
    offsets, at = [], 0
    for _, fmt in members:
        at += draw(st.sampled_from([0, 0, 1, 3]))
        offsets.append(at)
        at += np.dtype(fmt).itemsize
    dtype = np.dtype(
        {
            "names": [n for n, _ in members],
            "formats": [f for _, f in members],
            "offsets": offsets,
            "itemsize": at + draw(st.integers(0, 4)),
        }
    )
    extra: dict[str, str] = {}
    for j in range(draw(st.integers(0, 5))):
        name = f"c{j}"
        what = draw(st.sampled_from(["str", "list", "float", "mixed", *[f"num:{c}" for c in INTS]]))
        if what == "str":
            kind = Kind.STR
        elif what == "list":
            kind = Kind.LIST
        elif what == "float":
            kind = Kind.FLOAT
        elif what == "mixed":
            kind = Kind.STR
        else:
            kind = draw(st.sampled_from([Kind.INT, Kind.UINT, Kind.BOOL]))
        extra[name] = what
        fields.append(Field(name, kind, json=json_key(draw, name), omit_empty=draw(st.booleans())))
    # A field computed from the batch, as gadgets decode: the row number as text.
    if draw(st.booleans()):
        fields.append(
            Field(
                "d",
                Kind.STR,
                decode=lambda b: np.array([f"#{i}" for i in range(len(b))], dtype=object),
            )
        )
    return Spec(dtype, fields, extra)


def objects(items: list[Any]) -> Any:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


MIXED = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    COLUMN_TEXT,
    st.sampled_from([True, 1, 1.0, False, 0, 0.0, -0.0]),
)
FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, -0.0]))


@functools.cache
def column(what: str, n: int) -> st.SearchStrategy[Any]:
    """``n`` values of one kind of column, as the numpy array an operator would set
    (strategies are built once per kind and length: building them is what costs)."""
    if what == "str":
        return st.lists(COLUMN_TEXT, min_size=n, max_size=n).map(objects)
    if what == "list":
        return st.lists(st.lists(COLUMN_TEXT, max_size=3), min_size=n, max_size=n).map(objects)
    if what == "float":
        return st.lists(FLOATS, min_size=n, max_size=n).map(lambda v: np.array(v, np.float64))
    if what == "mixed":
        return st.lists(MIXED, min_size=n, max_size=n).map(objects)
    code = "<" + what.removeprefix("num:")
    return st.lists(extremes(code[1:]), min_size=n, max_size=n).map(lambda v: np.array(v, code))


@functools.cache
def cstrings(size: int, n: int) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.binary(max_size=size), min_size=n, max_size=n)


@functools.cache
def codes(count: int, n: int) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(-1, count - 1), min_size=n, max_size=n)


@st.composite
def batches(draw: st.DrawFn, spec: Spec, tables: dict[str, Any]) -> Batch:
    """A batch of ``spec``: random records, then its extra columns plain or coded (coded ones
    may share codes, and reuse ``tables`` from an earlier batch), then rows taken."""
    n = draw(st.integers(0, 8))
    raw = np.zeros(n, spec.dtype)
    for name in spec.dtype.names or ():
        member = spec.dtype.fields[name][0]  # type: ignore[index]
        if member.kind == "S":
            raw[name] = draw(cstrings(member.itemsize, n))
        else:
            raw[name] = draw(column(f"num:{member.str[1:]}", n))
    batch = Batch(Schema(spec.fields, "event", spec.dtype), raw)
    names = [name for name, what in spec.extra.items()]
    coded = [name for name in names if spec.extra[name] in ("str", "mixed") and draw(st.booleans())]
    shared: list[str] = []
    for name in names:
        if name in coded:
            continue
        batch.set_column(name, draw(column(spec.extra[name], n)))
    for name in coded:
        if name not in tables or draw(st.booleans()):
            size = draw(st.integers(1, 4))
            tables[name] = draw(column(spec.extra[name], size))
        table = tables[name]
        rows = np.array(
            draw(codes(len(table), n)), dtype=draw(st.sampled_from([np.int64, np.int32]))
        )
        if shared and len(tables[shared[0]]) == len(table) and draw(st.booleans()):
            group = {s: tables[s] for s in shared} | {name: table}
            batch.set_coded_group(group, batch.coded(shared[0])[1])  # type: ignore[index]
        else:
            batch.set_coded(name, table, rows)
        shared.append(name)
    # Replace a member with an operator's column, now and then.
    members = [
        f for f in spec.fields if f.source in (spec.dtype.names or ()) and f.kind is Kind.STR
    ]
    if members and draw(st.integers(0, 4)) == 0:
        batch.set_column(members[0].name, draw(column("str", n)))
    how = draw(st.sampled_from(["as is", "taken", "mask", "strided"]))
    if how == "taken" and n:
        index = np.array(draw(st.lists(st.integers(0, n - 1), max_size=2 * n)), dtype=np.intp)
        batch = batch.take(index)
    elif how == "mask":
        batch = batch.take(np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool))
    elif how == "strided" and not names and not batch.layers()[0]:
        batch = Batch(batch.schema, raw[::2])
    return batch


def json_reference(
    batch: Batch, fields: list[Field], tag: str | None, event_type: str | None = None
) -> bytes:
    rows = batch.to_dicts(fields, omit_empty=True)
    if event_type:
        rows = [{"type": event_type, **row} for row in rows]
    if tag:
        rows = [{"gadget": tag, **row} for row in rows]
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    return text.encode()


def columns_reference(
    batch: Batch, fields: list[Field], widths: list[int], tag: str | None
) -> bytes:
    """The row-at-a-time formatting the C writer replaces (test_columnlines' reference)."""
    return reference(batch, fields, widths, tag).encode()


@st.composite
def runs(draw: st.DrawFn) -> tuple[Spec, list[Batch]]:
    spec = draw(specs())
    tables: dict[str, Any] = {}
    return spec, [draw(batches(spec, tables)) for _ in range(draw(st.integers(1, 3)))]


@FUZZ
@given(
    run=runs(),
    tag=st.one_of(st.none(), WIDEST),
    event_type=st.sampled_from([None, "normal"]),
)
def test_json_lines_equal_json_dumps(
    run: tuple[Spec, list[Batch]], tag: str | None, event_type: str | None
) -> None:
    spec, batches_ = run
    writer = JsonLines(spec.fields, tag, event_type)  # one writer for every batch: its caches
    for batch in batches_:
        want = json_reference(batch, spec.fields, tag, event_type)
        assert bytes(writer.encode(batch)) == want


@st.composite
def columns(draw: st.DrawFn, spec: Spec) -> tuple[list[Field], list[int]]:
    """Some of the fields, in any order, each with its own width, alignment and cut."""
    chosen = draw(st.permutations(spec.fields))[: draw(st.integers(1, len(spec.fields)))]
    fields = [
        Field(
            f.name,
            f.kind,
            member=f.member,
            decode=f.decode,
            column=Column(
                align=draw(st.sampled_from(["left", "right"])),
                ellipsis=draw(st.sampled_from(["end", "start", "middle", "none"])),
            ),
        )
        for f in chosen
    ]
    widths = [draw(st.integers(0, 24)) for _ in fields]
    return fields, widths


@FUZZ
@given(run=runs(), data=st.data(), tag=st.one_of(st.none(), WIDEST))
def test_column_lines_equal_the_row_by_row_reference(
    run: tuple[Spec, list[Batch]], data: st.DataObject, tag: str | None
) -> None:
    spec, batches_ = run
    if not spec.fields:
        return
    fields, widths = data.draw(columns(spec))
    writer = ColumnLines(fields, widths, tag)
    for batch in batches_:
        batch = Batch(
            Schema(fields, "event", spec.dtype),
            batch.raw,
            *batch.layers(),  # type: ignore[arg-type]
        )
        assert bytes(writer.encode(batch)) == columns_reference(batch, fields, widths, tag)


@FUZZ
@given(
    texts=st.lists(st.text(max_size=6), min_size=1, max_size=6),
    coded=st.booleans(),
    tag=st.one_of(st.none(), st.text(max_size=6)),
)
@example(texts=["\ud800", "a\udfffb", "\ud83d\ude00"], coded=False, tag="\udc80")
def test_json_lines_write_lone_surrogates_as_escapes(
    texts: list[str], coded: bool, tag: str | None
) -> None:
    """Text from JSON that declared a lone surrogate (a container's annotation) cannot be
    UTF-8: it is written as its ``\\ud800`` escape, where it used to stop the output with a
    UnicodeEncodeError."""
    fields = [Field("runtime.containerName", Kind.STR), Field("n", Kind.UINT)]
    dtype = np.dtype([("n", "<u4")])
    batch = Batch(
        Schema(fields, "event", dtype), np.arange(len(texts), dtype=np.uint32).view(dtype)
    )
    values = np.array(texts, dtype=object)
    if coded:
        batch.set_coded(fields[0].name, values, np.arange(len(texts))[::-1].copy())
    else:
        batch.set_column(fields[0].name, values)
    got = bytes(JsonLines(fields, tag).encode(batch))
    rows = batch.to_dicts(fields)
    if tag:
        rows = [{"gadget": tag, **row} for row in rows]
    want = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    assert got == want.encode("utf-8", "backslashreplace")  # exactly the escapes
    # Read back as any JSON reader reads the ASCII-only form (a pair of escapes is one
    # character then, as it is in JSON).
    lines = got.decode().split("\n")[:-1]  # not splitlines: U+0085 and U+2028 are text here
    assert [json.loads(line) for line in lines] == json.loads(json.dumps(rows))
