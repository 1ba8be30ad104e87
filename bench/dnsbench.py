"""``trace dns`` under a DNS load: how many events igrun delivers, and how many it loses.

``dnsload.c`` (compiled here) answers UDP queries on the loopback and sends queries at a
given rate (0: as fast as one core can, batched with sendmmsg) while ``igrun trace dns
--host -o json -F name:load.igrun.test.`` runs as users run it, its JSON read and counted by
this script. On the loopback the packet socket sees every datagram twice (leaving and
arriving), so a query and its reply make four events: the expected count is
``2 * (queries sent + replies sent)``. Lost events are the
``lost N events`` warnings igrun writes; the rest of any gap is what the run did not deliver
by the end (it should be none).

Run as root: ``python bench/dnsbench.py --rates 25000,50000,0 --seconds 5`` prints a Markdown
table and writes ``bench/results/dns-<time>.json`` (``--out FILE``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
NAME = "load.igrun.test."
F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20
_LOST = re.compile(rb'"lost (\d+) events"')


class Counter:
    """Reads igrun's JSON lines as they come: events, and the events it says it lost."""

    def __init__(self, stream: Any) -> None:
        self.events = 0
        self.lost = 0
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        rest = b""
        while chunk := self._stream.read1(1 << 20):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            whole, rest = data[:cut], data[cut:]
            self.events += whole.count(b"\n")
            for match in _LOST.finditer(whole):  # a warn line: not an event
                self.lost += int(match.group(1))
                self.events -= 1

    def join(self) -> None:
        self._thread.join(timeout=30)


def settle(counter: Counter, expected: int, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until the run has delivered or reported lost ``expected`` events (counting from
    zero), or nothing came for ``quiet`` seconds: it has caught up."""
    deadline = time.monotonic() + limit
    last, since = counter.events + counter.lost, time.monotonic()
    while time.monotonic() < deadline and last < expected:
        time.sleep(0.1)
        now = counter.events + counter.lost
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_rate(load: Path, counter: Counter, rate: int, seconds: float) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([str(load), "serve", str(port)], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None and server.stdout.readline() == "serving\n"
    events, lost = counter.events, counter.lost
    try:
        out = subprocess.run(
            [str(load), "query", str(port), str(rate), str(seconds)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    finally:
        server.terminate()
        replies = json.loads(server.communicate(timeout=10)[0].splitlines()[-1])["replies"]
    sent = json.loads(out)
    expected = 2 * (sent["sent"] + replies)
    settle(counter, events + lost + expected)
    seen, lost = counter.events - events, counter.lost - lost
    return {
        "rate": rate or "max",
        "seconds": sent["seconds"],
        "queries_sent": sent["sent"],
        "queries_per_s": round(sent["sent"] / sent["seconds"]),
        "replies_sent": replies,
        "events_expected": expected,
        "events_seen": seen,
        "events_per_s": round(seen / sent["seconds"]),
        "events_lost": lost,
        "missing": expected - seen - lost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25000,50000,0", help="queries/s (0: max)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--buffer-size", default="", help="igrun's --buffer-size")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("dnsbench: run as root", file=sys.stderr)
        return 2
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        print("dnsbench: needs a C compiler", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        load = Path(tmp) / "dnsload"
        subprocess.run([cc, "-O2", "-o", str(load), str(BENCH_DIR / "dnsload.c")], check=True)
        flags = ["--buffer-size", args.buffer_size] if args.buffer_size else []
        igrun = subprocess.Popen(
            [sys.executable, "-m", "igrun.core.cli", "trace", "dns", "--host", "-o", "json",
             "-F", f"name:{NAME}", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert igrun.stderr is not None
        for line in igrun.stderr:
            if b"ready" in line:
                break
        else:
            print("dnsbench: igrun did not start", file=sys.stderr)
            return 1
        threading.Thread(target=igrun.stderr.read, daemon=True).start()
        # A wide pipe, so that igrun's writes never wait on this counter's wakeups.
        fcntl.fcntl(igrun.stdout.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        counter = Counter(igrun.stdout)
        rows = [one_rate(load, counter, int(r), args.seconds) for r in args.rates.split(",")]
        igrun.send_signal(2)
        igrun.wait(timeout=30)
        counter.join()
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")
    result = {"bench": "trace dns", "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
              "rows": rows}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"dns-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
