"""JSON lines for whole batches, written by C.

``-o json`` is the output that pipes into other tools, so it is the one that must keep up with
the kernel. :class:`JsonLines` describes each column once per batch (a raw struct member is
read in place; an operator's column is read from its numpy array; anything else becomes
ready-made JSON texts, one per distinct value) and ``igr_json_lines`` writes every row in
one call. The result is what :meth:`Batch.to_dicts` (``omit_empty=True``) and
``json.dumps(row, ensure_ascii=False, separators=(",", ":"))`` give, byte for byte, at a
fraction of the cost. Keys follow ``ig``'s rules: a field marked ``omit_empty`` is left out
when empty, as Go's ``omitempty`` leaves it, and nested objects are always written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.bpf.objects import ffi, lib
from igrun.core.events.fields import WallTime
from igrun.core.events.schema import Array, Batch, Field, Kind, is_empty
from igrun.core.output.cbuffers import (
    DescriptionError,
    OutputBuffer,
    Texts,
    address,
    check_rows,
    check_table,
    distinct,
    positions,
    text_key,
    texts_table,
)

INT, UINT, BOOL, CSTR, TEXT, WALL_TIME = (
    lib.IGR_JSON_INT,
    lib.IGR_JSON_UINT,
    lib.IGR_JSON_BOOL,
    lib.IGR_JSON_CSTR,
    lib.IGR_JSON_TEXT,
    lib.IGR_JSON_WALL_TIME,
)
OMIT_EMPTY, OPEN_VALUE = lib.IGR_JSON_OMIT_EMPTY, lib.IGR_JSON_OPEN_VALUE


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps(value: Any) -> str:
    """One value as JSON, the way a whole line is written. A lone surrogate (text from JSON
    that declared one, such as a container's annotation) cannot be written as UTF-8: it is
    written as its escape (``\\ud800``), which JSON readers take back as that code point."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if _SURROGATE.search(text) is not None:  # only inside strings: the escape stays valid JSON
        text = _SURROGATE.sub(_escape_surrogate, text)
    return text


@dataclass(frozen=True)
class Piece:
    """One field's place in a row: ``closes`` objects to close and ``open`` to write before
    it whether or not it is written (the row's ``{``, a nested object's ``"runtime":{``),
    then its ``key`` (``"pid":``) and value, left out when the field is ``omit_empty`` and
    the value empty. ``open_value``: ``open`` ends with a value (the lead), a comma is due."""

    closes: int
    open: str
    open_value: bool
    key: str
    field: Field


def layout(fields: Sequence[Field], lead: str = "") -> tuple[list[Piece], str]:
    """Each field's piece of a row, and the text after the last one.

    Keys come in :meth:`Batch.to_dicts` order: flat keys first, then one object per dotted
    prefix (``runtime.containerName`` goes into ``"runtime":{…}``). ``lead`` is written first
    in every object (``"gadget":"trace exec"`` when several gadgets share the output).
    """
    flat = [(f.json_key, f) for f in fields if "." not in f.json_key]
    groups: dict[str, list[tuple[str, Field]]] = {}
    for f in fields:
        if "." in f.json_key:
            outer, _, inner = f.json_key.partition(".")
            groups.setdefault(outer, []).append((inner, f))
    pieces: list[Piece] = []
    row_open = "{" + lead
    for key, f in flat:
        pieces.append(Piece(0, row_open, bool(lead) and row_open != "", f"{dumps(key)}:", f))
        row_open = ""
    closes = 0
    for outer, members in groups.items():
        first = row_open + ("," if lead else "") if row_open else ""  # the row's own start
        opening = first + f"{dumps(outer)}:{{"
        for key, f in members:
            pieces.append(Piece(closes, opening, False, f"{dumps(key)}:", f))
            opening, closes = "", 0
        row_open, closes = "", 1
    suffix = ("}}" if groups else "}") if pieces else "{" + lead + "}"
    return pieces, suffix + "\n"


def _c_kind(dtype: np.dtype[Any], f: Field) -> tuple[int, int] | None:
    """How C writes values of ``dtype`` as field ``f`` — (kind, size) — or None when they
    go as ready-made JSON texts instead."""
    if dtype.shape:
        return None
    if dtype.kind == "S":
        return (CSTR, dtype.itemsize) if f.kind is Kind.STR else None
    if dtype.kind not in "iub" or dtype.itemsize not in (1, 2, 4, 8):
        return None
    if f.kind is Kind.BOOL or dtype.kind == "b":
        return BOOL, dtype.itemsize
    if f.kind in (Kind.INT, Kind.UINT, Kind.TIME):
        return INT if dtype.kind == "i" else UINT, dtype.itemsize
    return None


_Rows = dict[tuple[int, bool], Any]
"""Codes converted to int32 positions this batch, by the codes' identity (and whether the
table has one text): enrichers share one codes array between many columns."""

_RAW, _COLUMN = -2, -1
"""Marks of a piece in a batch's shape besides coded columns' group numbers: read from the
records, or an operator's column."""


@dataclass
class _Layout:
    """The C column descriptions for batches of one shape. Record members are described
    once here; what changes per batch (coded and operator columns) is listed to fill in."""

    cols: Any
    ncols: int
    coded: list[tuple[int, list[int]]]
    """(column, pieces): consecutive coded pieces sharing codes, written as one text."""
    other: list[tuple[int, Field]]
    """(column, field): operator columns, described per batch."""
    prefixes: list[Any]
    """Keeps the prefixes the columns point to alive."""


class JsonLines:
    """Encodes batches of one schema's ``fields`` as JSON lines (UTF-8 bytes)."""

    def __init__(
        self, fields: Sequence[Field], tag: str | None = None, event_type: str | None = None
    ) -> None:
        """``tag`` is written first as ``"gadget"``, then ``event_type`` as ``"type"`` (``ig``
        writes ``"type":"normal"`` on every event)."""
        lead = ",".join(
            ([f'"gadget":{dumps(tag)}'] if tag else [])
            + ([f'"type":{dumps(event_type)}'] if event_type else [])
        )
        self.pieces, suffix = layout([f for f in fields if f.in_json], lead)
        self._names = [p.field.name for p in self.pieces]
        self._prefixes = [p.key.encode() for p in self.pieces]
        self._opens = [p.open.encode() for p in self.pieces]
        self._omit = [p.field.omit_empty for p in self.pieces]
        self._suffix = suffix.encode()
        self._out = OutputBuffer()
        self._layouts: dict[tuple[Any, ...], _Layout] = {}
        self._tables: dict[tuple[Any, ...], Texts] = {}
        """Texts tables by content: a stream's enrichment tables repeat."""
        self._by_identity: dict[tuple[int, ...], tuple[tuple[Array, ...], Texts]] = {}
        """Texts coded groups by their tables' identities (the tables are kept alive with
        them): an enricher hands the same table objects to batch after batch."""

    def encode(self, batch: Batch) -> memoryview:
        """The batch's lines, in a buffer reused by the next call: write them out first."""
        n = len(batch)
        if n == 0:
            return memoryview(b"")
        raw = batch.raw
        columns, coded_columns = batch.layers()
        coded = [coded_columns.get(name) for name in self._names]
        shape: list[Any] = [raw.dtype]
        groups: dict[tuple[int, int], int] = {}
        for name, c in zip(self._names, coded, strict=True):
            if c is not None:  # same codes, same table length: one group
                shape.append(groups.setdefault((id(c[1]), len(c[0])), len(groups)))
            else:
                shape.append(_COLUMN if name in columns else _RAW)
        key = tuple(shape)
        lay = self._layouts.get(key) or self._layout(key)
        keep: list[Any] = [raw]  # arrays the C structs point into, alive until the call returns
        rows: _Rows = {}
        for col, members in lay.coded:
            first = coded[members[0]]
            assert first is not None
            tables = tuple([coded[i][0] for i in members])  # type: ignore[index]
            check_rows(self._names[members[0]], first[1], n)
            self._point_texts(lay.cols[col], self._group(members, tables), first[1], keep, rows)
        for col, f in lay.other:
            self._describe(lay.cols[col], batch, f, keep, rows)
        if lay.ncols > len(lay.cols):
            raise DescriptionError(f"JSON lines: {lay.ncols} columns in {len(lay.cols)}")
        cap = lib.igr_json_bound(lay.cols, lay.ncols, len(self._suffix), n)
        records = address(raw)
        written = lib.igr_json_lines(
            lay.cols, lay.ncols, records, raw.strides[0], self._suffix, len(self._suffix), n,
            self._out.reserve(cap), cap,
        )  # fmt: skip
        if written < 0:
            raise DescriptionError("JSON lines: a column description is inconsistent")
        return self._out.written(written)

    def _layout(self, key: tuple[Any, ...]) -> _Layout:
        """Describe the columns of one batch shape: the record's dtype, then per piece its
        mark (read from the record, an operator's column, or a coded group's number)."""
        dtype, marks = key[0], key[1:]
        entries: list[tuple[int, Any]] = []  # (first piece, what the column is)
        i = 0
        while i < len(marks):
            mark, f = marks[i], self.pieces[i].field
            if mark >= 0:  # a group stays within one object: its text holds its keys
                j = i + 1
                while j < len(marks) and marks[j] == mark and not self._opens[j]:
                    j += 1
                entries.append((i, list(range(i, j))))
                i = j
                continue
            plan = self._plan(dtype, f) if mark == _RAW else None
            entries.append((i, plan if plan is not None else f))
            i += 1
        cols = ffi.new("struct igr_json_col[]", max(len(entries), 1))
        lay = _Layout(cols, len(entries), [], [], [])
        for n, (piece, what) in enumerate(entries):
            name = b"" if isinstance(what, list) else self._prefixes[piece]
            prefix = ffi.new("char[]", name)
            opening = ffi.new("char[]", self._opens[piece])
            lay.prefixes += [prefix, opening]
            cols[n].prefix = prefix
            cols[n].prefix_len = len(name)
            cols[n].open = opening
            cols[n].open_len = len(self._opens[piece])
            cols[n].closes = self.pieces[piece].closes
            omit = isinstance(what, list) or self._omit[piece]
            cols[n].flags = (OMIT_EMPTY if omit else 0) | (
                OPEN_VALUE if self.pieces[piece].open_value else 0
            )
            if isinstance(what, list):
                lay.coded.append((n, what))
            elif isinstance(what, Field):
                lay.other.append((n, what))
            else:  # read in place from every record
                cols[n].kind, cols[n].size, cols[n].offset = what
                cols[n].values = ffi.NULL
        if len(self._layouts) >= 64:
            self._layouts.clear()
        self._layouts[key] = lay
        return lay

    @staticmethod
    def _plan(dtype: np.dtype[Any], f: Field) -> tuple[int, int, int] | None:
        """How C reads the field straight from a record of ``dtype`` — (kind, size, offset)
        — or None when it cannot (a decoder other than wall time, a derived field)."""
        source = f.decode.member if isinstance(f.decode, WallTime) else f.source
        if dtype.names is None or source not in dtype.names:
            return None
        member, offset = dtype.fields[source][:2]  # type: ignore[index]
        if isinstance(f.decode, WallTime):
            wall = member.kind in "iu" and member.itemsize == 8 and not member.shape
            return (WALL_TIME, 8, offset) if wall else None
        how = _c_kind(member, f) if f.decode is None else None
        return None if how is None else (*how, offset)

    def _group(self, members: list[int], tables: tuple[Array, ...]) -> Texts:
        """One text per code for coded pieces of one object that share codes: their keys and
        values (``"containerName":"web","containerId":"0f3a…"``, an empty value of an
        ``omit_empty`` field left out), so C copies one text."""
        key = (*members, *map(id, tables))
        hit = self._by_identity.get(key)
        if hit is not None:
            return hit[1]
        rows = zip(*(t.tolist() for t in tables), strict=True)
        typed = tuple(tuple(text_key(v) for v in row) for row in rows)
        encoded = self._encoded((*members, typed), [self._joined(members, row) for row in typed])
        if len(self._by_identity) >= 256:
            self._by_identity.clear()
        self._by_identity[key] = (tables, encoded)
        return encoded

    def _joined(self, members: list[int], row: tuple[tuple[type, Any], ...]) -> bytes:
        return b",".join(
            self._prefixes[piece] + dumps(value).encode()
            for piece, (_, value) in zip(members, row, strict=True)
            if not (self._omit[piece] and is_empty(value))
        )

    def _encoded(self, content: tuple[Any, ...], texts: list[bytes]) -> Texts:
        """The table of ``texts`` for C, shared by every batch whose ``content`` (its values
        with their types: ``True`` and ``1`` are equal keys, not equal JSON) is the same."""
        try:
            encoded = self._tables.get(content)
        except TypeError:  # unhashable values (lists): not kept
            return texts_table(texts)
        if encoded is None:
            if len(self._tables) >= 256:
                self._tables.clear()
            encoded = self._tables[content] = texts_table(texts)
        return encoded

    def _describe(self, col: Any, batch: Batch, f: Field, keep: list[Any], rows: _Rows) -> None:
        values = batch[f.name]
        how = _c_kind(values.dtype, f) if values.ndim == 1 else None
        if how is None:
            python = batch.values(f.name)
            check_rows(f.name, python, len(batch))
            self._texts(col, python, f.omit_empty, keep, rows)
        else:
            check_rows(f.name, values, len(batch))
            self._point(col, *how, values, keep)

    @staticmethod
    def _point(col: Any, kind: int, size: int, values: Array, keep: list[Any]) -> None:
        """Let C read ``values`` where they are (a strided view is fine)."""
        keep.append(values)
        col.kind = kind
        col.size = size
        col.stride = values.strides[0]
        col.values = address(values)

    def _texts(self, col: Any, values: list[Any], omit: bool, keep: list[Any], rows: _Rows) -> None:
        """Each distinct value encoded once (an omitted one as no bytes); rows point at
        their text."""

        def text(v: Any) -> bytes:
            return b"" if omit and is_empty(v) else dumps(v).encode()

        found = distinct(values)
        if found is None:  # unhashable values (lists): one text per row
            texts = [text(v) for v in values]
            self._point_texts(col, texts_table(texts), np.arange(len(values)), keep, rows)
            return
        table, index = found
        typed = (omit, *(text_key(v) for v in table))
        self._point_texts(col, self._encoded(typed, [text(v) for v in table]), index, keep, rows)

    @staticmethod
    def _point_texts(col: Any, encoded: Texts, index: Array, keep: list[Any], rows: _Rows) -> None:
        """Rows as int32 positions into the encoded table. Enrichers give many columns the
        same codes (one container per row): those are converted once per batch."""
        check_table("JSON lines", encoded)
        blob_ptr, offsets, offsets_ptr, count = encoded
        converted = rows.get((id(index), count == 1))
        if converted is None:
            converted = rows[(id(index), count == 1)] = positions(index, count)
            keep.append(index)  # its id stays its own until the call returns
        keep += [blob_ptr, offsets, converted[0]]
        col.kind = TEXT
        col.size = count
        col.values, col.stride = converted[1:]
        col.texts = blob_ptr
        col.offsets = offsets_ptr
