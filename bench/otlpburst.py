"""OTLP export under a burst: how fast records reach a collector, and that what cannot go
is counted.

Serves the collector's LogsService and MetricsService (opentelemetry-proto) on a free port,
runs ``igrun trace open --host -o none -F comm:otlpburst --otlp-endpoint ...``, makes a
program named ``otlpburst`` open a file N times, and waits until every record arrived (or
120 s). Prints what the collector received, how long it took, and igrun's ``otlp_*`` lines.

    python bench/otlpburst.py 50000
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)

OPENER = "import os\nfor _ in range({n}):\n    os.close(os.open('/etc/hostname', os.O_RDONLY))"


class Received:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records = 0


def serve(got: Received) -> tuple[Any, int]:
    class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            n = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
            with got.lock:
                got.records += n
            return logs_service_pb2.ExportLogsServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("opens", type=int, nargs="?", default=50_000)
    args = parser.parse_args()
    got = Received()
    server, port = serve(got)
    with tempfile.TemporaryDirectory() as tmp:
        opener = Path(tmp) / "otlpburst"  # the comm the filter keeps
        os.symlink(sys.executable, opener)
        igrun = subprocess.Popen(
            [sys.executable, "-m", "igrun.core.cli", "trace", "open", "--host", "-o", "none",
             "-F", "comm:otlpburst", "--otlp-endpoint", f"grpc://127.0.0.1:{port}"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert igrun.stderr is not None
        for line in igrun.stderr:
            if " ready " in line:
                break
        started = time.monotonic()
        subprocess.run([str(opener), "-c", OPENER.format(n=args.opens)], check=True)
        burst = time.monotonic() - started
        while time.monotonic() - started < 120:
            with got.lock:
                if got.records >= args.opens:
                    break
            time.sleep(0.05)
        took = time.monotonic() - started
        igrun.send_signal(signal.SIGINT)
        err = igrun.stderr.read()
        igrun.wait()
    server.stop(None)
    print(
        f"opens={args.opens} burst={burst:.2f}s received={got.records} "
        f"after={took:.2f}s rate={got.records / took:,.0f}/s"
    )
    print("\n".join(line for line in err.splitlines() if "otlp" in line or "lost" in line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
