"""``--otlp-endpoint URL``: send the events as OTLP logs and the run's counts as OTLP metrics.

A cluster's OpenTelemetry collector gathers what every node's igrun sees, beside (or instead of)
Prometheus scraping each one. Each event is one log record whose body is the event's JSON
object as ``-o json`` writes it, as a string, byte for byte (``json_parser`` or
``ParseJSON(body)`` in the collector makes fields of it); its attribute ``gadget`` names the
gadget. The resource says where it comes from: ``service.name=igrun``, ``host.name`` and, when
``$NODE_NAME`` is set (the DaemonSet sets it), ``k8s.node.name``. The metrics are the run's
own: ``igrun.events``, ``igrun.lost_events``, ``igrun.batches`` (as ``igrun_events_total`` &c.
on the Prometheus endpoint) and ``igrun.otlp.dropped_records``, exported every
``--otlp-metrics-interval`` and once more when the run ends.

The event path never waits for the network: :meth:`OtlpOperator.process` turns the whole batch
into JSON lines in one C call and puts them on a bounded queue; a thread of its own makes the
log records and hands them to the SDK's ``BatchLogRecordProcessor``, which sends them in
batches from its thread. What cannot go (the queue full, the processor's queue full, the
collector refusing or unreachable) is counted, never lost in silence: a warning line at the
end gives the numbers, and ``igrun.otlp.dropped_records`` has them all along.

The SDK is an optional dependency (``pip install 'igrun[otlp]'``); without it the flag is one
line and exit code 1, before anything loads.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igrun.core.errors import EnvironmentProblem, ParamError
from igrun.core.events.schema import Batch, Schema
from igrun.core.gadget import GadgetContext
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import PRIORITY_FILTER, Operator
from igrun.core.params import ParamDesc, Params, TypeHint

if TYPE_CHECKING:
    from igrun.core.operator import RunPlan
    from igrun.core.output.jsonlines import JsonLines
    from igrun.operators.otlp_export import Counts

PRIORITY_OTLP = PRIORITY_FILTER + 60
"""After the filters (send what ``-F`` keeps), before sort and limit (every event, as it
comes, not only a window's top rows)."""

QUEUE_BATCHES = 64
"""Batches waiting for the sending thread; beyond, a batch is dropped (and counted)."""
SDK_QUEUE = 65536
"""Log records the SDK's processor holds before it drops (and we count) the oldest."""
EXPORT_BATCH = 2048
"""Log records per OTLP request."""

MISSING_SDK = (
    "--otlp-endpoint needs the OpenTelemetry SDK and its OTLP gRPC exporter: "
    "pip install 'igrun[otlp]'"
)


def require_sdk() -> None:
    """One line when the optional packages are missing."""
    try:
        import opentelemetry.exporter.otlp.proto.grpc
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        raise EnvironmentProblem(MISSING_SDK) from None


@dataclass(frozen=True)
class Endpoint:
    """Where and how to send: ``grpc://`` and ``http://`` are plain text, ``https://`` (and
    ``HOST:PORT`` without a scheme) TLS."""

    target: str
    insecure: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        text = url.strip()
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "https", text
        if scheme not in ("grpc", "http", "https"):
            raise ParamError(f'--otlp-endpoint: "{url}": use grpc://, http:// or https://HOST:PORT')
        parsed = urllib.parse.urlsplit(f"//{rest}")
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None or parsed.path.strip("/"):
            raise ParamError(f'--otlp-endpoint: "{url}": expected e.g. grpc://collector:4317')
        return cls(parsed.netloc, insecure=scheme != "https")


def parse_headers(text: str) -> dict[str, str]:
    """``key=value,key2=value2`` (as ``OTEL_EXPORTER_OTLP_HEADERS``)."""
    headers: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ParamError(f'--otlp-headers: "{item}" is not KEY=VALUE')
        headers[key.strip().lower()] = urllib.parse.unquote(value.strip())
    return headers


def _read(flag: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ParamError(f"--{flag}: {path}: {exc.strerror}") from None


def resource_attributes() -> dict[str, str]:
    """Who sends: the node's name when Kubernetes gave it (``$NODE_NAME``), the host's."""
    attributes = {"service.name": "igrun", "host.name": os.uname().nodename}
    node = os.environ.get("NODE_NAME")
    if node:
        attributes["k8s.node.name"] = node
    return attributes


class FirstComplaint(logging.Handler):
    """The SDK's own log lines (a failed export, retried) as igrun's: the first of each
    logger once, in igrun's format; the counts at the end say the rest."""

    def __init__(self, ctx: GadgetContext) -> None:
        super().__init__(logging.WARNING)
        self.ctx = ctx
        self.told: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name in self.told:
            return
        self.told.add(record.name)
        self.ctx.logger.warning("otlp_export_failing", detail=record.getMessage())


class OtlpOperator(Operator):
    name = "otlp"
    description = "send events as OTLP logs and the run's counts as OTLP metrics"
    priority = PRIORITY_OTLP
    params = (
        ParamDesc(
            "otlp-endpoint",
            description="the collector's OTLP gRPC address: grpc://HOST:4317 (plain text) "
            "or https://HOST:4317 (TLS); without it nothing is sent",
        ),
        ParamDesc(
            "otlp-headers",
            description="KEY=VALUE,... sent with every request (e.g. authorization=Bearer%20T)",
        ),
        ParamDesc("otlp-ca", description="CA certificate (PEM) of the collector, for https://"),
        ParamDesc("otlp-cert", description="client certificate (PEM), for mutual TLS"),
        ParamDesc("otlp-key", description="the client certificate's private key (PEM)"),
        ParamDesc(
            "otlp-timeout",
            default="10s",
            type_hint=TypeHint.DURATION,
            description="how long one request may take, retries included; the end of the run "
            "waits at most this long for the last records",
        ),
        ParamDesc(
            "otlp-metrics-interval",
            default="10s",
            type_hint=TypeHint.DURATION,
            description="how often the run's metrics are sent (and once at the end)",
        ),
    )

    def __init__(self, ctx: GadgetContext, params: Params) -> None:
        super().__init__(ctx, params)
        from igrun.operators.otlp_export import Counts

        self.counts: Counts = Counts()
        self.gadget_name = ctx.tag or ctx.gadget.full_name()
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_BATCHES)
        self._json: JsonLines | None = None
        self._thread: threading.Thread | None = None
        self._logs: Any = None  # LoggerProvider
        self._meters: Any = None  # MeterProvider
        self.timeout = float(params.get("otlp-timeout"))
        self._complaints = FirstComplaint(ctx)

    @classmethod
    def check(cls, plan: RunPlan, params: Params, schema: Schema) -> None:
        endpoint = params.raw("otlp-endpoint").strip()
        if not endpoint:
            for key in ("otlp-headers", "otlp-ca", "otlp-cert", "otlp-key"):
                if params.raw(key).strip():
                    raise ParamError(f"--{key} needs --otlp-endpoint")
            return
        parsed = Endpoint.parse(endpoint)
        parse_headers(params.raw("otlp-headers"))
        tls = [k for k in ("otlp-ca", "otlp-cert", "otlp-key") if params.raw(k).strip()]
        if tls and parsed.insecure:
            raise ParamError(f"--{tls[0]} is for https:// endpoints, not {endpoint}")
        if bool(params.raw("otlp-cert").strip()) != bool(params.raw("otlp-key").strip()):
            raise ParamError("--otlp-cert and --otlp-key go together")
        for key in tls:
            _read(key, params.raw(key).strip())
        for key in ("otlp-metrics-interval", "otlp-timeout"):
            if not params.get(key) or params.get(key) <= 0:
                raise ParamError(f"--{key}: must be more than 0")
        require_sdk()

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        if not params.raw("otlp-endpoint").strip():
            return None
        require_sdk()
        return cls(ctx, params)

    # ---- setup ---------------------------------------------------------------------------

    def _exporter_args(self) -> dict[str, Any]:
        import grpc

        endpoint = Endpoint.parse(self.values.raw("otlp-endpoint"))
        args: dict[str, Any] = {
            "endpoint": endpoint.target,
            "insecure": endpoint.insecure,
            "timeout": self.timeout,
        }
        headers = parse_headers(self.values.raw("otlp-headers"))
        if headers:
            args["headers"] = headers
        if not endpoint.insecure:
            args["credentials"] = grpc.ssl_channel_credentials(
                root_certificates=_read("otlp-ca", self.values.raw("otlp-ca").strip()),
                private_key=_read("otlp-key", self.values.raw("otlp-key").strip()),
                certificate_chain=_read("otlp-cert", self.values.raw("otlp-cert").strip()),
            )
        return args

    def pre_run(self, schema: Schema) -> None:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        from igrun.core.output.jsonlines import JsonLines, ig_order
        from igrun.operators.otlp_export import CountingExporter
        from igrun.operators.output import NORMAL, parse_output

        _, columns = parse_output("json", schema)
        kind = None if self.ctx.gadget.type.is_periodic else NORMAL
        order = ig_order(self.ctx.gadget.full_name())  # as -o json writes them
        self._json = JsonLines(columns, self.ctx.tag, kind, order)

        sdk_logger = logging.getLogger("opentelemetry")
        sdk_logger.propagate = False
        sdk_logger.addHandler(self._complaints)
        resource = Resource.create(resource_attributes())
        args = self._exporter_args()
        self._logs = LoggerProvider(resource=resource)
        self._logs.add_log_record_processor(
            BatchLogRecordProcessor(
                CountingExporter(OTLPLogExporter(**args), self.counts),
                max_queue_size=SDK_QUEUE,
                max_export_batch_size=EXPORT_BATCH,
                schedule_delay_millis=500,
            )
        )
        interval = float(self.values.get("otlp-metrics-interval"))
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(**args), export_interval_millis=interval * 1000
        )
        self._meters = MeterProvider(resource=resource, metric_readers=[reader])
        self._observe(self._meters.get_meter("igrun"))
        logger = self._logs.get_logger("igrun")
        self._thread = threading.Thread(
            target=self._send, args=(logger,), name="igrun-otlp", daemon=True
        )
        self._thread.start()
        self.ctx.logger.info("otlp_sending", endpoint=self.values.raw("otlp-endpoint").strip())

    def _observe(self, meter: Any) -> None:
        """The run's counts, read at each export (so a loss shows even without events)."""
        from opentelemetry.metrics import CallbackOptions, Observation

        from igrun.core.run.local import Run

        attributes = {"gadget": self.gadget_name}

        def reading(value: Callable[[Any], int]) -> Callable[[CallbackOptions], Iterable[Any]]:
            def callback(options: CallbackOptions) -> Iterable[Any]:
                run = self.ctx.resources.get(Run)
                return [Observation(value(run) if run is not None else 0, attributes)]

            return callback

        for name, unit, text, value in (
            ("igrun.events", "{event}", "events the gadget delivered, before any filter",
             lambda r: r.events_total),
            ("igrun.lost_events", "{event}", "events the kernel dropped (buffer full)",
             lambda r: r.lost_total),
            ("igrun.batches", "{batch}", "batches the events came in",
             lambda r: r.batches_total),
        ):  # fmt: skip
            meter.create_observable_counter(name, [reading(value)], unit=unit, description=text)

        def dropped(options: CallbackOptions) -> Iterable[Any]:
            return [Observation(self.counts.not_exported(), attributes)]

        meter.create_observable_counter(
            "igrun.otlp.dropped_records",
            [dropped],
            unit="{record}",
            description="log records not (yet) accepted by the collector: dropped or failed",
        )

    # ---- the event path ------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        assert self._json is not None
        lines = bytes(self._json.encode(batch))
        try:
            self._queue.put_nowait(lines)
        except queue.Full:
            with self.counts.lock:
                self.counts.queued_dropped += len(batch)
        return batch

    def _send(self, logger: Any) -> None:
        """The sending thread: one log record per line, into the SDK's batch processor."""
        attributes = {"gadget": self.gadget_name}
        while True:
            lines = self._queue.get()
            if lines is None:
                return
            records = lines.decode(errors="replace").splitlines()
            for line in records:
                logger.emit(body=line, attributes=attributes)
            with self.counts.lock:
                self.counts.emitted += len(records)

    # ---- the end -------------------------------------------------------------------------

    def post_run(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._logs is not None:
            self._logs.shutdown()  # sends what is queued (up to the exporter's timeout)
            self._logs = None
        if self._meters is not None:
            self._meters.shutdown(timeout_millis=self.timeout * 1000)  # the final counts
            self._meters = None
            c = self.counts
            missing = c.not_exported()
            if missing:
                self.ctx.logger.warning(
                    "otlp_not_exported",
                    records=missing,
                    queue_full=c.queued_dropped,
                    failed=c.failed,
                    exported=c.exported,
                )
            else:
                self.ctx.logger.info("otlp_exported", records=c.exported)
        logging.getLogger("opentelemetry").removeHandler(self._complaints)


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(OtlpOperator)
