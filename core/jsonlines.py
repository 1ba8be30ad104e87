"""JSON lines for whole batches, written by C.

``-o json`` is the output that pipes into other tools, so it is the one that must keep up with
the kernel. :class:`JsonLines` describes each column once per batch (a raw struct member is
read in place; an operator's column is read from its numpy array; anything else becomes
ready-made JSON texts, one per distinct value) and ``igr_json_lines`` writes every row in
one call. The result is what :meth:`Batch.to_dicts` and ``json.dumps(row,
ensure_ascii=False, separators=(",", ":"))`` give, byte for byte, at a fraction of the cost.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from igrun.core import _libbpf  # type: ignore[attr-defined]
from igrun.core.schema import Array, Batch, Field, Kind

ffi: Any = _libbpf.ffi
lib: Any = _libbpf.lib

Encoded = tuple[Any, Array, Any, int]
"""A table of JSON texts for C: the text blob, its offsets (array and pointer), the count."""

INT, UINT, BOOL, CSTR, TEXT = (
    lib.IGR_JSON_INT,
    lib.IGR_JSON_UINT,
    lib.IGR_JSON_BOOL,
    lib.IGR_JSON_CSTR,
    lib.IGR_JSON_TEXT,
)


def dumps(value: Any) -> str:
    """One value as JSON, the way a whole line is written."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def layout(fields: Sequence[Field], lead: str = "") -> tuple[list[tuple[str, Field]], str]:
    """The text before each field's value, and after the last one.

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
    pieces: list[tuple[str, Field]] = []
    opening = "{" + (lead + "," if lead else "")
    for key, f in flat:
        pieces.append((f"{opening}{dumps(key)}:", f))
        opening = ","
    for outer, members in groups.items():
        inner_opening = f"{opening}{dumps(outer)}:{{"
        for key, f in members:
            pieces.append((f"{inner_opening}{dumps(key)}:", f))
            inner_opening = ","
        opening = "},"
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


class JsonLines:
    """Encodes batches of one schema's ``fields`` as JSON lines (UTF-8 bytes)."""

    def __init__(self, fields: Sequence[Field], tag: str | None = None) -> None:
        lead = f'"gadget":{dumps(tag)}' if tag else ""
        self.pieces, suffix = layout([f for f in fields if f.in_json], lead)
        self._prefixes = [ffi.new("char[]", p.encode()) for p, _ in self.pieces]
        self._suffix = suffix.encode()
        self._out = np.empty(0, dtype=np.uint8)
        self._cols = ffi.new("struct igr_json_col[]", max(len(self.pieces), 1))
        for i, (text, _) in enumerate(self.pieces):
            self._cols[i].prefix = self._prefixes[i]
            self._cols[i].prefix_len = len(text.encode())
        self._tables: dict[tuple[Any, ...], Encoded] = {}
        """Encoded tables of distinct values by content: a stream's enrichment tables repeat."""
        self._plans_by_dtype: dict[np.dtype[Any], list[tuple[int, int, int] | None]] = {}

    def encode(self, batch: Batch) -> memoryview:
        """The batch's lines, in a buffer reused by the next call: write them out first.
        (One buffer, grown as needed, spares a fresh allocation and its page faults per
        batch.)"""
        n = len(batch)
        if n == 0:
            return memoryview(b"")
        cols = self._cols
        raw = batch.raw
        keep: list[Any] = [raw]  # arrays the C structs point into, alive until the call returns
        plans = self._plans(raw.dtype)
        base = raw.ctypes.data  # records may be a strided view: each member is read by stride
        rows: dict[tuple[int, int], Any] = {}
        for i, (_, f) in enumerate(self.pieces):
            plan = plans[i]
            if plan is not None and not batch.overlaid(f.name):
                col = cols[i]
                col.kind, col.size, offset = plan
                col.stride = raw.strides[0]
                col.values = ffi.cast("const char *", base + offset)
            else:
                self._describe(cols[i], batch, f, keep, rows)
        ncols = len(self.pieces)
        cap = lib.igr_json_bound(cols, ncols, len(self._suffix), n)
        if len(self._out) < cap:
            self._out = np.empty(max(cap, 2 * len(self._out)), dtype=np.uint8)
        written = lib.igr_json_lines(
            cols, ncols, self._suffix, len(self._suffix), n, ffi.from_buffer(self._out), cap
        )
        if written < 0:
            raise RuntimeError("JSON lines: a column description is inconsistent")
        return self._out.data[:written]

    def _plans(self, dtype: np.dtype[Any]) -> list[tuple[int, int, int] | None]:
        """Per piece, how C reads the field straight from a record of ``dtype`` — (kind,
        size, offset) — or None when it cannot (a decoder, a derived field). Worked out once
        per record layout: it is what every batch of a stream shares."""
        plans = self._plans_by_dtype.get(dtype)
        if plans is None:
            plans = [self._plan(dtype, f) for _, f in self.pieces]
            self._plans_by_dtype[dtype] = plans
        return plans

    @staticmethod
    def _plan(dtype: np.dtype[Any], f: Field) -> tuple[int, int, int] | None:
        if f.decode is not None or dtype.names is None or f.source not in dtype.names:
            return None
        member, offset = dtype.fields[f.source][:2]  # type: ignore[index]
        how = _c_kind(member, f)
        return None if how is None else (*how, offset)

    def _describe(
        self, col: Any, batch: Batch, f: Field, keep: list[Any], rows: dict[tuple[int, int], Any]
    ) -> None:
        coded = batch.coded(f.name)
        if coded is not None:
            table, codes = coded
            self._table(col, tuple((type(v), v) for v in table.tolist()), codes, keep, rows)
            return
        values = batch[f.name]
        how = _c_kind(values.dtype, f) if values.ndim == 1 else None
        if how is None:
            self._texts(col, batch.values(f.name), keep, rows)
        else:
            self._point(col, *how, values, keep)

    @staticmethod
    def _point(col: Any, kind: int, size: int, values: Array, keep: list[Any]) -> None:
        """Let C read ``values`` where they are (a strided view is fine)."""
        keep.append(values)
        col.kind = kind
        col.size = size
        col.stride = values.strides[0]
        col.values = ffi.cast("const char *", values.ctypes.data)

    def _texts(
        self, col: Any, values: list[Any], keep: list[Any], rows: dict[tuple[int, int], Any]
    ) -> None:
        """Each distinct value encoded once; rows point at their text."""
        distinct: dict[Any, int] = {}
        try:
            index = [distinct.setdefault((type(v), v), len(distinct)) for v in values]
            self._table(col, tuple(distinct), np.array(index), keep, rows)
        except TypeError:  # unhashable values (lists): one text per row
            texts = [dumps(v).encode() for v in values]
            self._point_texts(col, self._encode_table(texts), np.arange(len(values)), keep, rows)

    def _table(
        self,
        col: Any,
        table: tuple[tuple[type, Any], ...],
        index: Array,
        keep: list[Any],
        rows: dict[tuple[int, int], Any],
    ) -> None:
        """Rows given as positions in ``table``: a few distinct values, each with its type
        (``True`` and ``1`` are equal keys, not equal JSON)."""
        encoded = self._tables.get(table)
        if encoded is None:
            if len(self._tables) > 256:
                self._tables.clear()
            texts = [dumps(v).encode() for _, v in table]
            encoded = self._tables[table] = self._encode_table(texts)
        self._point_texts(col, encoded, index, keep, rows)

    @staticmethod
    def _encode_table(texts: list[bytes]) -> Encoded:
        offsets = np.zeros(len(texts) + 1, dtype=np.uint64)
        np.cumsum([len(t) for t in texts], out=offsets[1:])
        offsets_ptr = ffi.cast("const unsigned long long *", ffi.from_buffer(offsets))
        return ffi.from_buffer(b"".join(texts)), offsets, offsets_ptr, len(texts)

    @staticmethod
    def _point_texts(
        col: Any, encoded: Encoded, index: Array, keep: list[Any], rows: dict[tuple[int, int], Any]
    ) -> None:
        """Rows as int32 positions into the encoded table. Enrichers give many columns the
        same codes (one container per row): those are converted once per batch."""
        blob_ptr, offsets, offsets_ptr, count = encoded
        converted = rows.get((id(index), count))
        if converted is None:
            positions = np.ascontiguousarray(index, dtype=np.int32)
            if len(positions) and positions.min() < 0:
                positions = np.where(positions < 0, positions + count, positions)  # numpy's
            pointer = ffi.cast("const char *", ffi.from_buffer(positions))
            converted = rows[(id(index), count)] = (positions, pointer)
            keep.append(index)  # its id stays its own until the call returns
        keep += [blob_ptr, offsets, converted[0]]
        col.kind = TEXT
        col.size = count
        col.stride = 4
        col.values = converted[1]
        col.texts = blob_ptr
        col.offsets = offsets_ptr
