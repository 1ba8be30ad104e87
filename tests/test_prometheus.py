"""The prometheus operator: exact counts, sums and buckets, scraped over HTTP.

The first tests feed synthetic batches to the operator and scrape its real HTTP endpoint; the
``bpf`` ones run ``igrun trace exec --metrics-config`` as users do, run a uniquely named program
a known number of times, and compare what Prometheus would scrape with the JSON events.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import structlog
from containerlab import IMAGE, unique
from prometheus_client.parser import text_string_to_metric_families
from promlab import SCRAPE_INTERVAL, needs_prometheus, prometheus
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core import Category, Field, Gadget, GadgetContext, Kind, Schema
from igrun.core.bpf.build import compile_bpf
from igrun.core.errors import IgrunError, ParamError
from igrun.core.events.schema import Batch
from igrun.core.params import Params
from igrun.core.run.local import RUNTIME_PARAMS
from igrun.operators.metrics_config import label_name, parse_config, parse_ig_config
from igrun.operators.prometheus import PrometheusOperator

if TYPE_CHECKING:
    from conftest import IgrunCli

LAYOUT = np.dtype([("pid", "<u4"), ("ret", "<i4"), ("comm", "S16")])
SCHEMA = (
    Schema(
        [
            Field("pid", Kind.UINT),
            Field("ret", Kind.INT, json="retval"),
            Field("comm", Kind.STR),
        ],
        struct="event",
    )
    .bind(LAYOUT)
    .extend([Field("runtime.containerName", Kind.STR)])
)  # as the enricher adds it

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Tracer(Gadget):
    name = "t"
    category = Category.TRACE
    schema = SCHEMA


def batch(*rows: tuple[int, int, str]) -> Batch:
    raw = np.array([(p, r, c.encode()) for p, r, c in rows], LAYOUT)
    return Batch(SCHEMA, raw)


def scrape(url: str) -> Samples:
    """Every sample at ``url``, keyed by sample name and labels."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


def buckets(got: Samples, name: str, **kv: str) -> dict[float, float]:
    """A histogram's cumulative buckets, by upper bound (``inf`` for ``+Inf``)."""
    out = {}
    for (sample, labelset), value in got.items():
        rest = {k: v for k, v in labelset if k != "le"}
        if sample == f"{name}_bucket" and rest == kv:
            out[float(dict(labelset)["le"])] = value
    return out


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[Any]:
    """Makes a serving operator from a TOML text (on a free loopback port); stops them all."""
    made: list[PrometheusOperator] = []

    def make(
        config: str,
        path: str = "/metrics",
        interval: str = "",
        clock: Callable[[], float] | None = None,
    ) -> tuple[PrometheusOperator, str]:
        file = tmp_path / f"metrics{len(made)}.toml"
        file.write_text(config)
        runtime = Params(RUNTIME_PARAMS, {"interval": interval} if interval else {})
        ctx = GadgetContext("t", Tracer, Params(()), runtime, {}, structlog.get_logger())
        ctx.schema = SCHEMA
        values = {
            "metrics-config": str(file),
            "metrics-listen-address": "127.0.0.1:0",
            "metrics-path": path,
        }
        op = PrometheusOperator.instantiate(ctx, Params(PrometheusOperator.params, values))
        assert isinstance(op, PrometheusOperator)
        made.append(op)
        if clock is not None:
            op.collector.clock = clock
        op.pre_run(SCHEMA)
        return op, f"http://127.0.0.1:{op.server.port}{path}"

    yield make
    for op in made:
        op.post_run()


def test_counts_sums_and_buckets_per_label_set(operator: Any) -> None:
    op, url = operator(
        """
        [[counters]]
        name = "t_events_total"
        labels = ["comm"]
        [[counters]]
        name = "t_pids_total"
        labels = ["comm"]
        field = "pid"
        [[histograms]]
        name = "t_pid"
        labels = ["comm"]
        field = "pid"
        buckets = [10, 20, 30]
        """
    )
    first = batch((10, 0, "bash"), (25, -2, "ls"), (40, 0, "bash"))
    assert op.process(first) is first  # passed on unchanged
    op.process(batch((20, 0, "bash"), (31, 0, "ls")))
    got = scrape(url)
    assert got[("t_events_total", labels(comm="bash"))] == 3.0
    assert got[("t_events_total", labels(comm="ls"))] == 2.0
    assert got[("t_pids_total", labels(comm="bash"))] == 70.0
    assert got[("t_pids_total", labels(comm="ls"))] == 56.0
    # Cumulative; a value equal to a bound is counted in that bound's bucket.
    inf = float("inf")
    assert buckets(got, "t_pid", comm="bash") == {10.0: 1.0, 20.0: 2.0, 30.0: 2.0, inf: 3.0}
    assert buckets(got, "t_pid", comm="ls") == {10.0: 0.0, 20.0: 0.0, 30.0: 1.0, inf: 2.0}
    assert got[("t_pid_count", labels(comm="ls"))] == 2.0
    assert got[("t_pid_sum", labels(comm="ls"))] == 56.0


def test_coded_columns_group_by_their_text(operator: Any) -> None:
    """An enricher's coded column (a table with a repeated name, and -1 for "none")."""
    op, url = operator(
        """
        [[counters]]
        name = "t_events_total"
        labels = ["runtime.containerName", "retval"]
        """
    )
    b = batch((1, 0, "a"), (2, 0, "b"), (3, 0, "c"), (4, 0, "d"), (5, -1, "e"), (6, 0, "f"))
    table = np.array(["web", "db", "web", ""], dtype=object)
    b.set_coded("runtime.containerName", table, np.array([0, 1, 2, -1, -1, 2]))
    op.process(b)
    got = scrape(url)
    series = {k: v for k, v in got.items() if k[0] == "t_events_total"}
    assert series == {
        ("t_events_total", labels(runtime_container_name="web", retval="0")): 3.0,
        ("t_events_total", labels(runtime_container_name="db", retval="0")): 1.0,
        ("t_events_total", labels(runtime_container_name="", retval="0")): 1.0,
        ("t_events_total", labels(runtime_container_name="", retval="-1")): 1.0,
    }


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_gauges_keep_the_last_value_or_count_a_stated_window(operator: Any) -> None:
    """In a stream, a gauge with a field holds the last value of each label set; one
    without counts the events of the last complete window of ``window`` seconds, whatever
    the batches were: 4 events in one batch or in four give the same 4."""
    clock = Clock()
    op, url = operator(
        """
        [[gauges]]
        name = "t_last_pid"
        labels = ["comm"]
        field = "pid"
        [[gauges]]
        name = "t_events_per_window"
        labels = ["comm"]
        window = 5
        """,
        clock=clock,
    )
    op.process(batch((7, 0, "bash"), (3, 0, "ls"), (5, 0, "bash"), (9, 0, "bash")))
    clock.now += 1
    op.process(batch((2, 0, "ls")))
    got = scrape(url)
    assert got[("t_last_pid", labels(comm="bash"))] == 9.0
    assert got[("t_last_pid", labels(comm="ls"))] == 2.0
    assert not [k for k in got if k[0] == "t_events_per_window"]  # no window has ended yet
    clock.now += 3.9  # 4.9 s: still the first window
    for pid in (11, 12, 13, 14):
        op.process(batch((pid, 0, "cat")))
    clock.now += 0.1  # 5 s: the first window [0, 5) is complete
    got = scrape(url)
    assert {k[1]: v for k, v in got.items() if k[0] == "t_events_per_window"} == {
        labels(comm="bash"): 3.0,
        labels(comm="ls"): 2.0,
        labels(comm="cat"): 4.0,
    }
    op.process(batch((20, 0, "cat"), (21, 0, "cat"), (22, 0, "cat"), (23, 0, "cat")))
    clock.now += 5  # 10 s: the second window [5, 10) held the one batch of 4 cat
    got = scrape(url)
    assert {k[1]: v for k, v in got.items() if k[0] == "t_events_per_window"} == {
        labels(comm="cat"): 4.0
    }
    clock.now += 5  # 15 s: [10, 15) had nothing
    assert not [k for k in scrape(url) if k[0] == "t_events_per_window"]
    assert scrape(url)[("t_last_pid", labels(comm="cat"))] == 23.0


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("runtime.containerName", "runtime_container_name"),
        ("runtime.containerImageDigest", "runtime_container_image_digest"),
        ("k8s.podName", "k8s_pod_name"),
        ("k8s.hostNetwork", "k8s_host_network"),
        ("mntns_id", "mntns_id"),
        ("retval", "retval"),
        ("tcpIPv4", "tcp_ipv4"),
        ("HTTPServer", "http_server"),
        ("2nd", "_2nd"),
    ],
)
def test_label_names_are_snake_case(key: str, label: str) -> None:
    assert label_name(Field(key, Kind.STR)) == label


def test_scale_brings_a_field_to_the_unit_of_the_name(operator: Any) -> None:
    """A latency in microseconds becomes a ``_seconds`` histogram: buckets and sum in s."""
    op, url = operator(
        """
        [[histograms]]
        name = "t_pid_seconds"
        field = "pid"
        scale = 1e-6
        buckets = [0.00001, 0.001]
        [[counters]]
        name = "t_pid_added_seconds_total"
        field = "pid"
        scale = 1e-6
        """
    )
    op.process(batch((10, 0, "a"), (500, 0, "a"), (2000, 0, "a")))
    got = scrape(url)
    assert buckets(got, "t_pid_seconds") == {0.00001: 1.0, 0.001: 2.0, float("inf"): 3.0}
    assert got[("t_pid_seconds_sum", labels())] == pytest.approx(0.00251)
    assert got[("t_pid_added_seconds_total", labels())] == pytest.approx(0.00251)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('[[counters]]\nname = "a"\nscale = 2', "counters[0].scale: a scale multiplies the "
         "field: give the field"),
        ('[[counters]]\nname = "a"\nfield = "pid"\nscale = 0', "counters[0].scale: the "
         "scale is a finite number other than 0"),
        ('[[counters]]\nname = "igrun_events_total"', 'counters[0].name: "igrun_events_total" '
         "clashes with a metric of igrun's own"),
    ],
)  # fmt: skip
def test_scale_and_own_names_are_checked(config: str, message: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_config(config, SCHEMA)
    assert str(err.value) == f"metrics config: {message}"


IG_FILE = """
metrics_name: my_metrics
metrics:
  - name: executed_processes
    type: counter
    category: trace
    gadget: t
    labels:
      - comm
    selector:
      - "retval:!0"
  - name: pid_sizes
    type: histogram
    category: trace
    gadget: t
    field: pid
    bucket:
      type: exp2
      min: 1
      max: 4
      multiplier: 10
  - name: opened_files
    type: counter
    category: trace
    gadget: open
"""


def test_an_ig_metrics_file_is_read(operator: Any) -> None:
    """``ig``'s YAML file: the metrics of this run's gadget, ``selector`` as filters, and the
    exp2 bounds as ``ig`` makes them (multiplier * 2**i, min <= i < max)."""
    metrics = parse_ig_config(IG_FILE, SCHEMA, "trace t")
    assert [(m.kind.value, m.name) for m in metrics] == [
        ("counter", "executed_processes"),
        ("histogram", "pid_sizes"),
    ]  # opened_files is for trace open
    assert metrics[1].buckets == (20.0, 40.0, 80.0)
    linear = IG_FILE.replace("exp2", "linear").replace("min: 1", "min: 0")
    assert parse_ig_config(linear, SCHEMA, "trace t")[1].buckets == (0.0, 10.0, 20.0, 30.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("metrics: []", "metrics_name is missing"),
        ("metrics_name: m", "metrics section is missing"),
        ("metrics_name: m\nmetrics:\n  - name: a\n    type: counter\n    gadget: t",
         "metrics[0]: category is missing"),
        ("metrics_name: m\nmetrics:\n  - {name: a, type: summary, category: trace, gadget: t}",
         'metrics[0].type: "summary" is none of counter, gauge, histogram'),
        ("metrics_name: m\nmetrics:\n  - {name: a, type: counter, category: trace, gadget: x}",
         "no metric is for trace t"),
        ("metrics_name: m\nmetrics:\n  - {name: a, type: histogram, category: trace, "
         "gadget: t, field: pid}", "metrics[0].bucket.type: use exp2 or linear"),
        ("metrics_name: m\nmetrics:\n  - {name: a, type: counter, category: trace, gadget: t, "
         "labels: [nope]}", 'counters[0].labels: no column "nope"'),
    ],
)  # fmt: skip
def test_ig_file_mistakes_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_ig_config(text, SCHEMA, "trace t")
    assert str(err.value) == f"metrics config: {message}"


def test_gauge_window_must_be_positive() -> None:
    with pytest.raises(ParamError) as err:
        parse_config('[[gauges]]\nname = "a"\nwindow = 0', SCHEMA)
    assert str(err.value) == (
        "metrics config: gauges[0].window: the window is a number of seconds above 0"
    )


def test_gauges_of_a_windowed_run_show_the_last_whole_window(operator: Any) -> None:
    """With --interval (or a snapshot), a gauge shows the last complete window and only it:
    a label set that is not in it any more is gone, and counts add up over the window."""
    op, url = operator(
        """
        [[gauges]]
        name = "t_processes"
        labels = ["comm"]
        [[gauges]]
        name = "t_last_pid"
        labels = ["comm"]
        field = "pid"
        [[counters]]
        name = "t_rows_total"
        """,
        interval="1s",
    )
    op.process(batch((7, 0, "bash"), (3, 0, "ls")))
    op.process(batch((5, 0, "bash")))
    assert ("t_processes", labels(comm="bash")) not in scrape(url)  # the window is open
    assert op.flush() is None
    got = scrape(url)
    assert got[("t_processes", labels(comm="bash"))] == 2.0
    assert got[("t_processes", labels(comm="ls"))] == 1.0
    assert got[("t_last_pid", labels(comm="bash"))] == 5.0
    op.process(batch((9, 0, "bash")))
    op.flush()
    got = scrape(url)
    assert got[("t_processes", labels(comm="bash"))] == 1.0
    assert ("t_processes", labels(comm="ls")) not in got
    assert ("t_last_pid", labels(comm="ls")) not in got
    assert got[("t_rows_total", labels())] == 4.0  # counters keep counting across windows
    op.flush()
    assert not [k for k in scrape(url) if k[0] in ("t_processes", "t_last_pid")]


def test_each_metric_has_its_own_filter(operator: Any) -> None:
    op, url = operator(
        """
        [[counters]]
        name = "t_failed_bash_total"
        filter = ["comm:bash", "ret:!0"]
        [[counters]]
        name = "t_all_total"
        """
    )
    op.process(batch((1, 0, "bash"), (2, -2, "bash"), (3, -13, "bash"), (4, -2, "ls")))
    got = scrape(url)
    assert got[("t_failed_bash_total", labels())] == 2.0
    assert got[("t_all_total", labels())] == 4.0


def test_metrics_path_is_the_only_one_served(operator: Any) -> None:
    op, url = operator('[[counters]]\nname = "t_total"\n', path="/igrun/m")
    op.process(batch((1, 0, "a")))
    assert scrape(url)[("t_total", labels())] == 1.0
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url.replace("/igrun/m", "/metrics"), timeout=5)
    assert err.value.code == 404


def test_runs_of_one_process_share_an_address(tmp_path: Path) -> None:
    """Two runs that name one address use one server (no EADDRINUSE): each path serves the
    metrics of the runs that name it; the port is free once the last run has ended."""
    from igrun.core.run.resources import Resources
    from igrun.operators.metrics_http import Endpoints

    process = Resources()
    PrometheusOperator.share(process)
    port = free_port()

    def run(config: str, path: str = "/metrics") -> PrometheusOperator:
        file = tmp_path / f"m{uuid.uuid4().hex[:6]}.toml"
        file.write_text(config)
        ctx = GadgetContext(
            "t", Tracer, Params(()), Params(RUNTIME_PARAMS), {}, structlog.get_logger(),
            resources=Resources(process), tag="t",
        )  # fmt: skip
        ctx.schema = SCHEMA
        values = {
            "metrics-config": str(file),
            "metrics-listen-address": f"127.0.0.1:{port}",
            "metrics-path": path,
        }
        op = PrometheusOperator.instantiate(ctx, Params(PrometheusOperator.params, values))
        assert isinstance(op, PrometheusOperator)
        return op

    first = run('[[counters]]\nname = "t_first_total"\n')
    second = run('[[counters]]\nname = "t_second_total"\nlabels = ["comm"]\n')
    other_path = run('[[counters]]\nname = "t_first_total"\n', path="/other")
    assert first.server is second.server is other_path.server
    with pytest.raises(IgrunError) as err:
        run('[[counters]]\nname = "t_first_total"\n')
    assert str(err.value) == (
        f"metrics on 127.0.0.1:{port}/metrics: t_first_total is declared by another run "
        "too (give the runs different names or paths)"
    )
    endpoints = process.get(Endpoints)
    assert endpoints is not None and len(endpoints.by_address) == 1
    for op in (first, second, other_path):
        op.pre_run(SCHEMA)
    first.process(batch((1, 0, "a"), (2, 0, "b")))
    second.process(batch((3, 0, "a")))
    other_path.process(batch((4, 0, "c")))
    url = f"http://127.0.0.1:{port}/metrics"
    got = {k: v for k, v in scrape(url).items() if k[0].startswith("t_")}
    assert got == {
        ("t_first_total", labels()): 2.0,
        ("t_second_total", labels(comm="a")): 1.0,
    }
    assert {k: v for k, v in scrape(url.replace("/metrics", "/other")).items()
            if k[0].startswith("t_")} == {("t_first_total", labels()): 1.0}  # fmt: skip
    first.post_run()
    first.post_run()  # once is enough: a second call releases nothing more
    second.post_run()
    assert scrape(url.replace("/metrics", "/other"))[("t_first_total", labels())] == 1.0
    assert not port_is_free(port)
    other_path.post_run()
    assert port_is_free(port)
    assert endpoints.by_address == {}


def test_no_config_no_operator() -> None:
    ctx = GadgetContext("t", Tracer, Params(()), Params(RUNTIME_PARAMS), {}, structlog.get_logger())
    assert PrometheusOperator.instantiate(ctx, Params(PrometheusOperator.params)) is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            '[[counters]]\nname = "a"\nlabels = ["comm", "nope"]',
            'metrics config: counters[0].labels: no column "nope"',
        ),
        (
            '[[counters]]\nname = "a"\nlabels = ["comm", "pidd"]',
            'metrics config: counters[0].labels: no column "pidd" (did you mean "pid"?)',
        ),
        (
            '[[gauges]]\nname = "a"\nlables = ["comm"]',
            "metrics config: gauges[0].lables: unknown key "
            "(known: name, help, labels, field, filter, scale, window, top)",
        ),
        (
            '[[countres]]\nname = "a"',
            "metrics config: countres: unknown key "
            "(known: counters, gauges, histograms, functions)",
        ),
        (
            '[[counters]]\nname = "a"\nfield = "comm"',
            'metrics config: counters[0].field: "comm" is a str, not a number',
        ),
        (
            '[[histograms]]\nname = "a"\nfield = "pid"\nbuckets = [10, 5]',
            "metrics config: histograms[0].buckets: bounds must be strictly increasing",
        ),
        (
            '[[histograms]]\nname = "a"\nfield = "pid"',
            "metrics config: histograms[0].buckets: Field required",
        ),
        (
            '[[counters]]\nname = "a"\nfilter = ["ret:x"]',
            'metrics config: counters[0].filter: invalid filter "ret:x": '
            'ret is a number, not "x"',
        ),
        (
            '[[counters]]\nname = "a-b"',
            'metrics config: counters[0].name: "a-b" is not a Prometheus metric name '
            "(letters, digits, _ and :, not starting with a digit)",
        ),
        (
            '[[counters]]\nname = "a_total"\n[[gauges]]\nname = "a"',
            'metrics config: gauges[0].name: "a" clashes with counters[0].name (a_total)',
        ),
        (
            '[[gauges]]\nname = "a"\nlabels = ["ret", "retval"]',
            'metrics config: gauges[0].labels: "retval" and "ret" are the same label retval',
        ),
        ("", "metrics config: declares no metrics "
         "(add [[counters]], [[gauges]], [[histograms]] or [[functions]])"),
        ("[[counters]\n", "metrics config: not valid TOML: Expected ']]' at the end of an array "
         "declaration (at line 1, column 11)"),
    ],
)  # fmt: skip
def test_config_mistakes_name_the_key(config: str, message: str) -> None:
    with pytest.raises(ParamError) as err:
        parse_config(config, SCHEMA)
    assert str(err.value) == message


# ---- the real command ------------------------------------------------------------------------

RUNS = 7


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (as igrun itself would, SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


def wait_for_endpoint(proc: subprocess.Popen[str], url: str) -> None:
    """The endpoint answers once the gadget is attached."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.communicate()[1]
            pytest.fail(f"igrun ended early ({proc.returncode}): {err}")
        try:
            scrape(url)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"metrics endpoint {url} never answered: {proc.communicate()[1]}")


@pytest.mark.bpf
def test_exec_metrics_are_exact(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    comm = f"igt{uuid.uuid4().hex[:10]}"  # < 16 bytes: the whole name is the comm
    program = tmp_path / comm
    shutil.copy2("/bin/true", program)
    hidden = tmp_path / f"igh{uuid.uuid4().hex[:10]}"  # dropped by -F: never counted
    shutil.copy2("/bin/true", hidden)
    config = tmp_path / "metrics.toml"
    config.write_text(
        f"""
        [[counters]]
        name = "igrun_test_execs_total"
        labels = ["comm", "runtime.containerName"]
        [[counters]]
        name = "igrun_test_pids_total"
        labels = ["comm"]
        field = "pid"
        [[counters]]
        name = "igrun_test_mine_total"
        filter = ["comm:{comm}", "ret:0"]
        [[gauges]]
        name = "igrun_test_last_pid"
        labels = ["comm"]
        field = "pid"
        [[histograms]]
        name = "igrun_test_pid"
        labels = ["comm"]
        field = "pid"
        buckets = [1000, 10000, 100000, 1000000]
        [[histograms]]
        name = "igrun_test_retval"
        labels = ["comm"]
        field = "ret"
        buckets = [0, 1]
        """
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        [*igrun_cli.command, "trace", "exec", "--host", "-o", "json", "-F", f"comm:!{hidden.name}",
         "--metrics-config", str(config), "--metrics-listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_endpoint(proc, url)
        pids = []
        for _ in range(RUNS):
            child = subprocess.Popen([str(program)])
            assert child.wait() == 0
            pids.append(child.pid)
            subprocess.run([str(hidden)], check=True)
        me = labels(comm=comm)
        deadline = time.monotonic() + 10
        while scrape(url).get(("igrun_test_mine_total", labels()), 0) < RUNS:
            assert time.monotonic() < deadline, "the execs never reached the metrics"
            time.sleep(0.05)
        time.sleep(0.3)  # nothing more may come
        got = scrape(url)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err

    mine = [e for e in igrun_cli.events(out) if e["comm"] == comm]
    assert not [e for e in igrun_cli.events(out) if e["comm"] == hidden.name]
    assert not [k for k in got if ("comm", hidden.name) in k[1]]  # metrics see what -F keeps
    assert [e["pid"] for e in mine] == pids  # the JSON output saw exactly our execs
    assert got[("igrun_test_execs_total", labels(comm=comm, runtime_container_name=""))] == 7.0
    assert got[("igrun_test_mine_total", labels())] == 7.0
    assert got[("igrun_test_pids_total", me)] == float(sum(e["pid"] for e in mine))
    assert got[("igrun_test_last_pid", me)] == float(pids[-1])
    bounds = (1000.0, 10000.0, 100000.0, 1000000.0, float("inf"))
    expected = {le: float(sum(1 for pid in pids if pid <= le)) for le in bounds}
    assert buckets(got, "igrun_test_pid", comm=comm) == expected
    assert got[("igrun_test_pid_count", me)] == 7.0
    assert got[("igrun_test_pid_sum", me)] == float(sum(pids))
    assert buckets(got, "igrun_test_retval", comm=comm) == {0.0: 7.0, 1.0: 7.0, float("inf"): 7.0}
    assert got[("igrun_test_retval_count", me)] == 7.0
    assert got[("igrun_test_retval_sum", me)] == 0.0

    assert port_is_free(port)
    assert igrun_cli.pin_dirs_of(proc.pid) == []


@pytest.mark.bpf
@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            '[[counters]]\nname = "a_total"\nlabels = ["comm", "nope"]\n',
            'igrun: error: metrics config: counters[0].labels: no column "nope"\n',
        ),
        (
            '[[counters]]\nname = "a_total"\nlabel = ["comm"]\n',
            "igrun: error: metrics config: counters[0].label: unknown key "
            "(known: name, help, labels, field, filter, scale)\n",
        ),
    ],
)
def test_bad_config_is_one_line_and_exit_code_2(
    igrun_cli: IgrunCli, tmp_path: Path, config: str, message: str
) -> None:
    file = tmp_path / "metrics.toml"
    file.write_text(config)
    result = igrun_cli.run("trace", "exec", "--host", "-t", "5s", "--metrics-config", str(file))
    assert result.returncode == 2
    assert result.stderr == message
    assert result.stdout == ""


@pytest.mark.bpf
def test_port_in_use_fails_before_bpf_loads(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    config = tmp_path / "metrics.toml"
    config.write_text('[[counters]]\nname = "a_total"\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        argv = ("trace", "exec", "--host", "-t", "5s", "--metrics-config", str(config),
                "--metrics-listen-address", address)  # fmt: skip
        result = igrun_cli.run(*argv)
        verbose = igrun_cli.run(*argv, "-v")
    assert result.returncode == 1
    assert result.stderr == f"igrun: error: cannot serve metrics on {address}: " + (
        "Address already in use\n"
    )
    assert verbose.returncode == 1
    assert "libbpf: loading object" not in verbose.stderr  # it failed before any BPF loaded


@pytest.mark.bpf
def test_snapshot_gauges_follow_each_snapshot(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """``igrun run`` repeats a snapshot every --interval; a gauge counting its rows per comm
    follows the processes as they come and go."""
    source = Path(__file__).parent / "bpf" / "run_snapshot.bpf.c"
    snapshot = compile_bpf(source, tmp_path / "snapshot.bpf.o", build_dir=tmp_path / "build")
    comm = f"igs{uuid.uuid4().hex[:10]}"
    program = tmp_path / comm
    shutil.copy2("/bin/sleep", program)
    sleepers = [subprocess.Popen([str(program), "60"]) for _ in range(3)]
    config = tmp_path / "metrics.toml"
    config.write_text(
        f"""
        [[gauges]]
        name = "igrun_test_processes"
        labels = ["comm"]
        filter = ["comm:{comm}"]
        """
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        [*igrun_cli.command, "run", str(snapshot), "--host", "-o", "json", "-F", f"comm:{comm}",
         "--interval", "300ms", "--metrics-config", str(config),
         "--metrics-listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: list[float | None] = []

    def wait_for(count: float | None) -> None:
        deadline = time.monotonic() + 10
        while True:
            value = scrape(url).get(("igrun_test_processes", labels(comm=comm)))
            if not seen or seen[-1] != value:
                seen.append(value)
            if value == count:
                return
            assert time.monotonic() < deadline, f"gauge went {seen}, never to {count}"
            time.sleep(0.05)

    try:
        wait_for_endpoint(proc, url)
        wait_for(3.0)
        sleepers[0].kill()
        sleepers[0].wait()
        wait_for(2.0)
        for sleeper in sleepers[1:]:
            sleeper.kill()
            sleeper.wait()
        wait_for(None)  # no process of that name: the label set is gone
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert seen[-3:] == [3.0, 2.0, None]  # whole snapshots only: never a partial count
    pids = {e["pid"] for e in igrun_cli.events(out)}
    assert pids == {s.pid for s in sleepers}  # every snapshot listed them, and nothing else
    assert igrun_cli.pin_dirs_of(proc.pid) == []


def opens(path: Path, times: int) -> None:
    """Open ``path`` ``times`` times in a tight loop, in a child (a burst the reader of a
    small buffer cannot keep up with)."""
    subprocess.run(
        [sys.executable, "-c", "import os, sys\n"
         "for _ in range(int(sys.argv[2])): os.close(os.open(sys.argv[1], os.O_RDONLY))",
         str(path), str(times)],
        check=True,
    )  # fmt: skip


def wait_for_total(url: str, names: tuple[str, ...], labelset: frozenset[tuple[str, str]],
                   total: float) -> Samples:  # fmt: skip
    """Scrape until the samples ``names`` with ``labelset`` add up to ``total``."""
    deadline = time.monotonic() + 15
    while True:
        got = scrape(url)
        if sum(got.get((n, labelset), 0.0) for n in names) >= total:
            return got
        assert time.monotonic() < deadline, f"never reached {total}: {got}"
        time.sleep(0.05)


@pytest.mark.bpf
def test_an_exporter_counts_every_event_seen_or_lost(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """``-o none`` prints nothing; with a 4 KiB buffer a burst of opens overflows it, and
    every open is either an event seen or a lost one, both on the endpoint, exactly."""
    folder = tmp_path / f"burst-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    target = folder / "f"
    target.write_text("x")
    config = tmp_path / "metrics.toml"
    config.write_text('[[counters]]\nname = "igrun_test_opens_total"\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    run = igrun_cli.start(
        "trace", "open", "--host", "--prefixes", f"{folder}/", "--buffer-size", "4K",
        "-o", "none", "--metrics-config", str(config),
        "--metrics-listen-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    gadget = labels(gadget="trace open")
    try:
        for _ in range(3):  # one at a time: nothing is lost
            opens(target, 1)
        quiet = wait_for_total(url, ("igrun_events_total",), gadget, 3)
        # The fill is read with the loss counter, every 0.25 s: wait for that read.
        used = wait_for_total(url, ("igrun_buffer_used_max_bytes",), gadget, 1)
        burst = 20000
        opens(target, burst)
        wait_for_total(url, ("igrun_events_total", "igrun_lost_events_total"), gadget, 3 + burst)
        time.sleep(0.5)  # nothing more may come
        got = scrape(url)
    finally:
        out, err = run.stop()
    assert run.proc.returncode == 0, err
    assert out == ""  # -o none: not a byte of events
    assert quiet[("igrun_events_total", gadget)] == 3.0
    assert quiet[("igrun_lost_events_total", gadget)] == 0.0
    assert quiet[("igrun_test_opens_total", labels())] == 3.0
    seen = got[("igrun_events_total", gadget)]
    lost = got[("igrun_lost_events_total", gadget)]
    assert seen + lost == 3 + burst
    assert lost > 0, "a 4 KiB buffer kept up with 20000 opens: the test needs a bigger burst"
    assert got[("igrun_test_opens_total", labels())] == seen  # no filter: every event seen
    assert 1 <= got[("igrun_batches_total", gadget)] <= seen
    assert got[("igrun_buffer_size_bytes", gadget)] == 4096.0
    assert 0 < used[("igrun_buffer_used_max_bytes", gadget)] < 4096  # a record at a time
    fullest = got[("igrun_buffer_used_max_bytes", gadget)]
    assert 4096 / 2 < fullest <= 4096  # the burst that lost events had filled it
    assert got[("igrun_buffer_used_bytes", gadget)] <= fullest
    totals = [int(t) for t in re.findall(r"lost \d+ events total=(\d+)", err)]
    assert totals and totals[-1] == lost  # the same count as the warnings on stderr
    assert "Traceback" not in err
    run.assert_released()
    assert port_is_free(port)


@pytest.mark.bpf
def test_two_runs_of_a_config_share_the_metrics_address(
    igrun_cli: IgrunCli, tmp_path: Path
) -> None:
    """Two runs naming one address serve one endpoint (no "Address already in use"): each
    run's own metrics, and the run metrics of the gadget adding up both runs."""
    port = free_port()
    runs = []
    folders = []
    for i in range(2):
        folder = tmp_path / f"run{i}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        (folder / "f").write_text("x")
        folders.append(folder)
        metrics = tmp_path / f"metrics{i}.toml"
        metrics.write_text(f'[[counters]]\nname = "igrun_test_run{i}_opens_total"\n')
        runs.append(
            f'[[run]]\ngadget = "trace open"\nparams = {{prefixes = ["{folder}/"]}}\n'
            "operators = [\n"
            '  {name = "containers", with = {host = true}},\n'
            f'  {{name = "prometheus", with = {{metrics-config = "{metrics}", '
            f'metrics-listen-address = "127.0.0.1:{port}"}}}},\n'
            '  {name = "output", with = {output = "none"}},\n'
            "]\n"
        )
    config = tmp_path / "config.toml"
    config.write_text("\n".join(runs))
    url = f"http://127.0.0.1:{port}/metrics"
    run = igrun_cli.start("--config", str(config), runs=2)
    try:
        opens(folders[0] / "f", 4)
        opens(folders[1] / "f", 9)
        wait_for_total(url, ("igrun_events_total",), labels(gadget="trace open"), 13)
        time.sleep(0.3)  # nothing more may come
        got = scrape(url)
    finally:
        out, err = run.stop()
    assert run.proc.returncode == 0, err
    assert out == ""
    assert "Address already in use" not in err and "Traceback" not in err
    assert err.count("metrics_serving") == 2  # each run says where its metrics are
    assert got[("igrun_test_run0_opens_total", labels())] == 4.0
    assert got[("igrun_test_run1_opens_total", labels())] == 9.0
    assert got[("igrun_events_total", labels(gadget="trace open"))] == 13.0
    assert got[("igrun_lost_events_total", labels(gadget="trace open"))] == 0.0
    run.assert_released()
    assert port_is_free(port)


@pytest.mark.bpf
def test_an_ig_metrics_file_drives_a_run(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """``--metrics-config @file.yaml`` as ``ig prometheus --config @file.yaml`` takes it."""
    folder = tmp_path / f"ig-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "f").write_text("x")
    config = tmp_path / "metrics.yaml"
    config.write_text(
        "metrics_name: test\n"
        "metrics:\n"
        "  - {name: opened_files, type: counter, category: trace, gadget: open,\n"
        "     labels: [path], selector: ['err:0']}\n"
        "  - {name: executed_processes, type: counter, category: trace, gadget: exec}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    run = igrun_cli.start(
        "trace", "open", "--host", "--prefixes", f"{folder}/", "-o", "none",
        "--metrics-config", f"@{config}", "--metrics-listen-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    try:
        opens(folder / "f", 6)
        got = wait_for_total(url, ("opened_files_total",), labels(path=f"{folder}/f"), 6)
        time.sleep(0.3)
        got = scrape(url)
    finally:
        out, err = run.stop()
    assert run.proc.returncode == 0, err
    assert out == ""
    assert got[("opened_files_total", labels(path=f"{folder}/f"))] == 6.0
    assert not [k for k in got if k[0].startswith("executed_processes")]  # trace exec's
    assert got[("igrun_events_total", labels(gadget="trace open"))] == 6.0


@pytest.mark.bpf
def test_a_real_prometheus_stores_the_exact_counts(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Debian's ``prometheus`` scrapes ``igrun trace exec -c NAME --metrics-config`` every
    0.5 s; its query API gives the exact counts of the execs in that container: the run's own
    ``igrun_events_total`` (the container selection is in the kernel, so every event the run
    sees is one of them), a counter and a last-value gauge of the file."""
    needs_prometheus()
    name = unique("igrun-prom")
    podman.names.append(name)  # sleep as its init: no exec of its own while the test counts
    podman("run", "-d", "--pull=never", "--network", "none", "--name", name, IMAGE, "sleep", "600")
    config = tmp_path / "metrics.toml"
    config.write_text(
        """
        [[counters]]
        name = "igrun_execs_total"
        labels = ["comm", "runtime.containerName"]
        [[gauges]]
        name = "igrun_exec_last_uid"
        labels = ["runtime.containerName"]
        field = "uid"
        """
    )
    port = free_port()
    run = igrun_cli.start(
        "trace", "exec", "-c", name, "-o", "none", "--metrics-config", str(config),
        "--metrics-listen-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    execs = 5
    try:
        with prometheus(tmp_path / "prometheus", f"127.0.0.1:{port}") as prom:
            for _ in range(execs):
                podman("exec", "--user", "4321", name, "/bin/echo", "x")
            execs_total = f'igrun_execs_total{{runtime_container_name="{name}"}}'
            (series,) = prom.wait_for(execs_total, str(execs))
            time.sleep(3 * SCRAPE_INTERVAL)  # later scrapes: no more than that
            events = prom.values('igrun_events_total{job="igrun"}')
            stored = prom.values(f'{{job="igrun", runtime_container_name="{name}"}}')
            lost = prom.values('igrun_lost_events_total{job="igrun"}')
            up = prom.values('up{job="igrun"}')
    finally:
        out, err = run.stop()
    assert run.returncode == 0, err
    assert out == ""  # -o none
    instance = {("instance", f"127.0.0.1:{port}"), ("job", "igrun")}
    assert series["metric"] == {
        "__name__": "igrun_execs_total",
        "comm": "echo",
        "runtime_container_name": name,
        "instance": f"127.0.0.1:{port}",
        "job": "igrun",
    }
    execs_labels = {*instance, ("comm", "echo"), ("runtime_container_name", name)}
    stored.pop(frozenset({*execs_labels, ("__name__", "igrun_execs_created")}), None)
    assert stored == {
        frozenset({*execs_labels, ("__name__", "igrun_execs_total")}): str(execs),
        frozenset(
            {*instance, ("__name__", "igrun_exec_last_uid"), ("runtime_container_name", name)}
        ): "4321",
    }
    run_labels = {*instance, ("gadget", "trace exec")}
    assert events == {frozenset({*run_labels, ("__name__", "igrun_events_total")}): str(execs)}
    assert lost == {frozenset({*run_labels, ("__name__", "igrun_lost_events_total")}): "0"}
    assert up == {frozenset({*instance, ("__name__", "up")}): "1"}
