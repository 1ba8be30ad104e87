"""Metric values of whole batches: rows grouped by their labels once, counted, summed and
bucketed with numpy, and kept in a collector on the operator's own registry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.events.schema import Array, Batch, Field, Kind, decode_cstrings, map_text
from igrun.core.gadget import GadgetContext
from igrun.operators.metrics_config import (
    BUFFER_SIZE_METRIC,
    BUFFER_USE_METRICS,
    KERNEL_MODULE,
    MODULES_COLUMN,
    RUN_METRICS,
    LabelKey,
    Metric,
    MetricKind,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric as MetricFamily


def _texts(values: Array, kind: Kind) -> Array:
    """Label texts for distinct values (a table, not every row): few Python calls."""
    if kind is Kind.BOOL:
        out = ["true" if v else "false" for v in values.tolist()]
    elif kind is Kind.LIST:
        out = [" ".join(v) if isinstance(v, list | tuple) else str(v) for v in values.tolist()]
    elif kind is Kind.MAP:
        out = [map_text(v) for v in values.tolist()]
    else:
        out = [str(v) for v in values.tolist()]
    return np.array(out, dtype=object)


LabelColumn = tuple[Array, Array]
"""The distinct label texts of one column, and per row the position of its text."""


def label_column(batch: Batch, f: Field) -> LabelColumn:
    """One label column of ``batch`` as distinct texts and codes; Python sees only the distinct
    values (an enricher's table, or the result of ``np.unique``)."""
    coded = batch.coded(f.name)
    raw = batch.raw_values(f.name)
    if coded is not None:  # an enricher's table: never build the column
        table, codes = coded
    elif f.kind is Kind.STR and raw is not None and raw.dtype.kind == "S":
        distinct, codes = np.unique(raw, return_inverse=True)  # on the bytes: no decoding
        table = decode_cstrings(distinct)
    else:
        col = batch[f.name]
        if f.kind is Kind.LIST:
            col = np.array([" ".join(v) for v in col], dtype=object)
        elif f.kind is Kind.MAP:
            col = np.array([map_text(v) for v in col], dtype=object)
        table, codes = np.unique(col, return_inverse=True)
    texts, remap = np.unique(_texts(table, f.kind), return_inverse=True)  # equal texts merge
    return texts, remap.reshape(-1)[codes.reshape(-1)]  # a code of -1 is the table's last row


class LabelColumns:
    """The label columns of one batch, each made once however many metrics use it."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self._made: dict[str, LabelColumn] = {}
        self._frames: FrameTable | None = None
        self._frames_made = False

    def __getitem__(self, f: Field) -> LabelColumn:
        if f.name not in self._made:
            self._made[f.name] = label_column(self.batch, f)
        return self._made[f.name]

    def frames(self) -> FrameTable | None:
        """The batch's stack frames, coded once for every per-function metric."""
        if not self._frames_made:
            self._frames = frame_table(self.batch)
            self._frames_made = True
        return self._frames


def group_rows(columns: list[LabelColumn], rows: int) -> tuple[Array, list[LabelKey]]:
    """Each row's group and each group's label values, from the codes of the label columns."""
    if not columns:
        return np.zeros(rows, dtype=np.intp), [()]
    combined = columns[0][1]
    for texts, codes in columns[1:]:  # compact after each step: the key never overflows
        combined = np.unique(combined * len(texts) + codes, return_inverse=True)[1].reshape(-1)
    _, first, inverse = np.unique(combined, return_index=True, return_inverse=True)
    per_column = [texts[codes[first]].tolist() for texts, codes in columns]
    return inverse.reshape(-1), list(zip(*per_column, strict=True))


@dataclass
class Aggregate:
    """What one batch adds to one metric: per label set a value (count, sum, last value), or
    for histograms a row of per-bucket counts (+Inf last) and a sum."""

    keys: list[LabelKey]
    values: Array
    sums: Array | None = None


def aggregate(metric: Metric, batch: Batch, labels: LabelColumns) -> Aggregate | None:
    """The batch's contribution to ``metric``, computed on whole columns."""
    keep: Array | None = None
    if metric.filters:
        keep = metric.filters[0].mask(batch)
        for f in metric.filters[1:]:
            keep &= f.mask(batch)
        if keep.all():
            keep = None
    rows = len(batch) if keep is None else int(np.count_nonzero(keep))
    if rows == 0:
        return None
    columns = [labels[f] for f in metric.labels]
    if keep is not None:
        columns = [(texts, codes[keep]) for texts, codes in columns]
    inverse, keys = group_rows(columns, rows)
    if metric.frames:
        return function_samples(metric.frames, labels.frames(), keep, inverse, keys)
    groups = len(keys)
    values = None
    if metric.field is not None:
        values = np.asarray(batch[metric.field.name], dtype=np.float64)
        if keep is not None:
            values = values[keep]
        if metric.scale != 1.0:
            values = values * metric.scale
    if metric.kind is MetricKind.COUNTER:
        return Aggregate(keys, np.bincount(inverse, weights=values, minlength=groups))
    if metric.kind is MetricKind.GAUGE:
        if values is None:
            return Aggregate(keys, np.bincount(inverse, minlength=groups).astype(np.float64))
        _, first_from_end = np.unique(inverse[::-1], return_index=True)
        return Aggregate(keys, values[len(inverse) - 1 - first_from_end])
    assert values is not None
    width = len(metric.buckets) + 1
    bucket = np.searchsorted(np.asarray(metric.buckets), values, side="left")  # v <= le
    if metric.count is not None:  # each row stands for `count` values (a bucket's row)
        weights = np.asarray(batch[metric.count.name], dtype=np.int64)
        if keep is not None:
            weights = weights[keep]
        slots = np.bincount(inverse * width + bucket, weights=weights, minlength=groups * width)
        counts = slots.round().astype(np.int64)
        sums = np.bincount(inverse, weights=values * weights, minlength=groups)
        return Aggregate(keys, counts.reshape(groups, width), sums)
    counts = np.bincount(inverse * width + bucket, minlength=groups * width)
    sums = np.bincount(inverse, weights=values, minlength=groups)
    return Aggregate(keys, counts.reshape(groups, width), sums)


UNKNOWN = "[unknown]"
UNKNOWN_FRAME = f"{UNKNOWN}+0x"
"""How a profile names a user address outside every mapping (``[unknown]+0xaddress``)."""


@dataclass
class FrameTable:
    """The frames of a batch of stack rows, laid out flat once (each row's kernel frames,
    then its user frames, innermost first) and coded by (function, module)."""

    rows: Array
    """Per frame: its row."""
    fid: Array
    """Per frame: its (function, module) id, an index of :attr:`functions`."""
    functions: list[tuple[str, str]]
    leaf: Array
    """Per row: the index of its innermost frame, -1 for a row without frames."""
    counts: Array
    """Per row: its samples."""


def frame_table(batch: Batch) -> FrameTable | None:
    """:class:`FrameTable` of ``batch``; Python touches each frame list once, to flatten it,
    and the frames are coded with ``np.unique`` (None: no frames)."""
    from itertools import chain

    kernel, user = batch["kernelStack"], batch["userStack"]
    counts = np.asarray(batch["count"], dtype=np.float64)
    n = len(counts)
    klen = np.fromiter(map(len, kernel), np.intp, n)
    ulen = np.fromiter(map(len, user), np.intp, n)
    kernel_frames = int(klen.sum())
    names = np.empty(kernel_frames + int(ulen.sum()), dtype=object)
    if not len(names):
        return None
    names[:] = [*chain.from_iterable(kernel), *chain.from_iterable(user)]
    rows = np.concatenate([np.repeat(np.arange(n), klen), np.repeat(np.arange(n), ulen)])
    fnames, fcode = np.unique(names, return_inverse=True)
    fcode = fcode.reshape(-1)
    # An address outside every mapping (often a garbage frame under code without frame
    # pointers) is one "[unknown]" function, not one label value per address.
    outside = np.array([f.startswith(UNKNOWN_FRAME) for f in fnames.tolist()], dtype=bool)
    if outside.any():
        fnames = fnames.copy()
        fnames[outside] = UNKNOWN
        fnames, remap = np.unique(fnames, return_inverse=True)
        fcode = remap.reshape(-1)[fcode]
    # Modules: "[kernel]" for kernel frames; a user frame's from the column beside the
    # fields (a batch without it, such as a saved profile's rows: "[unknown]").
    fmods = [KERNEL_MODULE]
    mcode = np.zeros(len(names), dtype=np.intp)
    if batch.overlaid(MODULES_COLUMN) and len(names) > kernel_frames:
        user_mods = np.empty(len(names) - kernel_frames, dtype=object)
        user_mods[:] = [*chain.from_iterable(batch[MODULES_COLUMN])]
        table, codes = np.unique(user_mods, return_inverse=True)
        fmods += table.tolist()
        mcode[kernel_frames:] = codes.reshape(-1) + 1
    elif len(names) > kernel_frames:
        fmods.append(UNKNOWN)
        mcode[kernel_frames:] = 1
    distinct, fid = np.unique(fcode * len(fmods) + mcode, return_inverse=True)
    functions = list(
        zip(
            fnames[distinct // len(fmods)].tolist(),
            [fmods[m] for m in (distinct % len(fmods)).tolist()],
            strict=True,
        )
    )
    kstart = np.cumsum(klen) - klen
    ustart = kernel_frames + np.cumsum(ulen) - ulen
    leaf = np.where(klen > 0, kstart, np.where(ulen > 0, ustart, -1))
    return FrameTable(rows, fid.reshape(-1), functions, leaf, counts)


def function_samples(
    frames: str,
    table: FrameTable | None,
    keep: Array | None,
    group: Array,
    groups: list[LabelKey],
) -> Aggregate | None:
    """Samples per (function, module, label set) of the rows ``keep`` selects: ``self``,
    the stacks whose innermost frame is the function; ``total``, the stacks with the
    function anywhere (once per stack, however deep it recurses); ``group`` is each kept
    row's label set."""
    if table is None:
        return None
    width = len(table.functions)
    if frames == "self":  # the innermost frame: the kernel's first, else the user's first
        with_frames = np.flatnonzero(table.leaf >= 0)
        frame_rows, frame_fids = with_frames, table.fid[table.leaf[with_frames]]
    else:  # each function once per stack
        once = np.unique(table.rows * width + table.fid)
        frame_rows, frame_fids = once // width, once % width
    if keep is not None:
        kept = keep[frame_rows]
        frame_rows, frame_fids = frame_rows[kept], frame_fids[kept]
        position = np.cumsum(keep) - 1  # a kept row's index among the kept rows
        slot = group[position[frame_rows]] * width + frame_fids
    else:
        slot = group[frame_rows] * width + frame_fids
    if not len(slot):
        return None
    found, where = np.unique(slot, return_inverse=True)
    values = np.bincount(where.reshape(-1), weights=table.counts[frame_rows], minlength=len(found))
    keys = [
        (*table.functions[f], *groups[g])
        for f, g in zip((found % width).tolist(), (found // width).tolist(), strict=True)
    ]
    return Aggregate(keys, values)


@dataclass
class MetricState:
    """The exported values of one metric, by label set."""

    metric: Metric
    values: dict[LabelKey, float] = field(default_factory=dict)
    buckets: dict[LabelKey, Array] = field(default_factory=dict)
    sums: dict[LabelKey, float] = field(default_factory=dict)
    window: dict[LabelKey, float] | None = None
    """A gauge of a windowed run (snapshots, ``--interval``), or a gauge without a field in a
    stream: the window being filled, which replaces :attr:`values` whole when it ends, so a
    label set gone from it is gone."""
    period: float = 0.0
    """Seconds of a stream gauge's window (0: the run's windows end it, not the clock)."""
    window_end: float = 0.0

    def roll(self, now: float) -> None:
        """End a stream gauge's window when the clock has passed its end: the window just
        ended is shown, or nothing when a whole window went by without a batch."""
        if not self.period or now < self.window_end:
            return
        assert self.window is not None
        self.values = self.window if now < self.window_end + self.period else {}
        self.window = {}
        self.window_end += ((now - self.window_end) // self.period + 1) * self.period

    def apply(self, agg: Aggregate) -> None:
        """One dict update per label set of the batch."""
        kind = self.metric.kind
        if kind is MetricKind.COUNTER:
            for key, value in zip(agg.keys, agg.values.tolist(), strict=True):
                self.values[key] = self.values.get(key, 0.0) + value
        elif kind is MetricKind.GAUGE and self.window is not None:
            if self.metric.field is None:  # events per label set in the whole window
                for key, value in zip(agg.keys, agg.values.tolist(), strict=True):
                    self.window[key] = self.window.get(key, 0.0) + value
            else:
                self.window.update(zip(agg.keys, agg.values.tolist(), strict=True))
        elif kind is MetricKind.GAUGE:
            self.values.update(zip(agg.keys, agg.values.tolist(), strict=True))
        else:
            assert agg.sums is not None
            for key, row, total in zip(agg.keys, agg.values, agg.sums.tolist(), strict=True):
                if key in self.buckets:
                    self.buckets[key] += row
                else:
                    self.buckets[key] = row.astype(np.int64)
                self.sums[key] = self.sums.get(key, 0.0) + total

    def family(self, with_samples: bool = True) -> MetricFamily:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )
        from prometheus_client.utils import floatToGoString

        m = self.metric
        labels = list(m.label_names)
        if m.kind is MetricKind.COUNTER:
            counter = CounterMetricFamily(m.name, m.help, labels=labels)
            values = _top(self.values, m.top) if with_samples else {}
            for key, value in values.items():
                counter.add_metric(list(key), value)
            return counter
        if m.kind is MetricKind.GAUGE:
            gauge = GaugeMetricFamily(m.name, m.help, labels=labels)
            for key, value in self.values.items() if with_samples else ():
                gauge.add_metric(list(key), value)
            return gauge
        histogram = HistogramMetricFamily(m.name, m.help, labels=labels)
        go_float: Callable[[float], str] = floatToGoString  # Prometheus' spelling of bounds
        bounds = [go_float(b) for b in m.buckets] + ["+Inf"]
        for key, counts in self.buckets.items() if with_samples else ():
            cumulative = np.cumsum(counts).tolist()
            histogram.add_metric(
                list(key), list(zip(bounds, cumulative, strict=True)), self.sums[key]
            )
        return histogram


class MetricsCollector:
    """A prometheus_client collector over numpy-aggregated state.

    A batch is aggregated outside the lock and applied under it, so a scrape (on the server's
    thread) sees every metric after the same batch.
    """

    def __init__(
        self,
        metrics: list[Metric],
        windowed: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.states = [MetricState(m) for m in metrics]
        self.clock = clock
        for state in self.states:
            if state.metric.kind is not MetricKind.GAUGE:
                continue
            if windowed:
                state.window = {}
            elif state.metric.field is None:  # a count needs a stated window: the clock's
                state.window = {}
                state.period = state.metric.window
        self.start()
        self.lock = threading.Lock()

    def start(self) -> None:
        """The clock windows of stream gauges begin now (when the gadget is attached)."""
        now = self.clock()
        for state in self.states:
            state.window_end = now + state.period

    def end_window(self) -> None:
        """A window (a snapshot, an interval) is complete: gauges now show it, and only it."""
        with self.lock:
            for state in self.states:
                if state.window is not None:
                    state.values, state.window = _top(state.window, state.metric.top), {}

    def add(self, batch: Batch) -> None:
        labels = LabelColumns(batch)
        updates = [(s, aggregate(s.metric, batch, labels)) for s in self.states]
        now = self.clock()
        with self.lock:
            for state in self.states:
                state.roll(now)
            for state, agg in updates:
                if agg is not None:
                    state.apply(agg)

    def collect(self) -> Iterator[MetricFamily]:
        now = self.clock()
        with self.lock:
            for state in self.states:
                state.roll(now)
            families = [s.family() for s in self.states]
        yield from families

    def describe(self) -> Iterator[MetricFamily]:
        return iter([s.family(with_samples=False) for s in self.states])


class RunStats:
    """The metrics of the runs themselves, one collector per endpoint path: events seen,
    events lost and batches per gadget (read from each run at scrape time, so a loss is
    counted even when no event gets through), and the size of the events buffer.

    Runs of one gadget on one path add up; a run that has ended keeps its final counts
    until the endpoint closes, so the counters never go back."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: list[GadgetContext] = []

    def add(self, ctx: GadgetContext) -> None:
        with self.lock:
            self.runs.append(ctx)

    @staticmethod
    def gadget(ctx: GadgetContext) -> str:
        return ctx.tag or ctx.gadget.full_name()

    @staticmethod
    def buffer_size(ctx: GadgetContext) -> int:
        """The ring buffer's bytes (per CPU for a perf buffer): ``--buffer-size`` or the
        gadget's own; 0 for a gadget without one."""
        size = ctx.runtime_params.get("buffer-size") if "buffer-size" in ctx.runtime_params else 0
        return int(size or getattr(ctx.gadget, "ring_buffer_size", 0) or 0)

    def collect(self) -> Iterator[MetricFamily]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from igrun.core.run.local import Run
        from igrun.core.tracer import BufferUse

        with self.lock:
            runs = list(self.runs)
        totals: dict[str, dict[str, float]] = {name: {} for name in RUN_METRICS}
        buffers: dict[str, float] = {}
        used: tuple[dict[str, float], dict[str, float]] = ({}, {})
        for ctx in runs:
            gadget = self.gadget(ctx)
            run = ctx.resources.get(Run)  # None until the gadget is attached
            seen = (run.events_total, run.lost_total, run.batches_total) if run else (0, 0, 0)
            for name, value in zip(RUN_METRICS, seen, strict=True):
                totals[name][gadget] = totals[name].get(gadget, 0.0) + value
            if self.buffer_size(ctx):
                buffers[gadget] = max(buffers.get(gadget, 0.0), float(self.buffer_size(ctx)))
            use = ctx.resources.get(BufferUse)
            if use is not None:
                for values, value in zip(used, (use.recent, use.peak), strict=True):
                    values[gadget] = max(values.get(gadget, 0.0), float(value))
        for name, text in RUN_METRICS.items():
            counter = CounterMetricFamily(name, text, labels=["gadget"])
            for gadget, total in totals[name].items():
                counter.add_metric([gadget], total)
            yield counter
        gauge = GaugeMetricFamily(
            BUFFER_SIZE_METRIC,
            "bytes of the events buffer (ring buffer; per CPU for a perf buffer)",
            labels=["gadget"],
        )
        for gadget, size in buffers.items():
            gauge.add_metric([gadget], size)
        yield gauge
        for (name, text), values in zip(BUFFER_USE_METRICS.items(), used, strict=True):
            family = GaugeMetricFamily(name, text, labels=["gadget"])
            for gadget, fill in values.items():
                family.add_metric([gadget], fill)
            yield family


# ---- the operator ----------------------------------------------------------------------------


def _top(values: dict[LabelKey, float], n: int) -> dict[LabelKey, float]:
    """The ``n`` label sets with the highest values (all when ``n`` is 0): a top gadget's
    gauge shows its top rows, as its table does."""
    if not n or len(values) <= n:
        return values
    return dict(sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:n])
