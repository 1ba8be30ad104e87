"""Events, described once.

A :class:`Schema` names the fields of a gadget's events and says how to show them. Where the
values come from is the BPF C event struct: its layout is read from the object's BTF at load
time (:meth:`Schema.bind`), so C and Python cannot drift apart. The same schema then drives
decoding, columns, JSON, filters, sorting and enrichment.

A :class:`Batch` is many events at once: a numpy structured array over the records drained from
the kernel plus columns that operators add. Everything downstream works on whole batches; a
per-event :class:`Event` view exists for convenience and tests.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[Any]
else:
    from igrun.core.lazy import numpy as np

    Array = Any  # numpy's array type, without importing numpy before it is needed


class Kind(enum.StrEnum):
    """What a field's values are, which decides how they filter, sort and print."""

    INT = "int"
    UINT = "uint"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    BYTES = "bytes"
    TIME = "time"
    """Nanoseconds since the epoch (wall time); printed as RFC 3339."""
    LIST = "list"
    """A list of strings (e.g. exec args)."""
    MAP = "map"
    """String keys and values (e.g. a pod's labels): a JSON object, ``k=v,k2=v2`` as text."""

    @property
    def numeric(self) -> bool:
        return self in (Kind.INT, Kind.UINT, Kind.FLOAT, Kind.BOOL, Kind.TIME)


@dataclass(frozen=True)
class Column:
    """How a field is shown in the columns output (Inspektor Gadget's column attributes)."""

    width: int = 0
    """Preferred width; 0 picks one from the kind."""
    min_width: int = 0
    max_width: int = 0
    align: Literal["left", "right"] = "left"
    hidden: bool = False
    """Not among the default columns; still in JSON and selectable with ``-o columns=+name``."""
    ellipsis: Literal["end", "start", "middle", "none"] = "end"
    order: int = 0
    """Columns sort by order, then by declaration; lower comes first."""
    fixed: bool = False
    """Never scaled to the terminal."""
    errno: Literal["", "positive", "returned"] = ""
    """The columns output shows an error number by name (``ENOENT``) where JSON keeps the
    number, as ``ig`` does: ``positive`` for an errno, ``returned`` for a return value
    (``-errno`` on failure). Values that are no error stay numbers (``0``, a pid)."""
    units: Literal["", "bytes"] = ""
    """The columns output shows a byte count as ``ig``'s top gadgets do (``1.465KiB``: powers
    of 1024, four significant digits) where JSON keeps the number; sorting uses the number."""
    cut_by: str = ""
    """A boolean field that says the kernel cut this value (``trace exec``'s ``truncated``):
    the columns output then ends the cell with :data:`CUT_MARK`, as ``execsnoop`` does."""
    text: Callable[[Any], str] | None = None
    """How the columns output shows a value, as ``ig``'s column extractors do (a run time as
    ``1.5ms``), where JSON, filters and sorting keep the value itself."""


CUT_MARK = " ..."
"""Ends a cell whose value the kernel cut (see :attr:`Column.cut_by`); ``…`` is the columns
output's own cut to the column's width."""

_DEFAULT_WIDTH = {
    Kind.INT: 7,
    Kind.UINT: 7,
    Kind.FLOAT: 9,
    Kind.BOOL: 5,
    Kind.STR: 16,
    Kind.BYTES: 16,
    Kind.TIME: 35,
    Kind.LIST: 40,
    Kind.MAP: 40,
}


Decoder = Callable[["Batch"], Array]


@dataclass(frozen=True)
class Field:
    """One named, typed value of an event.

    By default a field is the struct member of the same name; ``member`` names another one, and
    ``decode`` computes the values from the whole batch instead (e.g. a wall time from a boot
    timestamp, or a list of args from a NUL-separated buffer).
    """

    name: str
    kind: Kind
    description: str = ""
    member: str | None = None
    json: str | None = None
    """JSON key; defaults to ``name``; ``"-"`` keeps the field out of JSON (a column made
    for reading, like ``src`` = ``addr:port`` next to the structured ``src.addr``)."""
    column: Column = field(default_factory=Column)
    decode: Decoder | None = None
    omit_empty: bool = False
    """Left out of JSON output when empty (0, false, "" or an empty list), as Go's
    ``omitempty``: ``ig`` writes ``"pid"`` only when non-zero but ``"uid"`` always."""
    tags: tuple[str, ...] = ()
    """What the field means to operators: ``mntns`` / ``netns`` (namespace ids containers are
    found by), ``boot_time`` (its member holds ``bpf_ktime_get_boot_ns``)."""

    @property
    def json_key(self) -> str:
        return self.json or self.name

    @property
    def in_json(self) -> bool:
        return self.json != "-"

    @property
    def source(self) -> str:
        return self.member or self.name

    @property
    def width(self) -> int:
        return self.column.width or _DEFAULT_WIDTH[self.kind]


class Schema:
    """The fields of one event type, and (once bound) the C layout they decode from."""

    def __init__(
        self,
        fields: Sequence[Field],
        struct: str | None = None,
        dtype: np.dtype[Any] | None = None,
    ) -> None:
        self.fields: tuple[Field, ...] = tuple(fields)
        self.struct = struct
        """Name of the BPF C struct that holds one event, looked up in the object's BTF."""
        self.dtype = dtype
        self._by_name = {f.name: f for f in self.fields}
        for f in self.fields:
            if f.json_key != f.name:
                self._by_name.setdefault(f.json_key, f)
        if len({f.name for f in self.fields}) != len(self.fields):
            raise ValueError("field names must be unique")

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def bind(self, dtype: np.dtype[Any]) -> Schema:
        """This schema over a concrete C layout; checks every member-backed field exists."""
        names = set(dtype.names or ())
        missing = [f.source for f in self.fields if f.decode is None and f.source not in names]
        if missing:
            raise ValueError(f"struct {self.struct} has no member {', '.join(missing)}")
        return Schema(self.fields, self.struct, dtype)

    def extend(self, fields: Sequence[Field]) -> Schema:
        """This schema plus fields that operators add (enrichers); existing names win."""
        new = [f for f in fields if f.name not in self._by_name]
        return Schema([*self.fields, *new], self.struct, self.dtype)

    def with_column(self, name: str, column: Column) -> Schema:
        """This schema with field ``name`` shown as ``column``: for a param that decides
        whether a column is a default one (``ig``'s column tags), set once the params are
        known."""
        return Schema(
            [replace(f, column=column) if f.name == name else f for f in self.fields],
            self.struct,
            self.dtype,
        )

    def tagged(self, tag: str) -> Field | None:
        """The first field carrying ``tag``, if any."""
        return next((f for f in self.fields if tag in f.tags), None)

    def default_columns(self) -> list[Field]:
        visible = [f for f in self.fields if not f.column.hidden]
        return sorted(visible, key=lambda f: f.column.order)

    def decode(self, data: bytes | bytearray | memoryview, count: int | None = None) -> Batch:
        """A batch over ``count`` records of ``dtype.itemsize`` bytes each."""
        if self.dtype is None:
            raise ValueError("schema is not bound to a C layout")
        raw = np.frombuffer(data, dtype=self.dtype, count=-1 if count is None else count)
        return Batch(self, raw)

    def empty(self) -> Batch:
        dtype = self.dtype if self.dtype is not None else np.dtype([])
        return Batch(self, np.zeros(0, dtype=dtype))


class Batch:
    """Many events of one schema: raw C records plus columns added by operators.

    Columns are decoded lazily and cached; :meth:`select` keeps rows (filters, limits) and
    :meth:`take` reorders them (sort), applying the same index to everything at once. An
    enricher's column is often a few distinct values (one per container): it can be set
    *coded* (:meth:`set_coded`), a small table plus one index per row, which writers use as
    it is and which becomes a plain column only when something asks for one.
    """

    def __init__(
        self,
        schema: Schema,
        raw: Array,
        columns: Mapping[str, Array] | None = None,
        coded: Mapping[str, tuple[Array, Array]] | None = None,
    ) -> None:
        self.schema = schema
        self.raw = raw
        self._columns: dict[str, Array] = dict(columns or {})
        self._coded: dict[str, tuple[Array, Array]] = dict(coded or {})

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, name: str) -> Array:
        """The values of field ``name`` for every event (a numpy array, decoded once)."""
        col = self._columns.get(name)
        if col is not None:
            return col
        f = self.schema[name]
        if f.name in self._columns:
            return self._columns[f.name]
        if f.name in self._coded:
            table, codes = self._coded[f.name]
            col = table[codes]
        elif f.decode is not None:
            col = f.decode(self)
        elif f.kind is Kind.STR:
            col = decode_cstrings(self.raw[f.source])
        else:
            return self.raw[f.source]  # a view of the records: nothing to keep beside them
        self._columns[f.name] = col
        return col

    def raw_values(self, name: str) -> Array | None:
        """The raw struct member behind field ``name`` when its values are exactly that
        member (no decoder, not replaced by an operator): writers can read it in place."""
        f = self.schema[name]
        if f.decode is not None or self.overlaid(f.name):
            return None
        if self.raw.dtype.names is None:
            return None
        if f.source not in self.raw.dtype.names:
            return None
        return self.raw[f.source]

    def distinct(self, name: str) -> tuple[Array, Array] | None:
        """Field ``name`` as a table of values and each row's position in it, where the batch
        has that cheaply: a coded column as it is, or a C string member made distinct by
        ``np.unique`` (each value then decoded once). Readers that test or format values do
        it per table row, not per event. None otherwise."""
        coded = self.coded(name)
        if coded is not None:
            return coded
        raw = self.raw_values(name)
        if raw is None or raw.dtype.kind != "S" or self.schema[name].kind is not Kind.STR:
            return None
        unique, inverse = np.unique(raw, return_inverse=True)
        return decode_cstrings(unique), inverse.reshape(-1)

    def layers(self) -> tuple[Mapping[str, Array], Mapping[str, tuple[Array, Array]]]:
        """What lies beside the records, by field name: plain columns (an operator's, or a
        decoded copy) and coded ones. For writers, which look at every field of every batch;
        not to be changed through."""
        return self._columns, self._coded

    def overlaid(self, name: str) -> bool:
        """Whether field ``name`` (its canonical name) has values beside the raw records: an
        operator's column, a coded column, or a decoded copy. Cheap: writers ask per batch."""
        return name in self._columns or name in self._coded

    def member(self, name: str) -> Array:
        """A raw C struct member, for decoders that combine several of them."""
        return self.raw[name]

    def set_column(self, name: str, values: Array) -> None:
        """Add or replace a column (enrichers); ``name`` must be a field of the schema."""
        if name not in self.schema:
            raise KeyError(f"{name!r} is not a field of this batch's schema")
        if len(values) != len(self):
            raise ValueError(f"column {name!r} has {len(values)} values for {len(self)} events")
        self._columns[name] = values
        self._coded.pop(name, None)

    def set_coded(self, name: str, table: Array, codes: Array) -> None:
        """Add or replace a column given as ``table[codes]``, without building it."""
        self.set_coded_group({name: table}, codes)

    def set_coded_group(self, tables: Mapping[str, Array], codes: Array) -> None:
        """Several coded columns with the same ``codes``: an enricher's fields for one entity
        per row (a container's name, id, image...). Writers see that they share codes."""
        if len(codes) != len(self):
            raise ValueError(f"{len(codes)} codes for {len(self)} events")
        unknown = tables.keys() - self.schema._by_name.keys()
        if unknown:
            raise KeyError(f"{min(unknown)!r} is not a field of this batch's schema")
        for name, table in tables.items():
            self._coded[name] = (table, codes)
            if self._columns:
                self._columns.pop(name, None)

    def coded(self, name: str) -> tuple[Array, Array] | None:
        """``(table, codes)`` when field ``name`` was set coded and not replaced since."""
        return self._coded.get(self.schema[name].name)

    def with_schema(self, schema: Schema) -> Batch:
        return Batch(schema, self.raw, self._columns, self._coded)

    def take(self, index: Array) -> Batch:
        """The events at ``index`` (a boolean mask or integer positions), in that order."""
        return Batch(
            self.schema,
            self.raw[index],
            {k: v[index] for k, v in self._columns.items()},
            {k: (table, codes[index]) for k, (table, codes) in self._coded.items()},
        )

    select = take

    def head(self, n: int) -> Batch:
        return self if n >= len(self) else self.take(np.arange(n))

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        """One batch from several of the same schema (interval windows)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        for b in batches:  # tables differ from batch to batch: build the columns
            for name in list(b._coded):
                b[name]
        keys = set.intersection(*(set(b._columns) for b in batches))
        return Batch(
            first.schema,
            np.concatenate([b.raw for b in batches]),
            {k: np.concatenate([b._columns[k] for b in batches]) for k in keys},
        )

    def values(self, name: str) -> list[Any]:
        """Python values of one field (for output), converted once for the whole batch."""
        col = self[name]
        kind = self.schema[name].kind
        if kind is Kind.BOOL:
            return [bool(v) for v in col]
        if col.dtype.kind in "iuf":
            return col.tolist()  # type: ignore[no-any-return]
        return list(col)

    def events(self) -> Iterator[Event]:
        """One :class:`Event` per row; convenient, not fast."""
        for i in range(len(self)):
            yield Event(self, i)

    def to_dicts(
        self, fields: Sequence[Field] | None = None, omit_empty: bool = False
    ) -> list[dict[str, Any]]:
        """Rows as dicts keyed by JSON name; dotted names nest (``runtime.containerName`` is
        ``{"runtime": {"containerName": …}}``, as ``ig`` prints it). With ``omit_empty``, as
        ``-o json`` writes them: an empty value of an ``omit_empty`` field is left out (its
        object stays, as Go writes a struct even when ``omitempty``)."""
        fields = [f for f in (fields or self.schema.fields) if f.in_json]
        flat = [(f, self.values(f.name)) for f in fields if "." not in f.json_key]
        nested: dict[str, list[tuple[Field, str, list[Any]]]] = {}
        for f in fields:
            if "." in f.json_key:
                outer, _, inner = f.json_key.partition(".")
                nested.setdefault(outer, []).append((f, inner, self.values(f.name)))

        def kept(f: Field, value: Any) -> bool:
            return not (omit_empty and f.omit_empty and is_empty(value))

        rows = [
            {f.json_key: vals[i] for f, vals in flat if kept(f, vals[i])} for i in range(len(self))
        ]
        for outer, cols in nested.items():
            for i, row in enumerate(rows):
                row[outer] = {key: vals[i] for f, key, vals in cols if kept(f, vals[i])}
        return rows


def map_text(value: Any) -> str:
    """A :attr:`Kind.MAP` value as the columns output shows it (and filters and sorts
    see it): ``k=v`` pairs by key, joined by commas."""
    return ",".join(f"{k}={v}" for k, v in sorted(dict(value or {}).items()))


def is_empty(value: Any) -> bool:
    """Whether Go's ``omitempty`` leaves ``value`` out: 0, false, "", an empty list or map,
    or nothing (None)."""
    if value is None:
        return True
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return len(value) == 0
    if isinstance(value, (bool, int, float, np.generic)):
        return not bool(value)
    return False


@dataclass(frozen=True)
class Event:
    """A read-only view of one row of a batch."""

    batch: Batch
    index: int

    def __getitem__(self, name: str) -> Any:
        value = self.batch[name][self.index]
        return value.item() if isinstance(value, np.generic) else value

    def to_dict(self) -> dict[str, Any]:
        return {f.json_key: self[f.name] for f in self.batch.schema.fields if f.in_json}


def decode_cstrings(values: Array) -> Array:
    """NUL-terminated byte arrays (numpy ``S<n>``) to a numpy array of ``str``."""
    if values.dtype.kind != "S":
        values = values.astype(f"S{values.dtype.itemsize}")
    out = np.empty(len(values), dtype=object)
    out[:] = [v.partition(b"\0")[0].decode("utf-8", "replace") for v in values.tolist()]
    return out


def field_like(f: Field, **changes: Any) -> Field:
    """A copy of ``f`` with some attributes changed."""
    return replace(f, **changes)
