"""What the C writers (JSON lines, columns) are handed from Python: where an array's values
are, tables of ready-made texts, and each row's position in such a table.

A column of few distinct values (a container name, a command) travels as one table of texts
plus an int32 position per row; C copies the row's text. Both writers build their tables and
positions here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.bpf.objects import ffi
from igrun.core.events.schema import Array

Texts = tuple[Any, Array, Any, int]
"""A table of texts for C: the blob, its offsets (array and pointer), how many texts."""

TOO_BIG = (1 << 64) - 1
"""What the writers' size functions return for a description they cannot write (an unknown
kind, an integer size other than 1, 2, 4, 8, a table whose offsets go backwards) or a size that
overflows 64 bits."""


class DescriptionError(ValueError):
    """A batch's description for a C writer does not match what the writer will read."""


def check_table(what: str, table: Texts) -> None:
    """C reads offsets[0..count] and the texts between them (it checks each row's position
    against count, and that the offsets never go backwards): the rest is proven here."""
    blob, offsets, _, count = table
    if len(offsets) != count + 1 or int(offsets[0]) != 0 or int(offsets[-1]) != len(blob):
        raise DescriptionError(f"{what}: a table of {count} texts is inconsistent")


def check_rows(what: str, values: Any, nrows: int) -> None:
    """C reads ``nrows`` rows of ``values``: refuse fewer (it would read past them)."""
    if len(values) < nrows:
        raise DescriptionError(f"{what}: {len(values)} values for {nrows} rows")


class OutputBuffer:
    """Where a C writer puts a batch's text: one buffer reused from batch to batch and grown
    as needed (a fresh allocation per batch would page-fault on every batch)."""

    def __init__(self) -> None:
        self._array = np.empty(0, dtype=np.uint8)
        self._pointer = ffi.from_buffer(self._array)

    def reserve(self, size: int) -> Any:
        """A C pointer to at least ``size`` bytes, valid until the next call. ``size`` comes
        from a writer's bound: :data:`TOO_BIG` means the description is inconsistent."""
        if size < 0 or size >= TOO_BIG:
            raise DescriptionError("a column description is inconsistent or the batch too big")
        if len(self._array) < size:
            self._array = np.empty(max(size, 2 * len(self._array)), dtype=np.uint8)
            self._pointer = ffi.from_buffer(self._array)
        return self._pointer

    def written(self, size: int) -> memoryview:
        """The first ``size`` bytes: what the writer wrote. Valid until the next reserve."""
        if not 0 <= size <= len(self._array):
            raise DescriptionError(f"a writer reports {size} bytes in {len(self._array)}")
        return self._array.data[:size]


def address(values: Array) -> Any:
    """Where the first element of ``values`` is, as a C pointer (a strided view too). The
    caller keeps ``values`` alive while C reads it."""
    if values.flags.c_contiguous:  # the buffer protocol: no Python-level numpy machinery
        return ffi.from_buffer(values)  # an array: C takes it as a pointer
    return ffi.cast("const char *", values.ctypes.data)


def texts_table(texts: list[bytes]) -> Texts:
    """``texts`` back to back, with where each starts (and the end)."""
    offsets = np.zeros(len(texts) + 1, dtype=np.uint64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    pointer = ffi.cast("const unsigned long long *", ffi.from_buffer(offsets))
    return ffi.from_buffer(b"".join(texts)), offsets, pointer, len(texts)


@cache
def _only_row() -> tuple[Array, Any]:
    """Code 0 (and a C pointer to it), every row's when a table has one text."""
    row = np.zeros(1, dtype=np.int32)
    return row, ffi.cast("const char *", ffi.from_buffer(row))


def positions(codes: Array, count: int) -> tuple[Array, Any, int]:
    """Rows' positions in a table of ``count`` texts as contiguous int32 codes: the array, a
    C pointer to it, and the stride to read it with. C reads a negative code from the end of
    the table, as numpy indexing does. A table of one text is every row's: one code, read
    with stride 0 (an enricher's column when nothing is enriched)."""
    if count == 1:
        return (*_only_row(), 0)
    rows = np.ascontiguousarray(codes, dtype=np.int32)
    return rows, ffi.cast("const char *", ffi.from_buffer(rows)), 4


def distinct(values: Sequence[Any]) -> tuple[list[Any], Array] | None:
    """The distinct values (told apart by type too: ``True`` and ``1`` are equal keys, not
    equal output) and each row's position among them. Unhashable values (lists) are told
    apart by identity: a decoder that gives every row of one value the same list object
    (``trace open``'s flags) costs one text per value, not one per event."""
    seen: dict[Any, int] = {}
    try:
        index = _zeros_apart(
            values, seen, [seen.setdefault((type(v), v), len(seen)) for v in values]
        )
    except TypeError:
        # The values are alive in ``values``: no two of them share an id meanwhile.
        first = {id(v): v for v in values}
        codes = {key: i for i, key in enumerate(first)}
        return list(first.values()), np.array([codes[id(v)] for v in values], dtype=np.int32)
    return [v for _, v in seen], np.array(index, dtype=np.int32)


class _NegativeZero:
    """The key type of ``-0.0`` in :func:`distinct`: equal to ``0.0`` as a float, printed
    apart (``-0.0``), so it must not share its text."""


def text_key(v: Any) -> tuple[type, Any]:
    """A value as a key of its text: its type too (``True`` and ``1`` are equal keys, not
    equal output), and ``-0.0`` apart from ``0.0``."""
    return (_NegativeZero if type(v) is float and not v and np.signbit(v) else type(v), v)


def _zeros_apart(values: Iterable[Any], seen: dict[Any, int], index: list[int]) -> list[int]:
    """``index`` as it is, unless a float zero is among the keys: it stood for both signs
    then, and ``values`` are keyed again, in ``seen``, with ``-0.0`` apart. Batches without a
    float zero pay one lookup."""
    if (float, 0.0) not in seen:
        return index
    seen.clear()
    return [seen.setdefault(text_key(v), len(seen)) for v in values]
