"""The contention benchmark: igrun against libbpf-tools' C tracers with both CPUs busy.

    python bench/contention.py [--rounds N]      (as root; or ``nox -s bench -- --contention``)

A busy loop runs on every CPU at normal priority for the whole benchmark. Under it, each storm
runs once under ``igrun trace open|exec --host`` (default buffer) and once under libbpf-tools'
``opensnoop``/``execsnoop``, one tracer at a time, in the same minutes:

- ``trace open`` at 20,000 and at 50,000 opens/s (two seconds of opens of one file whose
  unique name marks the storm; ``openstorm.c``),
- an exec storm of 20,000 execs from 2 processes (``storm.c``; a unique argument marks it).

For each run: events made, events seen (output lines with the storm's mark), losses the tracer
reported, and the tracer's CPU time while the storm ran and drained (``/proc/<pid>/stat``, all
threads). Prints one JSON object; ``run.py --contention`` adds it to its report and table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from execbench import (  # noqa: E402
    EXECSNOOP_LOST,
    IGRUN_LOST,
    SETTLE,
    Tracer,
    build_c,
    igrun_command,
    run_storm,
    snoop_command,
)

SNOOP_LOST = EXECSNOOP_LOST  # libbpf-tools print "Lost N events on CPU #C!" alike
SNOOP_HEADERS = {"open": "PID", "exec": "PCOMM"}
ATTACH_SETTLE = 0.5  # after attaching: loading is not what is measured
HOG = "while True: pass"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Storm:
    """What is made: ``count`` opens at ``rate`` per second, or ``count`` execs."""

    kind: str  # "open" or "exec"
    count: int
    rate: int = 0
    workers: int = 2

    @property
    def label(self) -> str:
        if self.kind == "open":
            return f"trace open, {self.rate:,} opens/s, {self.count:,} opens"
        return f"trace exec, storm of {self.count:,} execs from {self.workers} processes"


STORMS = (Storm("open", 40_000, 20_000), Storm("open", 100_000, 50_000), Storm("exec", 20_000))


@contextlib.contextmanager
def cpu_hogs() -> Iterator[list[int]]:
    """A busy loop pinned to each CPU, at normal priority, until the block ends."""
    hogs = []
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            hogs.append(
                subprocess.Popen(
                    [sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n{HOG}"],
                    start_new_session=True,
                )
            )
        yield [h.pid for h in hogs]
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def cpu_seconds(pid: int) -> float:
    """User and system time of process ``pid`` so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def make(storm: Storm, tools: dict[str, Path], mark: str) -> dict[str, Any]:
    """Run the storm; its JSON summary. ``mark`` is the file opened or the exec's tag."""
    if storm.kind == "open":
        argv = [str(tools["openstorm"]), "--count", str(storm.count), "--rate", str(storm.rate)]
        done = subprocess.run([*argv, "--path", mark], check=True, capture_output=True, text=True)
        result: dict[str, Any] = json.loads(done.stdout)
        return result
    return run_storm(tools["storm"], storm.count, storm.workers, mark)


def count_marked(path: Path, mark: str) -> int:
    with path.open(errors="replace") as f:
        return sum(mark in line for line in f)


def run_one(storm: Storm, tracer: str, tools: dict[str, Path], tmp: Path) -> dict[str, Any]:
    """One storm under one tracer ("igrun" or "C"): made, seen, lost, CPU seconds."""
    tag = uuid.uuid4().hex[:12]
    if storm.kind == "open":
        target = tmp / f"igrun-open-{tag}"
        target.write_bytes(b"")
        mark = arg = str(target)
    else:
        arg, mark = tag, f"igrun-storm-{tag}"
    out = tmp / f"{tracer}-{tag}.out"
    if tracer == "igrun":
        argv = [*igrun_command(), "trace", storm.kind, "--host", "-o", "json", "-v"]
        lost, ready_text = IGRUN_LOST, "] ready "  # the line igrun writes once attached
    else:
        snoop = snoop_command(storm.kind)
        if snoop is None:
            return {"storm": storm.label, "tracer": f"{storm.kind}snoop", "error": "not installed"}
        argv, lost, ready_text = snoop, SNOOP_LOST, None
    with out.open("wb") as stdout, Tracer(argv, stdout, lost, ready=ready_text) as t:
        if ready_text:
            t.wait_for(t.ready.is_set)
        else:
            t.wait_for(lambda: SNOOP_HEADERS[storm.kind] in out.read_text(errors="replace"))
        time.sleep(ATTACH_SETTLE)
        before = cpu_seconds(t.proc.pid)
        summary = make(storm, tools, arg)
        time.sleep(SETTLE)
        cpu = cpu_seconds(t.proc.pid) - before
        exit_code = t.stop()
    seen = count_marked(out, mark)
    out.unlink()
    return {
        "storm": storm.label,
        "kind": storm.kind,
        "tracer": f"igrun trace {storm.kind}" if tracer == "igrun" else f"{storm.kind}snoop",
        "made": storm.count,
        "seen": seen,
        "missed": storm.count - seen,
        "lost_reported": t.lost,
        "cpu_seconds": round(cpu, 2),
        "storm_rate": summary["rate"],
        "exit_code": exit_code,
    }


def contention(rounds: int = 1, storms: tuple[Storm, ...] = STORMS) -> dict[str, Any]:
    """Every storm under igrun and under the C tool, ``rounds`` times, CPUs hogged."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        tools = {name: build_c(name, tmp / "bin") for name in ("storm", "openstorm")}
        with cpu_hogs() as hogs:
            for _ in range(rounds):
                for storm in storms:
                    for tracer in ("igrun", "C"):
                        run = run_one(storm, tracer, tools, tmp)
                        print(json.dumps(run), file=sys.stderr, flush=True)
                        runs.append(run)
    return {"hogs": len(hogs), "rounds": rounds, "runs": runs}


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        f"Contention: a busy loop on each of the {result['hogs']} CPUs at normal priority, "
        f"{result['rounds']} round(s), one tracer at a time, default buffers:",
        "",
        "| storm | tracer | made | seen | lost (reported) | tracer CPU s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in result["runs"]:
        if "error" in r:
            lines.append(f"| {r['storm']} | {r['tracer']} | | | | {r['error']} |")
            continue
        lines.append(
            f"| {r['storm']} | {r['tracer']} | {r['made']:,} | {r['seen']:,} | "
            f"{r['lost_reported']:,} | {r['cpu_seconds']:.2f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", default="", help="storms whose label contains this")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("contention: needs root (it loads BPF programs)")
    result = contention(args.rounds, tuple(s for s in STORMS if args.only in s.label))
    print(json.dumps(result, indent=1))
    print("\n".join(markdown(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
