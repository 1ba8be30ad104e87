"""``--otlp-endpoint``: a real ``igrun trace exec`` run sends its events and counts to a
collector — here the collector's two gRPC services (LogsService, MetricsService) served by a
small server in the test, with the opentelemetry-proto package's generated code."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from igrun.testing import marker

grpc = pytest.importorskip("grpc")
logs_pb2 = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2")
logs_grpc = pytest.importorskip("opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc")
metrics_pb2 = pytest.importorskip("opentelemetry.proto.collector.metrics.v1.metrics_service_pb2")
metrics_grpc = pytest.importorskip(
    "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc"
)

if TYPE_CHECKING:
    from conftest import IgrunCli


@dataclass
class Collector:
    """What the test collector received: every request, whole."""

    port: int = 0
    logs: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def records(self) -> list[tuple[dict[str, str], Any]]:
        """(resource attributes, log record) of every record received."""
        out = []
        with self.lock:
            for request in self.logs:
                for rl in request.resource_logs:
                    resource = {a.key: a.value.string_value for a in rl.resource.attributes}
                    for sl in rl.scope_logs:
                        out.extend((resource, r) for r in sl.log_records)
        return out

    def last_sums(self) -> dict[str, float]:
        """The last value received of each metric (counters: cumulative sums)."""
        values: dict[str, float] = {}
        with self.lock:
            for request in self.metrics:
                for rm in request.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            for point in m.sum.data_points:
                                values[m.name] = point.as_int or point.as_double
        return values

    def metric_resources(self) -> list[dict[str, str]]:
        with self.lock:
            return [
                {a.key: a.value.string_value for a in rm.resource.attributes}
                for request in self.metrics
                for rm in request.resource_metrics
            ]


@pytest.fixture
def collector() -> Iterator[Collector]:
    got = Collector()

    class Logs(logs_grpc.LogsServiceServicer):  # type: ignore[misc,name-defined]
        def Export(self, request: Any, context: Any) -> Any:
            with got.lock:
                got.logs.append(request)
            return logs_pb2.ExportLogsServiceResponse()

    class Metrics(metrics_grpc.MetricsServiceServicer):  # type: ignore[misc,name-defined]
        def Export(self, request: Any, context: Any) -> Any:
            with got.lock:
                got.metrics.append(request)
            return metrics_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    metrics_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    got.port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield got
    server.stop(None)


def _untimed(line: str) -> str:
    return re.sub(r'"timestamp":\d+', '"timestamp":0', line, count=1)


@pytest.mark.bpf
def test_the_collector_gets_the_exact_events_and_the_run_metrics(
    igrun_cli: IgrunCli, collector: Collector
) -> None:
    tag = marker()
    env = {**os.environ, "NODE_NAME": "node-a"}
    run = igrun_cli.start(
        "trace", "exec", "--host", "-o", "json",
        "--otlp-endpoint", collector.endpoint, "--otlp-metrics-interval", "1s",
        env=env,
    )  # fmt: skip
    children = [
        subprocess.Popen(["/bin/echo", tag, str(i)], stdout=subprocess.DEVNULL) for i in range(3)
    ]
    for child in children:
        child.wait()
    out, err = run.stop()
    assert run.returncode == 0, err
    assert "Traceback" not in err
    run.assert_released()

    raw = [line for line in out.splitlines() if line]
    lines = [json.loads(line) for line in raw]
    printed = [line for line, e in zip(raw, lines, strict=True) if e["type"] != "warn"]
    lost = sum(int(e["message"].split()[1]) for e in lines if e["type"] == "warn")
    records = collector.records()
    # one log record per event: the bodies are -o json's lines, in order, byte for byte but
    # for the timestamp (each writer converts boot time to wall time when it writes)
    bodies = [r.body.string_value for _, r in records]
    assert [_untimed(b) for b in bodies] == [_untimed(p) for p in printed]
    for body, line in zip(bodies, printed, strict=True):
        assert abs(json.loads(body)["timestamp"] - json.loads(line)["timestamp"]) < 50_000_000
    mine = [json.loads(r.body.string_value) for _, r in records if tag in r.body.string_value]
    assert [(e["pid"], e["args"]) for e in mine] == [
        (c.pid, ["/bin/echo", tag, str(i)]) for i, c in enumerate(children)
    ]
    assert all(e["ppid"] == os.getpid() and e["comm"] == "echo" for e in mine)
    resource, first = records[0]
    assert resource["service.name"] == "igrun"
    assert resource["k8s.node.name"] == "node-a"
    assert resource["host.name"] == os.uname().nodename
    assert {a.key: a.value.string_value for a in first.attributes} == {"gadget": "trace exec"}

    # the run's counts, sent at the end too: every event seen went out as a record
    sums = collector.last_sums()
    assert sums["igrun.events"] == len(printed)
    assert sums["igrun.lost_events"] == lost  # a busy host may fill the buffer: told, not hidden
    assert 1 <= sums["igrun.batches"] <= len(printed)
    assert sums["igrun.otlp.dropped_records"] == 0
    assert all(r["k8s.node.name"] == "node-a" for r in collector.metric_resources())
    assert f"otlp_exported gadget='trace exec' records={len(printed)}" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.bpf
def test_records_a_collector_never_takes_are_counted(igrun_cli: IgrunCli) -> None:
    """Nobody listens: the run goes on, ends on time, and says how many records did not go."""
    run = igrun_cli.start(
        "trace", "exec", "--host", "-o", "json", "--otlp-timeout", "1s",
        "--otlp-endpoint", f"grpc://127.0.0.1:{_free_port()}",
    )  # fmt: skip
    for _ in range(2):
        subprocess.run(["/bin/true"], check=True)
    out, err = run.stop(timeout=30)
    assert run.returncode == 0, err
    events = len([line for line in out.splitlines() if '"type":"normal"' in line])
    assert events >= 2
    line = next(x for x in err.splitlines() if "otlp_not_exported" in x)
    assert f"records={events}" in line.split()
    assert "exported=0" in line
    # the SDK's own complaint comes once, as one of igrun's log lines
    failing = [x for x in err.splitlines() if "otlp_export_failing" in x]
    assert len(failing) >= 1 and "UNAVAILABLE" in failing[0]
    assert all("[warning]" in x or "[info]" in x or "[debug]" in x for x in err.splitlines())
    run.assert_released()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--otlp-endpoint", "ftp://x:1"], '--otlp-endpoint: "ftp://x:1": use grpc://'),
        (["--otlp-endpoint", "grpc://collector"], "expected e.g. grpc://collector:4317"),
        (["--otlp-headers", "a=b"], "--otlp-headers needs --otlp-endpoint"),
        (
            ["--otlp-endpoint", "grpc://c:4317", "--otlp-ca", "/etc/hostname"],
            "--otlp-ca is for https:// endpoints",
        ),
        (["--otlp-endpoint", "grpc://c:4317", "--otlp-headers", "nope"], '"nope" is not KEY'),
        (["--otlp-endpoint", "https://c:4317", "--otlp-cert", "/etc/hostname"], "go together"),
    ],
)
def test_bad_otlp_flags_are_one_line(igrun_cli: IgrunCli, args: list[str], message: str) -> None:
    done = igrun_cli.run("trace", "exec", "--host", *args)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert message in done.stderr


def test_without_the_sdk_the_flag_is_one_line(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """An ``opentelemetry`` package without the SDK ahead on the path: as if not installed."""
    (tmp_path / "opentelemetry").mkdir()
    (tmp_path / "opentelemetry" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = igrun_cli.run("trace", "exec", "--host", "--otlp-endpoint", "grpc://c:4317", env=env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "igrun: error: --otlp-endpoint needs the OpenTelemetry SDK and its OTLP gRPC "
        "exporter: pip install 'igrun[otlp]'"
    ]


def _certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "rsa:2048", "-nodes"]
    ssl("req", "-x509", *key, "-days", "1", "-subj", "/CN=ca", "-keyout", "ca.key",
        "-out", "ca.pem")  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        ssl("req", *key, "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (folder / f"{name}.ext").write_text(ext + "\n")
        sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
        ssl("x509", "-req", "-in", f"{name}.csr", *sign, "-extfile", f"{name}.ext",
            "-out", f"{name}.pem")  # fmt: skip
    names = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    return {n: folder / n for n in names}


@pytest.mark.bpf
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_mutual_tls_to_the_collector(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """https:// with --otlp-ca, --otlp-cert and --otlp-key: a collector that requires a client
    certificate signed by its CA gets the events; without the client certificate, none."""
    certs = _certs(tmp_path)
    got: list[Any] = []

    class Logs(logs_grpc.LogsServiceServicer):  # type: ignore[misc,name-defined]
        def Export(self, request: Any, context: Any) -> Any:
            got.append(request)
            return logs_pb2.ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    credentials = grpc.ssl_server_credentials(
        [(certs["server.key"].read_bytes(), certs["server.pem"].read_bytes())],
        root_certificates=certs["ca.pem"].read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        endpoint = f"https://127.0.0.1:{port}"
        common = ("trace", "exec", "--host", "-o", "json", "--otlp-timeout", "2s",
                  "--otlp-endpoint", endpoint, "--otlp-ca", str(certs["ca.pem"]))  # fmt: skip
        tag = marker()
        run = igrun_cli.start(
            *common, "--otlp-cert", str(certs["client.pem"]), "--otlp-key", str(certs["client.key"])
        )
        child = subprocess.run(["/bin/echo", tag], capture_output=True, check=True)
        assert child.returncode == 0
        _, err = run.stop()
        assert run.returncode == 0, err
        bodies = [r.body.string_value for q in got for rl in q.resource_logs
                  for sl in rl.scope_logs for r in sl.log_records]  # fmt: skip
        assert len([b for b in bodies if tag in b]) == 1
        assert "otlp_exported" in err

        got.clear()
        run = igrun_cli.start(*common)  # no client certificate: refused
        subprocess.run(["/bin/true"], check=True)
        _, err = run.stop()
        assert run.returncode == 0, err
        assert got == []
        assert "otlp_not_exported" in err and "exported=0" in err
    finally:
        server.stop(None)
