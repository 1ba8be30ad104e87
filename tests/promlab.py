"""A real Prometheus for the tests: Debian's ``prometheus`` binary, run by the test with its own
config, data folder and free port (no service), scraping igrun's endpoint every 0.5 s; the
test reads what Prometheus stored through its HTTP API (``/api/v1/query``)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from containerlab import needs

SCRAPE_INTERVAL = 0.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A running Prometheus: its address and its query API."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.proc = proc
        self.log = log

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr``: one ``{"metric": labels, "value": [t, "v"]}`` per
        series, as the API gives it."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        return list(body["data"]["result"])

    def values(self, expr: str) -> dict[frozenset[tuple[str, str]], str]:
        """Each series of ``expr`` (its labels, with ``__name__``) and its value, as
        Prometheus stored it (a string: ``"3"``)."""
        return {frozenset(s["metric"].items()): s["value"][1] for s in self.query(expr)}

    def wait_for(self, expr: str, want: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Query ``expr`` until its one series has the value ``want``, and return the vector;
        fail with what it had and Prometheus' log after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = self.query(expr)
            if len(got) == 1 and got[0]["value"][1] == want:
                return got
            time.sleep(0.1)
        targets = self.targets()
        raise AssertionError(
            f"{expr} is {got}, not {want}; targets {targets}\n{self.log.read_text()[-3000:]}"
        )

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets: their URL, health and last error."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as response:
            body = json.load(response)
        return [
            {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
            for t in body["data"]["activeTargets"]
        ]


def needs_prometheus() -> str:
    """The ``prometheus`` binary; skip without it (fail when BPF tests are required: CI
    installs it with scripts/install.sh)."""
    needs("prometheus")
    found = shutil.which("prometheus")
    assert found is not None
    return found


@contextmanager
def prometheus(
    folder: Path, target: str, metrics_path: str = "/metrics", job: str = "igrun"
) -> Iterator[Prometheus]:
    """Prometheus scraping ``http://TARGET/METRICS_PATH`` every 0.5 s, its data in
    ``folder``; stopped (and waited for) at the end."""
    binary = needs_prometheus()
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": f"{SCRAPE_INTERVAL * 1000:.0f}ms"},
                "scrape_configs": [
                    {
                        "job_name": job,
                        "scrape_interval": f"{SCRAPE_INTERVAL * 1000:.0f}ms",
                        "scrape_timeout": f"{SCRAPE_INTERVAL * 1000:.0f}ms",
                        "metrics_path": metrics_path,
                        "static_configs": [{"targets": [target]}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"prometheus not ready:\n{log.read_text()}"
            time.sleep(0.1)
        yield Prometheus(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
