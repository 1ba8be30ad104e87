"""The metrics file of the prometheus operator: what it declares, checked against the
gadget's fields before anything loads (igrun's TOML, or ``ig``'s YAML)."""

from __future__ import annotations

import enum
import itertools
import math
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, get_args

from igrun.core.errors import ParamError
from igrun.core.events.schema import Field, Kind, Schema
from igrun.core.files import FileRefused, read_text
from igrun.operators._common import resolve_column
from igrun.operators.filter import Filter, parse_filter

if TYPE_CHECKING:
    pass


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
BUFFER_USE_METRICS = {
    "igrun_buffer_used_bytes": "the most bytes waiting in the ring buffer at one wakeup in "
    "the last second",
    "igrun_buffer_used_max_bytes": "the most bytes waiting in the ring buffer at one wakeup "
    "since the run began (near igrun_buffer_size_bytes: a larger burst loses events)",
}
RUN_SERIES = frozenset(
    {f"{n}{suffix}" for n in RUN_METRICS for suffix in ("", "_total", "_created")}
    | {BUFFER_SIZE_METRIC, *BUFFER_USE_METRICS}
)


DEFAULT_TOP_FUNCTIONS = 20
"""Functions a ``[[functions]]`` metric exports at most (``top``): the label sets stay few."""
FUNCTION_LABELS = ("function", "module")
KERNEL_MODULE = "[kernel]"
"""The module label of kernel frames."""
"""The labels of a per-function metric, before the file's own."""
STACK_FIELDS = ("userStack", "kernelStack", "count")
"""What a gadget's rows need for per-function metrics: frames innermost first and the
samples of the stack."""
MODULES_COLUMN = "userModules"
"""A column beside a profile's fields (in no output): the module (binary) of each user frame,
which per-function metrics label the frames with."""


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
    count: Field | None = None
    """A histogram of rows that each stand for several values (a histogram gadget's bucket
    rows): the field that says how many; ``None``: each row is one value."""
    top: int = 0
    """A gauge of a windowed run (a top gadget's intervals, snapshots): only the label sets
    with the ``top`` highest values of each window are shown (0: all). A per-function
    counter: only the ``top`` functions with the most samples so far."""
    frames: str = ""
    """A per-function counter of a profile's samples (``[[functions]]``): ``self`` counts
    the samples whose innermost frame is the function, ``total`` those with the function
    anywhere in the stack (once per stack); empty for the other metrics."""

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
    from pydantic import (
        BaseModel,
        ConfigDict,
        StrictInt,
        ValidationInfo,
        field_validator,
        model_validator,
    )
    from pydantic import (
        Field as PydanticField,
    )
    from pydantic_core import PydanticCustomError

    def problem(message: str) -> PydanticCustomError:
        return PydanticCustomError("metrics_config", message)

    def schema_of(info: ValidationInfo) -> Schema:
        return (info.context or {})["schema"]  # type: ignore[no-any-return]

    class NamedConfig(BaseModel):
        """What every section has: a name, labels and filters."""

        model_config = ConfigDict(extra="forbid", frozen=True)
        reserved: ClassVar[frozenset[str]] = frozenset()
        name: str
        help: str = ""
        labels: list[str] = []

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

        @field_validator("filter", check_fields=False)  # declared by each section, in order
        @classmethod
        def _filter(cls, value: list[str], info: ValidationInfo) -> list[str]:
            for expr in value:
                try:
                    parse_filter(expr, schema_of(info))
                except ParamError as exc:
                    raise problem(str(exc)) from None
            return value

    class MetricConfig(NamedConfig):
        field: str = ""
        filter: list[str] = PydanticField(default_factory=list)
        scale: float = 1.0

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

    class HistogramConfig(MetricConfig):
        reserved: ClassVar[frozenset[str]] = frozenset({"le"})  # the bucket label
        field: str
        buckets: list[float]
        count: str = ""

        @field_validator("count")
        @classmethod
        def _count(cls, value: str, info: ValidationInfo) -> str:
            if not value:
                return value
            try:
                f = _resolve(value, schema_of(info))
            except ValueError as exc:
                raise problem(str(exc)) from None
            if f.kind not in (Kind.INT, Kind.UINT):
                raise problem(f'"{value}" is a {f.kind.value}, not a count')
            return value

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
        top: int = 0

        @field_validator("top")
        @classmethod
        def _top(cls, value: int) -> int:
            if value < 0:
                raise problem("top is a number of label sets, 0 (all) or more")
            return value

        @field_validator("window")
        @classmethod
        def _window(cls, value: float) -> float:
            if not (math.isfinite(value) and value > 0):
                raise problem("the window is a number of seconds above 0")
            return value

    class FunctionsConfig(NamedConfig):
        """Per-function sample counters of a profile's stacks (``profile cpu``)."""

        reserved: ClassVar[frozenset[str]] = frozenset(FUNCTION_LABELS)
        filter: list[str] = PydanticField(default_factory=list)
        total_name: str = ""
        top: StrictInt = DEFAULT_TOP_FUNCTIONS

        @field_validator("total_name")
        @classmethod
        def _total_name(cls, value: str, info: ValidationInfo) -> str:
            if value and not _METRIC_NAME.match(value):
                raise problem(f'"{value}" is not a Prometheus metric name')
            if value and value.removesuffix("_total") == str(
                info.data.get("name", "")
            ).removesuffix("_total"):
                raise problem("the total samples need a name other than the self samples'")
            return value

        @field_validator("top")
        @classmethod
        def _top(cls, value: int) -> int:
            if value < 1:
                raise problem(f"top is a number of functions, 1 or more (not {value})")
            return value

        @model_validator(mode="after")
        def _stacks(self, info: ValidationInfo) -> FunctionsConfig:
            names = {f.name for f in schema_of(info).fields}
            if not set(STACK_FIELDS) <= names:
                raise problem("per-function samples need a profile of stacks (profile cpu)")
            return self

    class MetricsConfig(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        counters: list[MetricConfig] = []
        gauges: list[GaugeConfig] = []
        histograms: list[HistogramConfig] = []
        functions: list[FunctionsConfig] = []

        @model_validator(mode="after")
        def _some(self) -> MetricsConfig:
            if not (self.counters or self.gauges or self.histograms or self.functions):
                raise problem(
                    "declares no metrics (add [[counters]], [[gauges]], [[histograms]] "
                    "or [[functions]])"
                )
            return self

    return MetricsConfig


def registered_names(registry: Any) -> set[str]:
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
                top=int(getattr(m, "top", 0)),
                count=_resolve(m.count, schema) if getattr(m, "count", "") else None,
            )
            where = f"{section}[{i}].name"
            for series in metric.series():
                if series in seen:
                    raise ParamError(
                        f'metrics config: {where}: "{m.name}" clashes with {seen[series]}'
                    )
            seen.update(dict.fromkeys(metric.series(), f"{where} ({m.name})"))
            metrics.append(metric)
    for i, m in enumerate(config.functions):
        labels = tuple(_resolve(name, schema) for name in m.labels)
        for frames, name, key in (("self", m.name, "name"), ("total", m.total_name, "total_name")):
            if not name:
                continue
            metric = Metric(
                kind=MetricKind.COUNTER,
                name=name,
                help=m.help or _FUNCTION_HELP[frames],
                labels=labels,
                label_names=(*FUNCTION_LABELS, *(label_name(f) for f in labels)),
                filters=tuple(parse_filter(expr, schema) for expr in m.filter),
                top=m.top,
                frames=frames,
            )
            where = f"functions[{i}].{key}"
            for series in metric.series():
                if series in seen:
                    raise ParamError(
                        f'metrics config: {where}: "{name}" clashes with {seen[series]}'
                    )
            seen.update(dict.fromkeys(metric.series(), f"{where} ({name})"))
            metrics.append(metric)
    return metrics


_FUNCTION_HELP = {
    "self": "CPU samples whose innermost frame is the function, since the run began",
    "total": "CPU samples with the function anywhere in the stack (once per stack), since "
    "the run began",
}


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
