"""The throughput benchmark: ``nox -s bench`` (or ``python bench/run.py``, as root).

For every offered rate, the load generator (pinned to one CPU) makes the burst program emit
numbered events, and one consumer at a time (pinned to another CPU) drains them: the C
reference over plain libbpf, and igrun through its launcher into a null sink, JSON to a file,
columns to a file, and a chain with a filter. Each cell counts lost events exactly (sequence
gaps; the BPF side's drop counter; perf's lost records) and the consumer's CPU time, so
consumers compare as events per CPU-second at the same offered rate, in the same run. With
``--busy``, a busy loop runs on every CPU meanwhile, so the generator and each consumer compete
for their CPU as on a loaded host.
Startup, memory and an exec storm against libbpf-tools' execsnoop come from ``execbench.py``;
with ``--contention ROUNDS``, instead of all that, igrun against opensnoop/execsnoop with every
CPU busy (``contention.py``).

Results: ``bench/results/<time>.json`` and ``.md`` (the table the README quotes).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from contention import contention, cpu_hogs  # noqa: E402
from contention import markdown as contention_markdown  # noqa: E402
from execbench import exec_storm, startup  # noqa: E402

from build import build  # noqa: E402

RATES = (10_000, 100_000, 300_000, 1_000_000, 3_000_000)
PER_TRIGGER = 50
MIN_EVENTS = 100_000  # per cell
PERF_PAGES = 1024  # per CPU, for C and igrun alike (igrun_consumer.Burst.perf_buffer_pages)
START_TIMEOUT = 30.0
LOADGEN_CPU, CONSUMER_CPU = 1, 0
RING_BYTES = 0  # --ring-bytes: 0 leaves each consumer's default (16 MiB for both)
SHM = Path("/dev/shm")  # files the sinks write: memory, so the disk is not what is measured


@dataclass(frozen=True)
class Consumer:
    """One way of draining the burst object: the command (given the generator's pid) and
    where its data goes."""

    name: str
    variant: str  # "ring" or "perf": which burst object
    command: Callable[[Path, int], list[str]]
    reference: str  # the C consumer it is compared with
    sink: str = ""  # "file": stdout goes to a file in memory


def c_consumer(*extra: str) -> Callable[[Path, int], list[str]]:
    def command(obj: Path, pid: int) -> list[str]:
        return [
            str(build()["refconsumer"]),
            str(obj),
            f"--pid={pid}",
            f"--per-trigger={PER_TRIGGER}",
            f"--cpu={CONSUMER_CPU}",
            *extra,
        ]

    return command


def igrun_consumer(*flags: str, discard: bool = False) -> Callable[[Path, int], list[str]]:
    def command(obj: Path, pid: int) -> list[str]:
        return [
            sys.executable,
            str(HERE / "igrun_consumer.py"),
            str(obj),
            f"--pid={pid}",
            f"--per-trigger={PER_TRIGGER}",
            f"--cpu={CONSUMER_CPU}",
            *(["--discard"] if discard else []),
            "--",
            *flags,
        ]

    return command


CONSUMERS = (
    Consumer("C ring", "ring", c_consumer(), "C ring"),
    Consumer("igrun ring, null sink", "ring", igrun_consumer("-o", "json", discard=True), "C ring"),
    Consumer("igrun ring, JSON to a file", "ring", igrun_consumer("-o", "json"), "C ring", "file"),
    Consumer(
        "igrun ring, columns to a file", "ring", igrun_consumer("-o", "columns"), "C ring", "file"
    ),
    Consumer(
        "igrun ring, enrichment + filter",
        "ring",
        igrun_consumer("--host", "-F", "comm:loadgen", "-F", "index:>=0", discard=True),
        "C ring",
    ),
    Consumer(
        "C perf, wakeup per event",
        "perf",
        c_consumer(f"--pages={PERF_PAGES}", "--wakeup-events=1"),
        "C perf, wakeup per event",
    ),
    Consumer(
        "C perf, wakeup per 64",
        "perf",
        c_consumer(f"--pages={PERF_PAGES}", "--wakeup-events=64"),
        "C perf, wakeup per 64",
    ),
    Consumer(
        "igrun perf, null sink",
        "perf",
        igrun_consumer("-o", "json", discard=True),
        "C perf, wakeup per 64",
    ),
)


def _line(proc: subprocess.Popen[str], stream: str, want: str, timeout: float) -> str:
    """The first line of ``stream`` (stdout/stderr) starting with ``want``."""
    pipe = getattr(proc, stream)
    found: list[str] = []

    def read() -> None:
        for line in pipe:
            if line.startswith(want):
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if not found:
        proc.kill()
        raise RuntimeError(f"{proc.args[0]}: no {want!r} line within {timeout} s")
    return found[0]


def run_cell(consumer: Consumer, obj: Path, rate: int, duration: float) -> dict[str, object]:
    """One consumer at one rate: both programs' results, and what they mean."""
    with tempfile.TemporaryFile(dir=SHM, prefix="igrun-bench-") as sink:
        load, result = _drive(consumer, obj, rate, duration, sink if consumer.sink else None)
        output_bytes = os.fstat(sink.fileno()).st_size
    expected = int(load["events"])
    received = int(result["received"])
    cpu = float(result["cpu_seconds"])
    return {
        "consumer": consumer.name,
        "reference": consumer.reference,
        "offered_rate": rate,
        "achieved_rate": load["achieved_rate"],
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "gaps": result["gaps"],
        "dropped": result.get("dropped", 0),
        "perf_lost": result.get("perf_lost", 0),
        "cpu_seconds": cpu,
        "events_per_cpu_second": received / cpu if cpu > 0 else None,
        "batches": result.get("batches"),
        "output_bytes": output_bytes,
    }


def _drive(
    consumer: Consumer, obj: Path, rate: int, duration: float, sink: IO[bytes] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start the generator, attach the consumer to its pid, run the load, stop the consumer;
    return both results. Nothing started here outlives it."""
    loadgen = subprocess.Popen(
        [str(build()["loadgen"]), f"--rate={rate}", f"--per-trigger={PER_TRIGGER}",
         f"--duration={duration}", f"--cpu={LOADGEN_CPU}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    proc = None
    c_side = consumer.name.startswith("C ")
    try:
        pid = json.loads(_line(loadgen, "stdout", "{", START_TIMEOUT))["pid"]
        command = consumer.command(obj, pid)
        if RING_BYTES and consumer.variant == "ring":  # the same ring for C and igrun
            command += (
                [f"--ring-bytes={RING_BYTES}"] if c_side else ["--buffer-size", str(RING_BYTES)]
            )
        proc = subprocess.Popen(
            command,
            stdout=sink if sink is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _line(proc, "stdout" if c_side else "stderr", "ready" if c_side else "bench-ready", 60)
        out, err = loadgen.communicate("go\n", timeout=duration + START_TIMEOUT)
        load = json.loads(out.splitlines()[-1])
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{consumer.name} failed: {err.strip()[-500:]}")
        if c_side:
            return load, json.loads(out.splitlines()[-1])
        line = next(x for x in err.splitlines() if x.startswith("bench-result "))
        return load, json.loads(line.removeprefix("bench-result "))
    finally:
        for p in (loadgen, proc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def ratios(cells: list[dict[str, object]]) -> None:
    """Each igrun cell's events per CPU-second as a fraction of its C reference's (the one of
    the same repeat)."""
    by = {(c["consumer"], c["offered_rate"], c.get("repeat", 0)): c for c in cells}
    for c in cells:
        ref = by.get((c["reference"], c["offered_rate"], c.get("repeat", 0)))
        if ref is not None and ref is not c and ref["events_per_cpu_second"]:
            c["ratio_to_c"] = c["events_per_cpu_second"] / ref["events_per_cpu_second"]  # type: ignore[operator]


def medians(cells: list[dict[str, Any]]) -> list[str]:
    """With ``--repeat``: per consumer and rate, the median of the runs and their range (this
    machine's figures move from one run to the next), and the lost events of all runs."""
    if len({c.get("repeat", 0) for c in cells}) < 2:
        return []
    lines = [
        "",
        "| consumer | offered ev/s | runs | events per CPU-s, median (range) | vs C, median "
        "(range) | lost |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    keys = dict.fromkeys((c["consumer"], c["offered_rate"]) for c in cells)
    for name, rate in sorted(keys, key=lambda k: (k[1], list(keys).index(k))):
        runs = [c for c in cells if (c["consumer"], c["offered_rate"]) == (name, rate)]
        eps = [c["events_per_cpu_second"] or 0.0 for c in runs]
        ratio = [c["ratio_to_c"] for c in runs if "ratio_to_c" in c]
        vs_c = (
            f"{statistics.median(ratio):.0%} ({min(ratio):.0%}-{max(ratio):.0%})" if ratio else ""
        )
        lines.append(
            f"| {name} | {rate:,} | {len(runs)} | {statistics.median(eps) / 1e6:.1f}M "
            f"({min(eps) / 1e6:.1f}M-{max(eps) / 1e6:.1f}M) | {vs_c} | "
            f"{sum(c['lost'] for c in runs):,} |"
        )
    return lines


def machine() -> dict[str, object]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.machine(),
    )  # fmt: skip
    return {
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def markdown(report: dict[str, object]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, Linux {m['kernel']}, Python {m['python']}; "  # type: ignore[index]
        f"{report['duration']} s per cell (at least {MIN_EVENTS:,} events), "
        f"{PER_TRIGGER} events per trigger, 56-byte events"
        + ("; a busy loop on every CPU." if report.get("busy") else "."),
        "",
    ]
    if report["cells"]:
        lines += [
            "| consumer | offered ev/s | achieved ev/s | received | lost | consumer CPU s "
            "| events per CPU-s | vs C |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
    for c in report["cells"]:  # type: ignore[attr-defined]
        eps = c["events_per_cpu_second"]
        ratio = f"{c['ratio_to_c']:.0%}" if "ratio_to_c" in c else ""
        lines.append(
            f"| {c['consumer']} | {c['offered_rate']:,} | {c['achieved_rate']:,.0f} | "
            f"{c['received']:,} | {c['lost']:,} | "
            f"{c['cpu_seconds']:.3f} | {eps:,.0f} | {ratio} |"
        )
    lines += medians(report["cells"])  # type: ignore[arg-type]
    s: Any = report.get("startup")
    if s:
        lines += [
            "",
            f"`igrun trace exec --host`: launch to attached {s['attach_ms_median']:.0f} ms median "
            f"({s['attach_ms_max']:.0f} ms max) over {s['runs']} runs; resident memory while "
            f"tracing {s['rss_mb_max']:.0f} MB (peak {s['hwm_mb_max']:.0f} MB, while loading).",
        ]
    st: Any = report.get("exec_storm")
    if st:
        ig, snoop = st["igrun"], st["execsnoop"]
        lines += [
            "",
            f"Exec storm, {st['count']:,} execs from {st['workers']} processes "
            f"({st['untraced_rate']:,.0f} execs/s untraced):",
            "",
            "| tracer | seen | lost | execs/s while tracing |",
            "|---|---:|---:|---:|",
            f"| igrun trace exec (default buffer) | {ig['seen']:,} | {ig['lost_stderr']} | "
            f"{ig['storm_rate']:,.0f} |",
        ]
        if isinstance(snoop, dict):
            lines.append(
                f"| libbpf-tools execsnoop | {snoop['seen']:,} | {snoop['lost_stderr']} | "
                f"{snoop['storm_rate']:,.0f} |"
            )
    ct: Any = report.get("contention")
    if ct:
        lines += ["", *contention_markdown(ct)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per cell")
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument(
        "--only", default="", help="consumers whose name contains this (several: separated by |)"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the matrix this many times, one after another"
    )
    parser.add_argument("--no-exec", action="store_true", help="skip startup and exec storm")
    parser.add_argument(
        "--ring-bytes",
        type=int,
        default=0,
        help="the ring buffer's size for every ring consumer, C and igrun (default 16 MiB); "
        "gadgets default to 256 KiB",
    )
    parser.add_argument(
        "--busy",
        action="store_true",
        help="a busy loop on every CPU at normal priority during the cells: the generator and "
        "the consumers compete with them for their CPUs",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--contention",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="instead of the throughput matrix: trace open/exec against opensnoop/execsnoop "
        "with every CPU busy, ROUNDS times (see contention.py)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: needs root (it loads BPF programs)")
    global RING_BYTES
    RING_BYTES = args.ring_bytes
    paths = build()
    cells = []
    rates = [] if args.contention else [int(r) for r in args.rates.split(",")]
    wanted = [w for w in args.only.split("|") if w]
    with cpu_hogs() if args.busy and rates else contextlib.nullcontext():
        for repeat in range(args.repeat):
            for rate in rates:
                for consumer in CONSUMERS:
                    if wanted and not any(w in consumer.name for w in wanted):
                        continue
                    # Long enough for 100k events: CPU time is counted in ticks, and a low
                    # rate's few milliseconds need many of them to be measured well.
                    duration = max(args.duration, MIN_EVENTS / rate)
                    cell = run_cell(consumer, paths[consumer.variant], rate, duration)
                    cell["repeat"] = repeat
                    print(json.dumps(cell), flush=True)
                    cells.append(cell)
    ratios(cells)
    report: dict[str, object] = {
        "machine": machine(),
        "busy": args.busy,
        "ring_bytes": args.ring_bytes or None,
        "duration": args.duration,
        "per_trigger": PER_TRIGGER,
        "cells": cells,
    }
    if args.contention:
        report["contention"] = contention(args.contention)
    elif not args.no_exec:
        report["startup"] = startup()
        report["exec_storm"] = exec_storm()
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    (args.out / f"{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (args.out / f"{stamp}.md").write_text(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
