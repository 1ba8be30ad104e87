"""The columns output for whole batches, written by C.

``-o columns`` is what most people read, and what a busy host fills fastest. Each cell is
fitted to its column the way ``ig`` does it (declared width, ``…`` where text is cut, right
alignment for numbers), and each line loses its trailing blanks. :class:`ColumnLines`
describes a batch's columns once: integers and booleans are read where they are and fitted by
``igr_column_lines``; any other column is formatted and fitted in Python once per *distinct*
value (``Batch.distinct``: a batch has few distinct commands or containers), and rows point at
their cell. Text from events and containers is escaped there (:mod:`igrun.core.output.printable`),
so
no control character or escape sequence reaches the terminal and widths count what is shown.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.bpf.objects import ffi, lib
from igrun.core.events.helpers import format_rfc3339_ns
from igrun.core.events.schema import CUT_MARK, Array, Batch, Field, Kind, map_text
from igrun.core.output.cbuffers import (
    DescriptionError,
    OutputBuffer,
    Texts,
    address,
    check_rows,
    check_table,
    distinct,
    positions,
    texts_table,
)
from igrun.core.output.printable import printable

ELLIPSIS = "…"
CACHED_TABLE = 64
"""Cell tables of at most this many texts are kept for the next batches (containers, commands);
longer ones (timestamps, paths) are mostly new every batch."""
_CUTS = {
    "none": lib.IGR_CUT_PLAIN,
    "end": lib.IGR_CUT_END,
    "start": lib.IGR_CUT_START,
    "middle": lib.IGR_CUT_MIDDLE,
}


def format_value(kind: Kind, value: Any) -> str:
    """One value as the columns output shows it: text with its control characters escaped."""
    if kind is Kind.TIME:
        return format_rfc3339_ns(value)
    if kind is Kind.LIST:
        return printable(" ".join(value))
    if kind is Kind.MAP:
        return printable(map_text(value))
    if kind is Kind.BOOL:
        return "true" if value else "false"
    if kind is Kind.BYTES:
        return bytes(value).hex()
    return printable(str(value))


def errno_text(value: int, how: str) -> str:
    """An error number as its name (``ENOENT``): a positive errno, or a returned ``-errno``
    (``how`` is ``"positive"`` or ``"returned"``); any other value as the number."""
    code = value if how == "positive" else -value
    return errno.errorcode.get(code, str(value)) if code > 0 else str(value)


_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def bytes_text(value: int) -> str:
    """A byte count as ``ig``'s top gadgets show it (go-units' ``BytesSize``): divided by 1024
    while it is at least 1024, with four significant digits: ``1000B``, ``1.465KiB``."""
    size, unit = float(value), 0
    while size >= 1024 and unit < len(_BINARY_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{size:.4g}{_BINARY_UNITS[unit]}"


def _named(f: Field) -> bool:
    """Whether the column shows the field's numbers as names or sizes, not as numbers."""
    return bool(f.column.errno or f.column.units or f.column.text is not None)


def cell_text(f: Field, value: Any) -> str:
    """A value as its column shows it: :func:`format_value`, the errno's name for a column
    that says so (:attr:`Column.errno`), a size (:attr:`Column.units`), or the column's own
    text (:attr:`Column.text`)."""
    if f.column.text is not None:
        return printable(f.column.text(value))
    if _named(f) and isinstance(value, int) and not isinstance(value, bool):
        if f.column.units == "bytes":
            return bytes_text(value)
        return errno_text(value, f.column.errno)
    return format_value(f.kind, value)


def fit(text: str, width: int, f: Field) -> str:
    """``text`` cut (with ``…`` where the field's ellipsis says) or padded to ``width``."""
    if len(text) > width and f.column.ellipsis != "none" and width > 1:
        if f.column.ellipsis == "start":
            text = ELLIPSIS + text[-(width - 1) :]
        elif f.column.ellipsis == "middle":
            head = (width - 1) // 2
            text = text[:head] + ELLIPSIS + text[-(width - 1 - head) :]
        else:
            text = text[: width - 1] + ELLIPSIS
    elif len(text) > width:
        text = text[:width]
    return text.rjust(width) if f.column.align == "right" else text.ljust(width)


def _number_kind(dtype: np.dtype[Any], f: Field) -> tuple[int, int] | None:
    """How C reads values of ``dtype`` as a number cell — (kind, size) — or None."""
    if dtype.shape or dtype.kind not in "iub" or dtype.itemsize not in (1, 2, 4, 8):
        return None
    if f.kind is Kind.BOOL:
        return lib.IGR_JSON_BOOL, dtype.itemsize
    if f.kind in (Kind.INT, Kind.UINT) and dtype.kind in "iu":
        return (lib.IGR_JSON_INT if dtype.kind == "i" else lib.IGR_JSON_UINT), dtype.itemsize
    return None


class ColumnLines:
    """Encodes batches as lines of ``fields`` at ``widths`` (UTF-8 bytes)."""

    def __init__(self, fields: Sequence[Field], widths: Sequence[int], tag: str | None = None):
        self.fields = list(fields)
        self.widths = list(widths)
        self._lead = f"{tag:<22} ".encode() if tag else b""
        self._cols = ffi.new("struct igr_cell_col[]", max(len(self.fields), 1))
        last = len(self.fields) - 1
        self._as_is = [
            i == last and f.column.align == "left" for i, f in enumerate(self.fields)
        ]  # the last column is never cut
        for i, (f, width) in enumerate(zip(self.fields, self.widths, strict=True)):
            col = self._cols[i]
            col.width = width
            col.cut = _CUTS[f.column.ellipsis]
            if self._as_is[i]:
                col.fit = lib.IGR_FIT_NONE
            else:
                col.fit = lib.IGR_FIT_RIGHT if f.column.align == "right" else lib.IGR_FIT_LEFT
        self._out = OutputBuffer()
        self._cells: dict[tuple[Any, ...], Texts] = {}
        """Fitted cell tables by column and content: a stream's tables repeat."""
        self._by_dtype: dict[np.dtype[Any], list[tuple[int, int, int] | None]] = {}

    def encode(self, batch: Batch) -> memoryview:
        """The batch's lines, in a buffer reused by the next call: write them out first."""
        n = len(batch)
        if n == 0:
            return memoryview(b"")
        raw = batch.raw
        columns, coded = batch.layers()
        members = self._members(raw.dtype)
        keep: list[Any] = [raw]  # what the C structs point into, alive until the call returns
        for i, (f, member) in enumerate(zip(self.fields, members, strict=True)):
            col = self._cols[i]
            if member is not None and f.name not in columns and f.name not in coded:
                col.kind, col.size, col.offset = member
                col.values = ffi.NULL
                continue
            found = batch.distinct(f.name) if not f.column.cut_by else None
            if found is not None:
                table, codes = found
                check_rows(f.name, codes, n)
                self._point_cells(i, [cell_text(f, v) for v in table.tolist()], codes, keep)
            else:
                self._describe(i, batch, f, keep)
        cap = lib.igr_column_bound(self._cols, len(self.fields), len(self._lead), n)
        written = lib.igr_column_lines(
            self._cols, len(self.fields), address(raw), raw.strides[0], self._lead,
            len(self._lead), n, self._out.reserve(cap), cap,
        )  # fmt: skip
        if written < 0:
            raise DescriptionError("columns: a column description is inconsistent")
        return self._out.written(written)

    def _members(self, dtype: np.dtype[Any]) -> list[tuple[int, int, int] | None]:
        """Per column, (kind, size, offset) when it is a number member C reads in place;
        worked out once per record layout."""
        found = self._by_dtype.get(dtype)
        if found is None:
            found = self._by_dtype[dtype] = [self._member(dtype, f) for f in self.fields]
        return found

    @staticmethod
    def _member(dtype: np.dtype[Any], f: Field) -> tuple[int, int, int] | None:
        if f.decode is not None or dtype.names is None or f.source not in dtype.names:
            return None
        if _named(f):  # shown by name or size: one cell per distinct value
            return None
        member, offset = dtype.fields[f.source][:2]  # type: ignore[index]
        how = _number_kind(member, f)
        return None if how is None else (*how, offset)

    def _describe(self, i: int, batch: Batch, f: Field, keep: list[Any]) -> None:
        """A column beside the records: numbers read where they are, anything else as one
        cell per distinct value."""
        values = batch[f.name]
        check_rows(f.name, values, len(batch))
        if _named(f) and values.ndim == 1 and values.dtype.kind in "iuf":
            codes, rows = np.unique(values, return_inverse=True)  # few distinct values
            texts = [cell_text(f, v) for v in codes.tolist()]
            self._point_cells(i, texts, rows.reshape(-1), keep)
            return
        how = _number_kind(values.dtype, f) if values.ndim == 1 else None
        if how is not None:
            keep.append(values)
            col = self._cols[i]
            col.kind, col.size = how
            col.stride = values.strides[0]
            col.values = address(values)
            return
        python = batch.values(f.name)
        if f.column.cut_by:  # marked row by row: the same args may be cut in one row only
            cut = batch[f.column.cut_by].astype(bool).tolist()
            texts = [
                self._marked(i, cell_text(f, v)) if c else cell_text(f, v)
                for v, c in zip(python, cut, strict=True)
            ]
            self._point_cells(i, texts, np.arange(len(texts)), keep)
            return
        found = distinct(python)
        if found is None:  # unhashable values (lists): one cell per row
            texts = [cell_text(f, v) for v in python]
            self._point_cells(i, texts, np.arange(len(texts)), keep)
            return
        table, index = found
        self._point_cells(i, [cell_text(f, v) for v in table], index, keep)

    def _marked(self, i: int, text: str) -> str:
        """``text`` with :data:`CUT_MARK` after it, fitted so that the mark always shows: a
        column too narrow for both cuts the text (``…``) and keeps the mark."""
        if self._as_is[i]:
            return text + CUT_MARK
        room = max(self.widths[i] - len(CUT_MARK), 1)
        fitted = fit(text, room, self.fields[i])
        return (
            fitted.lstrip() if self.fields[i].column.align == "right" else fitted.rstrip()
        ) + CUT_MARK

    def _point_cells(self, i: int, texts: list[str], codes: Array, keep: list[Any]) -> None:
        """Rows as positions into ``texts``, each fitted to column ``i`` once."""
        key = (i, *texts) if len(texts) <= CACHED_TABLE else None
        table = self._cells.get(key) if key is not None else None
        if table is None:
            f, width = self.fields[i], self.widths[i]
            cells = [t if self._as_is[i] else fit(t, width, f) for t in texts]
            table = texts_table([c.encode() for c in cells])
            if key is not None:
                if len(self._cells) >= 256:
                    self._cells.clear()
                self._cells[key] = table
        check_table(self.fields[i].name, table)
        blob, offsets, pointer, count = table
        rows, rows_pointer, stride = positions(codes, count)
        keep += [blob, offsets, rows]
        col = self._cols[i]
        col.kind = lib.IGR_JSON_TEXT
        col.size = count
        col.stride = stride
        col.values = rows_pointer
        col.texts = blob
        col.offsets = pointer
