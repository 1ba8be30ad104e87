"""What the C writers (JSON lines, columns) are handed from Python: where an array's values
are, tables of ready-made texts, and each row's position in such a table.

A column of few distinct values (a container name, a command) travels as one table of texts
plus an int32 position per row; C copies the row's text. Both writers build their tables and
positions here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from igrun.core.bpf import ffi
from igrun.core.schema import Array

Texts = tuple[Any, Array, Any, int]
"""A table of texts for C: the blob, its offsets (array and pointer), how many texts."""


def address(values: Array) -> Any:
    """Where the first element of ``values`` is, as a C pointer (a strided view too). The
    caller keeps ``values`` alive while C reads it."""
    if values.flags.c_contiguous:  # the buffer protocol: no Python-level numpy machinery
        return ffi.cast("const char *", ffi.from_buffer(values))
    return ffi.cast("const char *", values.ctypes.data)


def texts_table(texts: list[bytes]) -> Texts:
    """``texts`` back to back, with where each starts (and the end)."""
    offsets = np.zeros(len(texts) + 1, dtype=np.uint64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    pointer = ffi.cast("const unsigned long long *", ffi.from_buffer(offsets))
    return ffi.from_buffer(b"".join(texts)), offsets, pointer, len(texts)


def positions(codes: Array, count: int) -> tuple[Array, Any]:
    """Rows' positions in a table of ``count`` texts as contiguous int32 (a negative code
    counts from the end, as numpy indexing does), and a C pointer to them."""
    rows = np.ascontiguousarray(codes, dtype=np.int32)
    if len(rows) and rows.min() < 0:
        rows = np.where(rows < 0, rows + count, rows)
    return rows, ffi.cast("const char *", ffi.from_buffer(rows))


def distinct(values: Iterable[Any]) -> tuple[list[Any], Array] | None:
    """The distinct values (told apart by type too: ``True`` and ``1`` are equal keys, not
    equal output) and each row's position among them; None for unhashable values (lists)."""
    seen: dict[Any, int] = {}
    try:
        index = [seen.setdefault((type(v), v), len(seen)) for v in values]
    except TypeError:
        return None
    return [v for _, v in seen], np.array(index, dtype=np.int32)
