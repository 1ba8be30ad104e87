"""The common shape of an interval (top) gadget: the kernel counts, igrun reads once per interval.

A :class:`BpfTop` is made of one BPF object whose programs add to one entry per key of a hash
map (``igrun/top.h``: ``gadget_stats_entry``). Every interval the map is drained in C, with
batched lookup-and-delete calls into two byte arrays (keys, values): a fixed handful of
syscalls whatever the number of keys, and no Python per entry. The key's members and the
value's members, side by side, make one row; the interval's rows go down the chain as one
batch, and :meth:`~igrun.core.gadget.GadgetContext.end_window` ends the window, so sort and
limit work per interval and the output writes one JSON array or one block per interval (``ig``'s
top gadgets). Deleting as it reads means every interval counts from zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from igrun.core.bpf.attachpoints import skip_missing
from igrun.core.bpf.objects import BpfObject, Map, MapType, possible_cpus
from igrun.core.errors import IgrunError
from igrun.core.events.schema import Batch
from igrun.core.gadget import PARAM_INTERVAL, PARAM_MAX_ROWS, Gadget, GadgetContext, GadgetType
from igrun.core.tracer import LOST_EVENTS_MAP, join_shared, open_object, pin_maps

DEFAULT_INTERVAL = 1.0
"""Seconds between two reports when neither the user nor the gadget says (``ig``'s top)."""
TICK_S = 0.1
"""How often the run looks at Ctrl-C and its timeout while an interval passes."""


def _members(dtype: np.dtype[Any], shift: int = 0) -> list[tuple[str, Any, int]]:
    """``(name, format, offset + shift)`` of each member of a structured dtype."""
    fields: Any = dtype.fields or {}
    return [(name, fields[name][0], fields[name][1] + shift) for name in dtype.names or ()]


def _layout(members: list[tuple[str, Any, int]], itemsize: int) -> np.dtype[Any]:
    spec: dict[str, Any] = {
        "names": [m[0] for m in members],
        "formats": [m[1] for m in members],
        "offsets": [m[2] for m in members],
        "itemsize": itemsize,
    }
    layout: np.dtype[Any] = np.dtype(spec)  # type: ignore[call-overload]
    return layout


def row_dtype(key: np.dtype[Any], value: np.dtype[Any]) -> np.dtype[Any]:
    """The layout of one row: the key's members, then the value's (at the key's size)."""
    clash = sorted(set(key.names or ()) & set(value.names or ()))
    if clash:
        raise IgrunError(f"key and value structs both have member {', '.join(clash)}")
    members = _members(key) + _members(value, key.itemsize)
    return _layout(members, key.itemsize + value.itemsize)


def value_dtype(row: np.dtype[Any], key_size: int, value_size: int) -> np.dtype[Any]:
    """The value part of a row layout, at offset 0."""
    members = [(n, f, o - key_size) for n, f, o in _members(row) if o >= key_size]
    return _layout(members, value_size)


def sum_per_cpu(
    values: np.ndarray[Any, Any], dtype: np.dtype[Any], cpus: int
) -> np.ndarray[Any, Any]:
    """Per-CPU values (each CPU's value padded to 8 bytes) as one value per key: numbers
    summed over the CPUs, anything else (names, addresses) from the first CPU's copy."""
    slot = (dtype.itemsize + 7) // 8 * 8
    padded = _layout(_members(dtype), slot)
    per_cpu = values.reshape(len(values), cpus * slot).view(padded).reshape(len(values), cpus)
    out = np.zeros(len(values), dtype)
    for name in dtype.names or ():
        column = per_cpu[name]
        if column.dtype.kind in "iu" and column.ndim == 2:
            out[name] = column.sum(axis=1)
        else:
            out[name] = column[:, 0]
    return out


class BpfMapGadget(Gadget):
    """Base class of gadgets whose programs count per key in one BPF hash map that igrun
    drains (:class:`BpfTop` every interval, :class:`~igrun.core.histogram.BpfHistogram` at
    the end): the object loaded with its constants and the run's filter, the row layout read
    from the key and value structs' BTF, the map checked against them, every program attached,
    and the keys that found the map full reported as lost."""

    bpf_object: ClassVar[str]
    """File name of the compiled object, in the gadget's package."""
    stats_map: ClassVar[str] = "stats"
    """The hash map (or per-CPU hash map: its numbers are summed) the programs count in."""
    map_types: ClassVar[tuple[int, ...]] = (MapType.HASH, MapType.PERCPU_HASH)
    """The map types the gadget reads."""
    key_struct: ClassVar[str]
    value_struct: ClassVar[str]
    """The map's key and value structs (kept in BTF by ``GADGET_TOPPER``)."""
    stats_entries: ClassVar[int] = 0
    """The map's ``max_entries`` (keys it holds at once); 0 keeps the object's."""
    optional_programs: ClassVar[tuple[str, ...]] = ()
    """Programs the gadget can do without, skipped when the kernel lacks their attach point."""

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.map: Map | None = None
        self.lost_map: Map | None = None
        self.row: np.dtype[Any] | None = None
        self.key: np.dtype[Any] | None = None
        self.value: np.dtype[Any] | None = None
        self.syscalls = 0
        """Syscalls the last drain took (the benchmark reports them)."""
        self._lost_seen = 0

    # -- what subclasses override

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """Values for the object's ``const volatile`` globals, from the params."""
        return {}

    def configure(self, ctx: GadgetContext, obj: BpfObject) -> None:
        """The opened object, before load (programs' autoload, map sizes)."""

    def transform(self, batch: Batch) -> Batch:
        """A last look at the rows before they go down the chain (derived columns, rows to
        drop)."""
        return batch

    def layout(self, ctx: GadgetContext, key: np.dtype[Any], value: np.dtype[Any]) -> np.dtype[Any]:
        """The layout of a row, from the key and value structs: by default the key's members,
        then the value's (:func:`row_dtype`)."""
        return row_dtype(key, value)

    # -- lifecycle

    def object_path(self) -> Any:
        """Where the compiled object is: by default :attr:`bpf_object` in the package."""
        import importlib.resources

        return importlib.resources.files(type(self).__module__) / self.bpf_object

    def init(self, ctx: GadgetContext) -> None:
        obj = self.obj = open_object(self.object_path())
        try:
            for name, constant in self.constants(ctx).items():
                obj.set_global(name, constant)
            join_shared(ctx, obj)
            if obj.map_type(self.stats_map) not in self.map_types:
                raise IgrunError(f"{self.id()}: map {self.stats_map} is not a hash map")
            if self.stats_entries:
                obj.set_max_entries(self.stats_map, self.stats_entries)
            key = self.key = obj.struct_dtype(self.key_struct, nested=True)
            value = self.value = obj.struct_dtype(self.value_struct, nested=True)
            self.row = self.layout(ctx, key, value)
            ctx.schema = self.schema.bind(self.row)
            if self.optional_programs:
                skip_missing(obj, self.optional_programs)
            self.configure(ctx, obj)
            obj.load()
            self.map = obj.map(self.stats_map)
            if self.map.key_size != key.itemsize or self.map.value_size != value.itemsize:
                raise IgrunError(
                    f"{self.id()}: map {self.stats_map} holds {self.map.key_size}-byte keys and "
                    f"{self.map.value_size}-byte values, not struct {self.key_struct} "
                    f"({key.itemsize}) and struct {self.value_struct} ({value.itemsize})"
                )
            self.lost_map = obj.map(LOST_EVENTS_MAP) if obj.has_map(LOST_EVENTS_MAP) else None
            pin_maps(ctx, obj, self.id())
            obj.attach_all()
        except BaseException:
            self.close()
            raise

    def _report_lost(self, ctx: GadgetContext) -> None:
        if self.lost_map is None:
            return
        counts = self.lost_map.lookup_per_cpu((0).to_bytes(4, "little")) or []
        total = sum(int.from_bytes(c[:8], "little") for c in counts)
        if total > self._lost_seen:
            ctx.report_lost(total - self._lost_seen)
            self._lost_seen = total

    def close(self) -> None:
        self.map = None
        self.lost_map = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None


class BpfTop(BpfMapGadget):
    """Base class of gadgets that count per key in a BPF hash map and report every interval."""

    type = GadgetType.TRACE_INTERVALS
    param_defaults: ClassVar[Mapping[str, str]] = {PARAM_INTERVAL: "1s", PARAM_MAX_ROWS: "50"}
    """``ig`` v0.25's defaults for interval gadgets: every second, at most 50 rows."""

    def interval(self, ctx: GadgetContext) -> float:
        return float(ctx.runtime_params.get(PARAM_INTERVAL) or DEFAULT_INTERVAL)

    def run(self, ctx: GadgetContext) -> None:
        import time

        every = self.interval(ctx)
        start = time.monotonic()
        if ctx.timeout:
            # Intervals count from where the timeout does (the run's start), so that
            # --timeout 3s --interval 1s reports three intervals, as ig's top gadgets do.
            start += ctx.remaining(float("inf")) - ctx.timeout
        due = start + every
        while not ctx.done:
            while not ctx.done and time.monotonic() < due:
                ctx.heartbeat()
                time.sleep(ctx.remaining(min(TICK_S, max(0.0, due - time.monotonic()))))
            if ctx.done and time.monotonic() < due:
                break  # a partial interval is not reported: its counts would mislead
            due += every
            self.report(ctx)

    def read(self) -> np.ndarray[Any, Any]:
        """The interval's rows, drained from the map: one numpy record per key."""
        assert self.map is not None and self.row is not None
        keys, values, self.syscalls = self.map.drain(delete=True)
        rows = np.empty(len(keys), self.row)
        raw = rows.view(np.uint8).reshape(len(keys), self.row.itemsize)
        raw[:, : self.map.key_size] = keys
        if self.map.per_cpu:
            layout = value_dtype(self.row, self.map.key_size, self.map.value_size)
            summed = sum_per_cpu(values, layout, possible_cpus())
            raw[:, self.map.key_size :] = summed.view(np.uint8).reshape(len(keys), -1)
        else:
            raw[:, self.map.key_size :] = values
        return rows

    def report(self, ctx: GadgetContext) -> None:
        """One interval: drain, emit its rows (even none), end the window."""
        assert ctx.schema is not None
        rows = self.read()
        self._report_lost(ctx)
        ctx.emit(self.transform(Batch(ctx.schema, rows)))
        ctx.end_window()
