"""The common shape of a histogram (profile) gadget: the kernel buckets, igrun reads at the end.

A :class:`BpfHistogram` is one BPF object whose programs add 1 to a log2 bucket of one
histogram per key in a hash map (``struct hist { __u32 slots[MAX_SLOTS]; ... }``, as
``biolatency`` and ``tcprtt`` keep theirs). The run collects until its timeout, Ctrl-C or
SIGTERM, then drains the map with one batched lookup-and-delete in C and emits its histograms
once, as one batch of rows: one row per bucket of each key, from the first bucket to the last
one that counted (``ig``'s intervals), with the key's members, the value's other members, the
bucket's ``start``, ``end`` and ``count``, and the run's constants (:meth:`row_constants`).
With ``--interval`` it does the same every interval, each histogram counting from zero (as
``biolatency 10`` does). The window then ends, so the output writes the whole histogram in
the chosen format (:func:`report`, ``ig``'s terminal histogram) and metrics take every
bucket's count (a Prometheus histogram, see docs/metrics.md).

Bucket ``i`` holds the values ``v`` with ``floor(log2(v)) == i`` (``0`` and ``1`` in bucket
0): ``start = 2**i`` (0 for bucket 0) and ``end = 2**(i+1) - 1``, inclusive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from igrun.core.bpf.objects import MapType
from igrun.core.errors import IgrunError, ParamError
from igrun.core.events.schema import Batch, Column, Field, Kind
from igrun.core.gadget import PARAM_INTERVAL, GadgetContext, GadgetType
from igrun.core.top import BpfMapGadget

if TYPE_CHECKING:
    from igrun.core.operator import RunPlan

TICK_S = 0.1
"""How often the run looks at Ctrl-C and its timeout while it collects."""
UNIT_MS = "ms"
UNIT_US = "µs"
"""The units ``ig`` names its histograms in (its ``histogram.Unit``)."""
BUCKET_MEMBERS = ("slot", "start", "end", "count")
"""The members every row adds after the key's and the value's."""


def _flat(dtype: np.dtype[Any], skip: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """``(name, dtype)`` of each member of a structured dtype (arrays keep their shape)."""
    fields: Any = dtype.fields or {}
    return [(name, fields[name][0]) for name in dtype.names or () if name not in skip]


def bucket_bounds(slot: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Inclusive ``start`` and ``end`` of log2 buckets, as ``ig`` writes them."""
    slot = slot.astype(np.uint64)
    one = np.uint64(1)
    start = np.where(slot == 0, np.uint64(0), one << slot)
    return start, (one << (slot + one)) - one


def unit_field(member: str = "ms") -> Field:
    """``unit``: ``ms`` or ``µs``, from a row constant that is 1 for milliseconds."""
    return Field(
        "unit",
        Kind.STR,
        "the unit of start and end: µs, or ms with --milliseconds",
        decode=lambda batch: np.where(batch.member(member) != 0, UNIT_MS, UNIT_US).astype(object),
        column=Column(width=4, hidden=True),
    )


def bucket_fields() -> list[Field]:
    """``start``, ``end`` and ``count`` of each bucket, as ``ig``'s intervals name them."""
    return [
        Field(
            "start",
            Kind.UINT,
            "the smallest value of the bucket (its unit is unit)",
            column=Column(width=10, align="right"),
        ),
        Field(
            "end",
            Kind.UINT,
            "the largest value of the bucket (inclusive)",
            column=Column(width=10, align="right"),
        ),
        Field("count", Kind.UINT, "values in the bucket", column=Column(width=8, align="right")),
    ]


def stars(count: int, most: int, width: int = 40) -> str:
    """The bar of ``print_log2_hist`` (bcc's ``print_stars``): ``count`` in ``width`` stars."""
    if most == 0:
        return " " * width
    n = count * width // most
    return "*" * n + " " * (width - n)


def histogram_text(unit: str, intervals: Sequence[tuple[int, int, int]]) -> str:
    """One histogram as ``ig`` prints it (``histogram.String``, after bcc's
    ``print_log2_hist``): a header with the unit, then ``start -> end : count |bar|`` per
    bucket; empty when there are no buckets."""
    if not intervals:
        return ""
    most = max(count for _, _, count in intervals)
    lines = [f"{'':8}{unit:<16} : count    distribution\n"]
    for start, end, count in intervals:
        lines.append(f"{start:>10} -> {end:<10} : {count:<8} |{stars(count, most)}|\n")
    return "".join(lines)


def groups(batch: Batch, by: Sequence[str]) -> list[tuple[dict[str, Any], np.ndarray[Any, Any]]]:
    """The rows of each histogram of a batch: ``(the first row's values of the fields
    ``by``, the row indices ordered by bucket)``, histograms in the order they first appear
    (a filter may have dropped rows, a sort reordered them)."""
    if not len(batch):
        return []
    columns = [np.asarray(batch[name]) for name in by]
    keys = list(zip(*(c.tolist() for c in columns), strict=True)) if by else [()] * len(batch)
    order: dict[tuple[Any, ...], list[int]] = {}
    for i, key in enumerate(keys):  # per row of a histogram (tens of rows), not per event
        order.setdefault(key, []).append(i)
    starts = np.asarray(batch["start"])
    out = []
    for key, rows in order.items():
        index = np.asarray(rows)
        index = index[np.argsort(starts[index], kind="stable")]
        out.append((dict(zip(by, key, strict=True)), index))
    return out


def intervals(batch: Batch, index: np.ndarray[Any, Any]) -> list[dict[str, int]]:
    """``ig``'s ``intervals`` of one histogram: ``{"count", "start", "end"}`` per bucket."""
    counts = np.asarray(batch["count"])[index].tolist()
    starts = np.asarray(batch["start"])[index].tolist()
    ends = np.asarray(batch["end"])[index].tolist()
    return [
        {"count": c, "start": s, "end": e} for c, s, e in zip(counts, starts, ends, strict=True)
    ]


def report(
    batch: Batch, by: Sequence[str], title: Callable[[dict[str, Any]], str] | None = None
) -> bytes:
    """The terminal histograms of a batch (one per distinct value of the fields ``by``),
    each after its ``title`` line when given."""
    units = np.asarray(batch["unit"]).tolist() if len(batch) else []
    parts = []
    for values, index in groups(batch, by):
        rows = [(r["start"], r["end"], r["count"]) for r in intervals(batch, index)]
        text = histogram_text(units[int(index[0])], rows)
        parts.append(f"{title(values)}\n{text}" if title is not None else text)
    return "\n".join(parts).encode()


def json_line(value: Any) -> bytes:
    """One JSON value on one line, as ``ig`` prints a result (``µs`` kept as UTF-8)."""
    return (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


class BpfHistogram(BpfMapGadget):
    """Base class of gadgets that bucket values in BPF log2 histograms and report them once."""

    type = GadgetType.PROFILE
    stats_map: ClassVar[str] = "hists"
    """The hash map of histograms, one per key."""
    map_types: ClassVar[tuple[int, ...]] = (MapType.HASH, MapType.ARRAY)
    key_struct: ClassVar[str] = "hist_key"
    value_struct: ClassVar[str] = "hist"
    slots_member: ClassVar[str] = "slots"
    """The value's array of bucket counts."""
    param_defaults: ClassVar[Mapping[str, str]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.counted = 0
        """Rows reported so far (the run says so when there were none)."""
        self._constants: dict[str, int] = {}

    @classmethod
    def check_params(cls, plan: RunPlan) -> None:
        if plan.runtime_params.get("buffer-size"):
            raise ParamError(
                f"--buffer-size: {cls.full_name()} has no events buffer (its histograms are "
                "a BPF map, read once)"
            )

    def row_constants(self, ctx: GadgetContext) -> dict[str, int]:
        """Members every row carries with one value for the run (``ms`` = 1 when the
        histogram is in milliseconds): what the output formats need beside the buckets."""
        return {}

    def layout(self, ctx: GadgetContext, key: np.dtype[Any], value: np.dtype[Any]) -> np.dtype[Any]:
        """One row per bucket: the key's members, the value's other members, the run's
        constants, then the bucket (slot, start, end, count)."""
        self._constants = self.row_constants(ctx)
        return self._row_dtype()

    def _row_dtype(self) -> np.dtype[Any]:
        assert self.key is not None and self.value is not None
        if self.slots_member not in (self.value.names or ()):
            raise IgrunError(f"{self.id()}: struct {self.value_struct} has no {self.slots_member}")
        members = _flat(self.key) + _flat(self.value, skip=(self.slots_member,))
        members += [(name, np.dtype(np.uint64)) for name in self._constants]
        members += [(name, np.dtype(np.uint64)) for name in BUCKET_MEMBERS]
        names = [m[0] for m in members]
        if len(set(names)) != len(names):
            raise IgrunError(f"{self.id()}: a member name repeats in {names}")
        return np.dtype(members)

    def run(self, ctx: GadgetContext) -> None:
        every = float(ctx.runtime_params.get(PARAM_INTERVAL) or 0.0)
        due = time.monotonic() + every if every else None
        while not ctx.done:
            ctx.heartbeat()
            if due is not None and time.monotonic() >= due:
                due += every
                self.report(ctx)
                continue
            cap = TICK_S if due is None else min(TICK_S, max(0.0, due - time.monotonic()))
            time.sleep(ctx.remaining(cap))
        self.report(ctx)  # what was collected since the last report: the result
        if not self.counted:
            ctx.logger.info("nothing_counted", why="no value reached the histograms")

    def read(self) -> np.ndarray[Any, Any]:
        """The histograms, drained from the map in one batch: one row per bucket of each key,
        up to the last bucket that counted."""
        assert self.map is not None and self.row is not None
        assert self.key is not None and self.value is not None
        keys_raw, values_raw, self.syscalls = self.map.drain(delete=True)
        n = len(keys_raw)
        if not n:
            return np.zeros(0, self.row)
        keys: Any = keys_raw.reshape(-1).view(self.key)[:n]
        values: Any = np.ascontiguousarray(values_raw[:, : self.value.itemsize]).reshape(-1)
        values = values.view(self.value)[:n]
        slots = np.asarray(values[self.slots_member]).reshape(n, -1).astype(np.uint64)
        nonzero = slots != 0
        last = slots.shape[1] - 1 - np.argmax(nonzero[:, ::-1], axis=1)
        lengths = np.where(nonzero.any(axis=1), last + 1, 0)
        total = int(lengths.sum())
        rows = np.zeros(total, self.row)
        if not total:
            return rows
        which = np.repeat(np.arange(n), lengths)
        first = np.repeat(np.cumsum(lengths) - lengths, lengths)
        slot = np.arange(total) - first
        for name, _ in _flat(self.key):
            rows[name] = keys[name][which]
        for name, _ in _flat(self.value, skip=(self.slots_member,)):
            rows[name] = values[name][which]
        for name, value in self._constants.items():
            rows[name] = value
        rows["slot"] = slot
        rows["start"], rows["end"] = bucket_bounds(slot)
        rows["count"] = slots[which, slot]
        return rows

    def report(self, ctx: GadgetContext) -> None:
        """Drain, emit the rows (even none), end the window: the output writes it whole."""
        assert ctx.schema is not None
        rows = self.read()
        self.counted += len(rows)
        self._report_lost(ctx)
        ctx.emit(self.transform(Batch(ctx.schema, rows)))
        ctx.end_window()
