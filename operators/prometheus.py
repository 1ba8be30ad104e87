"""``--metrics-config FILE``: export counters, gauges and histograms of the events to Prometheus.

Inspektor Gadget has a prometheus gadget driven by a metrics file; here the same file drives an
operator, so the events of any gadget can feed it. The TOML file declares the metrics::

    [[counters]]
    name = "igrun_execs_total"
    labels = ["comm", "runtime.containerName"]

    [[histograms]]
    name = "igrun_fsslower_latency"
    labels = ["op"]
    field = "latency"
    buckets = [10, 100, 1000, 10000]

It is checked with pydantic against the gadget's fields before anything loads, so a typo is
one line naming the key (``metrics config: counters[0].labels: no column "nope"``).

The work is per batch, never per event: rows are grouped by their label values once (the codes
of a coded column, or ``np.unique``), counted and summed with ``np.bincount``, and bucketed
with ``np.searchsorted``; then each label set costs one dict update per batch. The state lives
in a custom collector on a private registry: prometheus_client's own ``Histogram`` only has
``observe()``, one call per value, while bucket counts added per batch are exact and cheap.

The operator sits after the filters (it counts what ``-F`` keeps) and before sort and limit,
and passes every batch on unchanged. Next to the file's metrics, each endpoint serves the
runs' own (:class:`RunStats`: events seen and lost, batches, buffer size), and ``ig``'s YAML
file is read too (:func:`parse_ig_config`). Label names are the fields' JSON keys in
snake_case (:func:`label_name`).
"""

from __future__ import annotations

import enum
import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import numpy as np

from igrun.core.errors import IgrunError, ParamError
from igrun.core.events.schema import Array, Batch, Field, Kind, Schema, decode_cstrings
from igrun.core.files import FileRefused, read_text
from igrun.core.gadget import GadgetContext
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import PRIORITY_FILTER, Operator
from igrun.core.params import ParamDesc, Params
from igrun.operators._common import resolve_column, windowed
from igrun.operators.filter import Filter, parse_filter

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric as MetricFamily

    from igrun.core.operator import RunPlan
    from igrun.core.run.resources import Resources
    from igrun.operators import metrics_http

PRIORITY_METRICS = PRIORITY_FILTER + 50
"""After the filters (count what ``-F`` keeps), before sort and limit."""

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_NOT_IN_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z]{2})(?=[A-Z][a-z])")

LabelKey = tuple[str, ...]

DEFAULT_GAUGE_WINDOW = 10.0
"""Seconds: a gauge without a field, in a run without ``--interval``, counts the events of
the last complete window this long (``window`` in the file)."""

RUN_METRICS = {
    "igrun_events": "events the gadget delivered, before any filter",
    "igrun_lost_events": "events the kernel could not deliver (the buffer was full)",
    "igrun_batches": "batches the events came in (events / batches = the mean batch)",
}
"""The counters every run exports, labelled with its gadget (``_total`` is added)."""
BUFFER_SIZE_METRIC = "igrun_buffer_size_bytes"
RUN_SERIES = frozenset(
    {f"{n}{suffix}" for n in RUN_METRICS for suffix in ("", "_total", "_created")}
    | {BUFFER_SIZE_METRIC}
)


class MetricKind(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


_SECTIONS = {
    "counters": MetricKind.COUNTER,
    "gauges": MetricKind.GAUGE,
    "histograms": MetricKind.HISTOGRAM,
}


@dataclass(frozen=True)
class Metric:
    """One declared metric, its names resolved to the gadget's fields."""

    kind: MetricKind
    name: str
    help: str
    labels: tuple[Field, ...]
    label_names: tuple[str, ...]
    """The Prometheus label names: the fields' JSON keys in snake_case (:func:`label_name`)."""
    field: Field | None = None
    buckets: tuple[float, ...] = ()
    filters: tuple[Filter, ...] = ()
    window: float = 0.0
    """A gauge without a field in a stream: the seconds of the window whose events it counts."""
    scale: float = 1.0
    """What the field's values are multiplied by (to the unit the name says: 1e-6 makes
    microseconds ``_seconds``)."""

    def series(self) -> set[str]:
        """The sample names this metric exposes, to find clashes between metrics."""
        if self.kind is MetricKind.COUNTER:
            base = self.name.removesuffix("_total")
            return {base, f"{base}_total", f"{base}_created"}
        if self.kind is MetricKind.HISTOGRAM:
            return {self.name, *(f"{self.name}_{s}" for s in ("bucket", "sum", "count"))}
        return {self.name}


# ---- the config file -------------------------------------------------------------------------


def label_name(f: Field) -> str:
    """``runtime.containerName`` -> ``runtime_container_name``: Prometheus' snake_case, from
    the field's JSON key (a word starts at each capital; anything but letters and digits is
    one ``_``)."""
    key = f.json_key if f.in_json else f.name
    name = _NOT_IN_LABEL.sub("_", _WORD_START.sub("_", key)).lower()
    return f"_{name}" if name[:1].isdigit() else name


def _resolve(name: str, schema: Schema) -> Field:
    """The field called ``name`` (its name or JSON key), or ``ValueError`` saying why not."""
    try:
        return resolve_column(name, schema, "field")
    except ParamError as exc:
        raise ValueError(str(exc).removeprefix("invalid field: ")) from None


@cache
def _config_model() -> Any:
    """The pydantic models of the config file, built on first use (pydantic costs ~70 ms)."""
    from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator
    from pydantic_core import PydanticCustomError

    def problem(message: str) -> PydanticCustomError:
        return PydanticCustomError("metrics_config", message)

    def schema_of(info: ValidationInfo) -> Schema:
        return (info.context or {})["schema"]  # type: ignore[no-any-return]

    class MetricConfig(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        reserved: ClassVar[frozenset[str]] = frozenset()
        name: str
        help: str = ""
        labels: list[str] = []
        field: str = ""
        filter: list[str] = []
        scale: float = 1.0

        @field_validator("name")
        @classmethod
        def _name(cls, value: str) -> str:
            if not _METRIC_NAME.match(value):
                raise problem(
                    f'"{value}" is not a Prometheus metric name '
                    "(letters, digits, _ and :, not starting with a digit)"
                )
            return value

        @field_validator("labels")
        @classmethod
        def _labels(cls, value: list[str], info: ValidationInfo) -> list[str]:
            names: dict[str, str] = {}
            for label in value:
                try:
                    f = _resolve(label, schema_of(info))
                except ValueError as exc:
                    raise problem(str(exc)) from None
                name = label_name(f)
                if name in names:
                    raise problem(f'"{label}" and "{names[name]}" are the same label {name}')
                if name.startswith("__") or name in cls.reserved:
                    raise problem(f'"{label}": the label name {name} is reserved')
                names[name] = label
            return value

        @field_validator("field")
        @classmethod
        def _field(cls, value: str, info: ValidationInfo) -> str:
            if not value:
                return value
            try:
                f = _resolve(value, schema_of(info))
            except ValueError as exc:
                raise problem(str(exc)) from None
            if not f.kind.numeric:
                raise problem(f'"{value}" is a {f.kind.value}, not a number')
            return value

        @field_validator("scale")
        @classmethod
        def _scale(cls, value: float, info: ValidationInfo) -> float:
            if not (math.isfinite(value) and value != 0):
                raise problem("the scale is a finite number other than 0")
            if value != 1 and not info.data.get("field"):
                raise problem("a scale multiplies the field: give the field")
            return value

        @field_validator("filter")
        @classmethod
        def _filter(cls, value: list[str], info: ValidationInfo) -> list[str]:
            for expr in value:
                try:
                    parse_filter(expr, schema_of(info))
                except ParamError as exc:
                    raise problem(str(exc)) from None
            return value

    class HistogramConfig(MetricConfig):
        reserved: ClassVar[frozenset[str]] = frozenset({"le"})  # the bucket label
        field: str
        buckets: list[float]

        @field_validator("field")
        @classmethod
        def _needs_field(cls, value: str) -> str:
            if not value:
                raise problem("a histogram needs the numeric field it buckets")
            return value

        @field_validator("buckets")
        @classmethod
        def _buckets(cls, value: list[float]) -> list[float]:
            if not value:
                raise problem("give at least one upper bound (+Inf is added)")
            if not all(math.isfinite(b) for b in value):
                raise problem("bounds must be finite numbers (+Inf is added)")
            if any(b >= c for b, c in itertools.pairwise(value)):
                raise problem("bounds must be strictly increasing")
            return value

    class GaugeConfig(MetricConfig):
        window: float = DEFAULT_GAUGE_WINDOW

        @field_validator("window")
        @classmethod
        def _window(cls, value: float) -> float:
            if not (math.isfinite(value) and value > 0):
                raise problem("the window is a number of seconds above 0")
            return value

    class MetricsConfig(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        counters: list[MetricConfig] = []
        gauges: list[GaugeConfig] = []
        histograms: list[HistogramConfig] = []

        @model_validator(mode="after")
        def _some(self) -> MetricsConfig:
            if not (self.counters or self.gauges or self.histograms):
                raise problem(
                    "declares no metrics (add [[counters]], [[gauges]] or [[histograms]])"
                )
            return self

    return MetricsConfig


def _registered(registry: Any) -> set[str]:
    """The metric names a prometheus_client registry serves (a counter's with ``_total``)."""
    names = set()
    for family in registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


def _where(loc: tuple[int | str, ...]) -> str:
    """``("counters", 0, "labels")`` -> ``counters[0].labels``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _known_keys(loc: tuple[int | str, ...]) -> str:
    """The keys allowed where an unknown one was found: the top level, or one metric."""
    model = _config_model()
    if len(loc) > 1 and loc[0] in model.model_fields:
        (model,) = get_args(model.model_fields[loc[0]].annotation)  # list[XConfig]
    return ", ".join(model.model_fields)


def parse_config(text: str, schema: Schema) -> list[Metric]:
    """The metrics a TOML config declares, checked against ``schema``, or a :class:`ParamError`
    that names the key."""
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParamError(f"metrics config: not valid TOML: {exc}") from None
    return _metrics(data, schema)


IG_TYPES = {"counter": "counters", "gauge": "gauges", "histogram": "histograms"}


def _ig_buckets(bucket: Any, where: str) -> list[float]:
    """``ig``'s generated bounds: ``exp2`` gives multiplier * 2**i and ``linear``
    multiplier * i, for i from min up to max (not included)."""
    if not isinstance(bucket, dict) or bucket.get("type") not in ("exp2", "linear"):
        raise ParamError(f"metrics config: {where}.bucket.type: use exp2 or linear")
    low, high = bucket.get("min", 0), bucket.get("max", 0)
    multiplier = bucket.get("multiplier") or 1
    if not (isinstance(low, int) and isinstance(high, int) and high > low):
        raise ParamError(f"metrics config: {where}.bucket: max must be an integer above min")
    if not isinstance(multiplier, int | float):
        raise ParamError(f"metrics config: {where}.bucket.multiplier: not a number")
    if bucket["type"] == "exp2":
        return [float(2**i * multiplier) for i in range(low, high)]
    return [float(i * multiplier) for i in range(low, high)]


def parse_ig_config(text: str, schema: Schema, gadget: str) -> list[Metric]:
    """The metrics of an ``ig`` prometheus file (YAML: ``metrics_name``, ``metrics``) that
    are for ``gadget`` (their ``category`` and ``gadget``, as in ``"trace exec"``)."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamError(f"metrics config: not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not data.get("metrics_name"):
        raise ParamError("metrics config: metrics_name is missing")
    if not isinstance(data.get("metrics"), list):
        raise ParamError("metrics config: metrics section is missing")
    sections: dict[str, list[dict[str, Any]]] = {}
    for i, metric in enumerate(data["metrics"]):
        where = f"metrics[{i}]"
        if not isinstance(metric, dict):
            raise ParamError(f"metrics config: {where}: not a mapping")
        for key in ("name", "category", "gadget", "type"):
            if not metric.get(key):
                raise ParamError(f"metrics config: {where}: {key} is missing")
        section = IG_TYPES.get(str(metric["type"]).lower())
        if section is None:
            raise ParamError(
                f'metrics config: {where}.type: "{metric["type"]}" is none of '
                "counter, gauge, histogram"
            )
        if f"{metric['category']} {metric['gadget']}" != gadget:
            continue  # another gadget's metric: the run of that gadget serves it
        known = ("name", "type", "category", "gadget", "field", "labels", "selector", "bucket")
        unknown = sorted(set(metric) - set(known))
        if unknown:
            raise ParamError(
                f"metrics config: {where}.{unknown[0]}: unknown key (known: {', '.join(known)})"
            )
        out: dict[str, Any] = {"name": metric["name"], "labels": metric.get("labels") or []}
        if metric.get("field"):
            out["field"] = metric["field"]
        if metric.get("selector"):
            out["filter"] = metric["selector"]
        if section == "histograms":
            out["buckets"] = _ig_buckets(metric.get("bucket"), where)
        sections.setdefault(section, []).append(out)
    if not sections:
        raise ParamError(f"metrics config: no metric is for {gadget}")
    return _metrics(sections, schema)


def _metrics(data: Any, schema: Schema) -> list[Metric]:
    """The checked metrics of a config's data (a TOML file's, or one made from ``ig``'s)."""
    from pydantic import ValidationError

    try:
        config = _config_model().model_validate(data, context={"schema": schema})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"]))
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = f"unknown key (known: {_known_keys(tuple(first['loc']))})"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        prefix = f"metrics config: {where}: " if where else "metrics config: "
        raise ParamError(prefix + message + more) from None

    metrics: list[Metric] = []
    seen: dict[str, str] = dict.fromkeys(RUN_SERIES, "a metric of igrun's own")
    for section, kind in _SECTIONS.items():
        for i, m in enumerate(getattr(config, section)):
            labels = tuple(_resolve(name, schema) for name in m.labels)
            metric = Metric(
                kind=kind,
                name=m.name,
                help=m.help,
                labels=labels,
                label_names=tuple(label_name(f) for f in labels),
                field=_resolve(m.field, schema) if m.field else None,
                buckets=tuple(getattr(m, "buckets", ())),
                filters=tuple(parse_filter(expr, schema) for expr in m.filter),
                window=float(getattr(m, "window", 0.0)),
                scale=m.scale,
            )
            where = f"{section}[{i}].name"
            for series in metric.series():
                if series in seen:
                    raise ParamError(
                        f'metrics config: {where}: "{m.name}" clashes with {seen[series]}'
                    )
            seen.update(dict.fromkeys(metric.series(), f"{where} ({m.name})"))
            metrics.append(metric)
    return metrics


def load_config(path: str, schema: Schema, gadget: str = "") -> list[Metric]:
    """:func:`parse_config` of the file at ``path``, or :func:`parse_ig_config` of a
    ``.yaml``/``.yml`` file (``ig``'s ``@`` before the path is taken too)."""
    if path.startswith("@"):
        path = path[1:]
    try:
        text = read_text(path)
    except FileRefused as exc:
        raise ParamError(f"metrics config: cannot read {path}: {exc}") from None
    if path.endswith((".yaml", ".yml")):
        return parse_ig_config(text, schema, gadget)
    return parse_config(text, schema)


# ---- aggregation, one batch at a time ----------------------------------------------------------


def _texts(values: Array, kind: Kind) -> Array:
    """Label texts for distinct values (a table, not every row): few Python calls."""
    if kind is Kind.BOOL:
        out = ["true" if v else "false" for v in values.tolist()]
    elif kind is Kind.LIST:
        out = [" ".join(v) if isinstance(v, list | tuple) else str(v) for v in values.tolist()]
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
        table, codes = np.unique(col, return_inverse=True)
    texts, remap = np.unique(_texts(table, f.kind), return_inverse=True)  # equal texts merge
    return texts, remap.reshape(-1)[codes.reshape(-1)]  # a code of -1 is the table's last row


class LabelColumns:
    """The label columns of one batch, each made once however many metrics use it."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self._made: dict[str, LabelColumn] = {}

    def __getitem__(self, f: Field) -> LabelColumn:
        if f.name not in self._made:
            self._made[f.name] = label_column(self.batch, f)
        return self._made[f.name]


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
    counts = np.bincount(inverse * width + bucket, minlength=groups * width)
    sums = np.bincount(inverse, weights=values, minlength=groups)
    return Aggregate(keys, counts.reshape(groups, width), sums)


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
            for key, value in self.values.items() if with_samples else ():
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
                    state.values, state.window = state.window, {}

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

        with self.lock:
            runs = list(self.runs)
        totals: dict[str, dict[str, float]] = {name: {} for name in RUN_METRICS}
        buffers: dict[str, float] = {}
        for ctx in runs:
            gadget = self.gadget(ctx)
            run = ctx.resources.get(Run)  # None until the gadget is attached
            seen = (run.events_total, run.lost_total, run.batches_total) if run else (0, 0, 0)
            for name, value in zip(RUN_METRICS, seen, strict=True):
                totals[name][gadget] = totals[name].get(gadget, 0.0) + value
            if self.buffer_size(ctx):
                buffers[gadget] = max(buffers.get(gadget, 0.0), float(self.buffer_size(ctx)))
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


# ---- the operator ----------------------------------------------------------------------------


class PrometheusOperator(Operator):
    name = "prometheus"
    description = "export counters, gauges and histograms of the events over HTTP for Prometheus"
    priority = PRIORITY_METRICS
    params = (
        ParamDesc(
            "metrics-config",
            description="TOML file declaring the metrics ([[counters]], [[gauges]], "
            "[[histograms]]); without it nothing is exported",
        ),
        ParamDesc(
            "metrics-listen-address",
            default="127.0.0.1:2223",
            description="host:port to serve the metrics on",
        ),
        ParamDesc("metrics-path", default="/metrics", description="URL path of the metrics"),
    )

    def __init__(
        self,
        ctx: GadgetContext,
        params: Params,
        collector: MetricsCollector,
        endpoints: metrics_http.Endpoints,
        endpoint: metrics_http.Endpoint,
    ) -> None:
        super().__init__(ctx, params)
        self.collector = collector
        self.endpoints = endpoints
        self.endpoint: metrics_http.Endpoint | None = endpoint
        self.path = str(params.get("metrics-path"))

    @property
    def server(self) -> metrics_http.MetricsServer:
        assert self.endpoint is not None
        return self.endpoint.server

    @classmethod
    def share(cls, process: Resources) -> None:
        from igrun.operators.metrics_http import Endpoints

        process.provide(Endpoints(), by=cls.name)

    @classmethod
    def check(cls, plan: RunPlan, params: Params, schema: Schema) -> None:
        """The metrics file against the fields that reach this operator, the path and the
        address: a mistake in any costs no BPF load and no root."""
        config = params.raw("metrics-config").strip()
        if not config:
            return
        path = str(params.get("metrics-path"))
        if not path.startswith("/"):
            raise ParamError(f'--metrics-path: "{path}" must start with /')
        from igrun.operators.metrics_http import parse_listen_address

        parse_listen_address(str(params.get("metrics-listen-address")))
        load_config(config, schema, plan.gadget.full_name())

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        config = params.raw("metrics-config").strip()
        if not config:
            return None
        path = str(params.get("metrics-path"))
        schema = ctx.schema if ctx.schema is not None else ctx.gadget.schema
        collector = MetricsCollector(
            load_config(config, schema, ctx.gadget.full_name()), windowed=windowed(ctx)
        )

        from igrun.operators import metrics_http

        endpoints = ctx.resources.get(metrics_http.Endpoints) or metrics_http.Endpoints()
        address = str(params.get("metrics-listen-address"))
        endpoint = endpoints.acquire(address)
        try:
            registry = endpoint.registry(path)
            with endpoint.lock:
                stats = endpoint.extras.get(path)
                if stats is None:
                    stats = endpoint.extras[path] = RunStats()
                    registry.register(stats)
            try:
                registry.register(collector)
            except ValueError:  # a name another run on this endpoint declares
                taken = _registered(registry)
                names = sorted(m.name for m in collector.metrics if m.series() & taken)
                raise IgrunError(
                    f"metrics on {address}{path}: {', '.join(names) or 'a metric'} is declared "
                    "by another run too (give the runs different names or paths)"
                ) from None
            stats.add(ctx)
        except BaseException:
            endpoints.release(endpoint)
            raise
        return cls(ctx, params, collector, endpoints, endpoint)

    def pre_run(self, schema: Schema) -> None:
        self.collector.start()
        assert self.endpoint is not None
        self.endpoint.start()
        host = str(self.server.server.server_address[0])
        host = f"[{host}]" if ":" in host else host
        self.ctx.logger.info("metrics_serving", url=f"http://{host}:{self.server.port}{self.path}")

    def process(self, batch: Batch) -> Batch:
        self.collector.add(batch)
        return batch

    def flush(self) -> Batch | None:
        self.collector.end_window()
        return None

    def post_run(self) -> None:
        if self.endpoint is not None:
            self.endpoints.release(self.endpoint)
            self.endpoint = None


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(PrometheusOperator)
