"""The soak run: ``igrun trace exec`` and ``igrun trace open`` for a long time under storms.

    python bench/soak.py [--minutes 30] [--round 20]      (as root; or ``nox -s soak``)

A busy loop runs on every CPU at normal priority. Four tracers run side by side for the whole
time, on the same storms: ``igrun trace exec`` and ``igrun trace open`` (``--host -o json``,
default buffers) and libbpf-tools' ``execsnoop`` and ``opensnoop``. Every ``--round`` seconds an
exec storm (2,000 execs from 2 processes) and an open storm (40,000 opens at 20,000/s) run at
the same time; each exec and each open carries this run's mark. After each round the runner
samples igrun's resident memory and every tracer's events seen against events made.

Writes ``bench/results/soak-<time>.json`` (samples and totals) and prints a summary: memory over
time, events seen, missed and reported lost per tracer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from contention import SNOOP_HEADERS, SNOOP_LOST, cpu_hogs, cpu_seconds  # noqa: E402
from execbench import (  # noqa: E402
    IGRUN_LOST,
    Tracer,
    build_c,
    igrun_command,
    proc_status_mb,
    run_storm,
    snoop_command,
)

EXECS_PER_ROUND = 2000
OPENS_PER_ROUND = 40_000
OPEN_RATE = 20_000
SETTLE = 1.0  # after a round's storms: for the tracers to drain before they are counted


class Counted:
    """One tracer whose stdout is read as it comes: lines with the run's mark are counted."""

    def __init__(self, name: str, kind: str, argv: list[str], lost: Any, mark: str) -> None:
        self.name, self.kind, self.mark = name, kind, mark
        self.seen = 0
        self.header = threading.Event()
        self.igrun = name.startswith("igrun")
        ready = "] ready " if self.igrun else None  # the line igrun writes once attached
        self.tracer = Tracer(argv, subprocess.PIPE, lost, ready=ready)  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._count, daemon=True)
        self._thread.start()

    def _count(self) -> None:
        out: IO[str] = self.tracer.proc.stdout  # type: ignore[assignment]
        header = SNOOP_HEADERS[self.kind]
        for line in out:
            if self.mark in line:
                self.seen += 1
            elif not self.header.is_set() and line.startswith(header):
                self.header.set()

    def wait_ready(self) -> None:
        event = self.tracer.ready if self.igrun else self.header
        self.tracer.wait_for(event.is_set)

    def stop(self) -> int:
        code = self.tracer.stop()
        self._thread.join(30)
        return code


def soak(minutes: float, round_seconds: float) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:12]
    exec_mark = f"igrun-storm-{run_id}"
    made = {"exec": 0, "open": 0}
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tools = {name: build_c(name, tmp / "bin") for name in ("storm", "openstorm")}
        target = tmp / f"igrun-soak-{run_id}"
        target.write_bytes(b"")
        marks = {"exec": exec_mark, "open": str(target)}
        with cpu_hogs() as hogs:
            tracers = []
            for kind in ("exec", "open"):
                argv = [*igrun_command(), "trace", kind, "--host", "-o", "json", "-v"]
                tracers.append(Counted(f"igrun trace {kind}", kind, argv, IGRUN_LOST, marks[kind]))
                snoop = snoop_command(kind)
                if snoop is not None:
                    tracers.append(Counted(f"{kind}snoop", kind, snoop, SNOOP_LOST, marks[kind]))
            try:
                for t in tracers:
                    t.wait_ready()
                cpu_start = {t.name: cpu_seconds(t.tracer.proc.pid) for t in tracers}
                start = time.monotonic()
                end = start + minutes * 60
                while time.monotonic() < end:
                    round_start = time.monotonic()
                    opens = threading.Thread(
                        target=subprocess.run,
                        args=([str(tools["openstorm"]), "--count", str(OPENS_PER_ROUND),
                               "--rate", str(OPEN_RATE), "--path", str(target)],),
                        kwargs={"check": True, "capture_output": True},
                    )  # fmt: skip
                    opens.start()
                    run_storm(tools["storm"], EXECS_PER_ROUND, 2, run_id)
                    opens.join()
                    made["exec"] += EXECS_PER_ROUND
                    made["open"] += OPENS_PER_ROUND
                    time.sleep(SETTLE)
                    sample = {
                        "t": round(time.monotonic() - start, 1),
                        "made": dict(made),
                        "seen": {t.name: t.seen for t in tracers},
                        "lost_reported": {t.name: t.tracer.lost for t in tracers},
                        "rss_mb": {
                            t.name: proc_status_mb(t.tracer.proc.pid)["VmRSS"] for t in tracers
                        },
                    }
                    samples.append(sample)
                    print(json.dumps(sample), file=sys.stderr, flush=True)
                    time.sleep(max(0.0, round_start + round_seconds - time.monotonic()))
                cpu = {t.name: cpu_seconds(t.tracer.proc.pid) - cpu_start[t.name] for t in tracers}
            finally:
                codes = {t.name: t.stop() for t in tracers}
    totals = {}
    for t in tracers:
        totals[t.name] = {
            "made": made[t.kind],
            "seen": t.seen,
            "missed": made[t.kind] - t.seen,
            "lost_reported": t.tracer.lost,
            "cpu_seconds": round(cpu[t.name], 2),
            "exit_code": codes[t.name],
            "rss_mb_first": samples[0]["rss_mb"][t.name] if samples else None,
            "rss_mb_last": samples[-1]["rss_mb"][t.name] if samples else None,
            "rss_mb_max": max((s["rss_mb"][t.name] for s in samples), default=None),
        }
    return {
        "minutes": minutes,
        "round_seconds": round_seconds,
        "hogs": len(hogs),
        "rounds": len(samples),
        "totals": totals,
        "samples": samples,
    }


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"Soak: {result['minutes']} min, {result['rounds']} rounds, a busy loop on each of "
        f"{result['hogs']} CPUs; per round {EXECS_PER_ROUND:,} execs and {OPENS_PER_ROUND:,} "
        f"opens at {OPEN_RATE:,}/s.",
        "",
        "| tracer | made | seen | missed | lost (reported) | CPU s | RSS MB first / last / max |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, t in result["totals"].items():
        lines.append(
            f"| {name} | {t['made']:,} | {t['seen']:,} | {t['missed']:,} | "
            f"{t['lost_reported']:,} | {t['cpu_seconds']:.1f} | "
            f"{t['rss_mb_first']:.0f} / {t['rss_mb_last']:.0f} / {t['rss_mb_max']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--round", type=float, default=20.0, help="seconds per storm round")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: needs root (it loads BPF programs)")
    result = soak(args.minutes, args.round)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"soak-{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    sys.stdout.write(summary(result))
    print(f"\n{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
