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

from collections.abc import Callable
from typing import TYPE_CHECKING

from igrun.core.errors import IgrunError, ParamError
from igrun.core.events.schema import Batch, Schema
from igrun.core.gadget import GadgetContext
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import PRIORITY_FILTER, Operator
from igrun.core.params import ParamDesc, Params
from igrun.operators._common import by_interval, windowed

if TYPE_CHECKING:
    from igrun.core.operator import RunPlan
    from igrun.core.run.resources import Resources
    from igrun.operators import metrics_http
    from igrun.operators.metrics_state import MetricsCollector


PRIORITY_METRICS = PRIORITY_FILTER + 50
"""After the filters (count what ``-F`` keeps), before sort and limit."""


class PrometheusOperator(Operator):
    name = "prometheus"
    description = "export counters, gauges and histograms of the events over HTTP for Prometheus"
    priority = PRIORITY_METRICS
    params = (
        ParamDesc(
            "metrics-config",
            description="TOML file declaring the metrics ([[counters]], [[gauges]], "
            "[[histograms]], [[functions]]); without it nothing is exported",
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
        from igrun.operators.metrics_config import load_config

        load_config(config, schema, plan.gadget.full_name())

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        config = params.raw("metrics-config").strip()
        if not config:
            return None
        # Imported only for a run that exports metrics: the others do not wait for them.
        from igrun.operators.metrics_config import load_config, registered_names
        from igrun.operators.metrics_state import MetricsCollector, RunStats

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
                taken = registered_names(registry)
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
        if any(m.frames for m in self.collector.metrics) and not by_interval(self.ctx):
            self.ctx.logger.warning(
                "functions_only_at_the_end",
                hint="a profile reports when its run ends, and the endpoint closes then: "
                "give --interval to serve per-function samples while it runs",
            )

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
