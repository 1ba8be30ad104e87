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
from igrun.core.output.igorder import EVENT, ORDER

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


def ig_order(gadget: str) -> tuple[str, ...]:
    """The order of ``gadget``'s JSON keys (``"trace exec"``) as ``ig`` v0.25 writes them;
    for a gadget ``ig`` does not have, the order of ``ig``'s common event keys."""
    return ORDER.get(gadget, EVENT)


Item = Field | str
"""A field, or a text written whole where it stands (``"type":"normal"``)."""


def arrange(fields: Sequence[Field], order: Sequence[str], placed: dict[str, str]) -> list[Item]:
    """``fields`` and the ``placed`` texts (by key) in the order a row writes them.

    Without ``order``: flat keys first, then one object per dotted prefix, as
    :meth:`Batch.to_dicts` writes them, and the placed texts first. With ``order`` (dotted
    keys, as Go writes its struct: see :mod:`igrun.core.output.igorder`): the keys it names
    in its order, then the keys it does not name (placed texts first, then fields in their
    own order). An object stands where the order names it or its first member, whichever
    comes first, with its members (those named in order, then the others). A text placed
    last, after keys that may all be left out, goes first instead: it could not know
    whether a comma is due.
    """
    if not order:
        flat: list[Item] = [f for f in fields if "." not in f.json_key]
        groups: dict[str, list[Field]] = {}
        for f in fields:
            if "." in f.json_key:
                groups.setdefault(f.json_key.partition(".")[0], []).append(f)
        return [*placed.values(), *flat, *(f for members in groups.values() for f in members)]
    rank = {key: i for i, key in enumerate(order)}
    unnamed = len(order)

    def where(key: str, i: int) -> tuple[int, int]:
        return (rank[key], 0) if key in rank else (unnamed, i)

    entries: list[tuple[tuple[int, int], list[Item]]] = []
    objects: dict[str, list[tuple[tuple[int, int], Field]]] = {}
    for n, (key, text) in enumerate(placed.items()):
        entries.append((where(key, n - len(placed)), [text]))
    for i, f in enumerate(fields):
        if "." in f.json_key:
            objects.setdefault(f.json_key.partition(".")[0], []).append((where(f.json_key, i), f))
        else:
            entries.append((where(f.json_key, i), [f]))
    for outer, members in objects.items():
        members.sort(key=lambda m: m[0])
        named = where(outer, members[0][0][1])  # the order may name the object itself
        entries.append((min(named, members[0][0]), [f for _, f in members]))
    entries.sort(key=lambda e: e[0])
    items = [item for _, group in entries for item in group]
    while items and isinstance(items[-1], str) and not _comma_certain(items):
        items.insert(0, items.pop())  # see above: the text goes first
    return items


def record_order(
    fields: Sequence[Field], event_type: str | None, order: Sequence[str]
) -> tuple[list[Field], list[str]]:
    """For records built as dicts (``jsonpretty``, ``yaml``), the order :class:`JsonLines`
    writes: the fields to build them from (an object's members in order, as
    :meth:`Batch.to_dicts` keeps them) and the top-level keys in order (``type`` among them
    when ``event_type`` is written)."""
    placed = {"type": "type"} if event_type else {}
    items = arrange([f for f in fields if f.in_json], order, placed)
    top = (i if isinstance(i, str) else i.json_key.partition(".")[0] for i in items)
    return [i for i in items if isinstance(i, Field)], list(dict.fromkeys(top))


def _comma_certain(items: Sequence[Item]) -> bool:
    """Whether a row of ``items`` always writes something before its trailing texts: a
    field that is never left out, or an object (Go writes a struct even when empty)."""
    return any(
        isinstance(item, Field) and ("." in item.json_key or not item.omit_empty) for item in items
    )


def _join(text: str, value: bool, more: str) -> str:
    """``more`` after ``text`` (a comma between them when ``text`` ends with a value); with no
    ``text``, the writer decides the comma when the row is written."""
    return text + ("," if value else "") + more if text else more


def layout(items: Sequence[Item], lead: str = "") -> tuple[list[Piece], str]:
    """Each field's piece of a row, and the text after the last one.

    ``items`` come in the order the row writes them (see :func:`arrange`); the fields of one
    object next to each other (``runtime.containerName`` goes into ``"runtime":{…}``).
    ``lead`` is written first in every object (``"gadget":"trace exec"`` when several
    gadgets share the output).
    """
    pieces: list[Piece] = []
    text, value = "{" + lead, bool(lead)  # written before the next key, ends with a value
    closes, current = 0, ""  # objects to close before it; the open object's name
    for item in items:
        outer, dot, inner = ("", "", "") if isinstance(item, str) else item.json_key.partition(".")
        outer = outer if dot else ""
        if current and outer != current:
            closes, current = 1, ""
        if isinstance(item, str):
            text, value = _join(text, value, item), True
            continue
        if outer and outer != current:
            text, value, current = _join(text, value, f"{dumps(outer)}:{{"), False, outer
        key = inner if outer else item.json_key
        pieces.append(Piece(closes, text, value and text != "", f"{dumps(key)}:", item))
        text, value, closes = "", False, 0
    end = "}" * (1 if current else 0)
    if not pieces:
        return pieces, text + "}\n"
    if text:  # trailing texts after pieces: arrange made sure a comma is due
        return pieces, end + "," + text + "}\n"
    return pieces, end + "}\n"


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
        self,
        fields: Sequence[Field],
        tag: str | None = None,
        event_type: str | None = None,
        order: Sequence[str] = (),
    ) -> None:
        """``tag`` is written first as ``"gadget"``; ``event_type`` as ``"type"`` (``ig``
        writes ``"type":"normal"`` on every event). Keys follow ``order`` (see
        :func:`arrange`; :func:`ig_order` gives ``ig``'s), or without one the order of
        :meth:`Batch.to_dicts` with ``type`` first."""
        lead = f'"gadget":{dumps(tag)}' if tag else ""
        placed = {"type": f'"type":{dumps(event_type)}'} if event_type else {}
        items = arrange([f for f in fields if f.in_json], order, placed)
        self.pieces, suffix = layout(items, lead)
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
