"""The cost of one interval of a top gadget with 100,000 distinct keys.

A BPF program (``topkeys.bpf.c``) adds ``--keys`` distinct keys to a hash map each time a trigger
process calls ``getppid()``, the shape of ``top file``'s rows. The gadget is a plain
:class:`~igrun.core.BpfTop`, run by the local runtime with igrun's sort (its default, by
bytes written), limit (``ig``'s 50 rows) and JSON output (to ``/dev/null``). Before each
interval's report the trigger fills the map (in its own process: the kernel's time to add the
keys is not igrun's); then the report is timed: the drain (batched lookup-and-delete in C),
the numpy rows, the sort, the limit and the output of the interval. Figures per interval:
wall time, igrun's CPU time (its thread's), the syscalls of the drain, and the rows drained.

Run as root: ``nox -s topbench`` or ``python bench/topbench.py --intervals 10 --keys 100000``
prints a Markdown table and writes ``bench/results/top-<time>.json`` (``--out FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from igrun.core import BpfTop, Category, Column, Field, GadgetContext, Kind, Schema
from igrun.core.bpf.build import compile_bpf
from igrun.core.run.local import Run, Runtime
from igrun.operators.limit import LimitOperator
from igrun.operators.output import OutputOperator
from igrun.operators.sort import SortOperator

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
TRIGGER = (
    "import os, sys\n"
    "while sys.stdin.buffer.read(1):\n"
    "    os.getppid()\n"
    "    sys.stdout.buffer.write(b'.'); sys.stdout.flush()\n"
)
"""Calls getppid() (the BPF program then adds the keys) once per byte read, and says so."""


class TopKeys(BpfTop):
    name = "keys"
    category = Category.TOP
    description = "the interval benchmark's load"
    key_struct = "topkey"
    value_struct = "topvalue"
    schema = Schema(
        [
            Field("pid", Kind.UINT, column=Column(align="right")),
            Field("comm", Kind.STR),
            Field("inode", Kind.UINT, column=Column(align="right")),
            Field("name", Kind.STR),
            Field("reads", Kind.UINT),
            Field("writes", Kind.UINT),
            Field("rbytes", Kind.UINT),
            Field("wbytes", Kind.UINT),
        ]
    )
    compiled: ClassVar[Path]
    trigger: ClassVar[subprocess.Popen[bytes]]
    keys: ClassVar[int]
    figures: ClassVar[list[dict[str, float]]] = []

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return ["-wbytes", "-rbytes", "-writes", "-reads"]

    def object_path(self) -> Any:
        return self.compiled

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {"trigger_tgid": self.trigger.pid, "keys_per_call": self.keys}

    def report(self, ctx: GadgetContext) -> None:
        assert self.trigger.stdin is not None and self.trigger.stdout is not None
        self.trigger.stdin.write(b".")
        self.trigger.stdin.flush()
        self.trigger.stdout.read(1)  # the keys are in the map
        wall, cpu = time.perf_counter(), time.thread_time()
        rows_before = self._rows_seen
        super().report(ctx)
        self.figures.append(
            {
                "wall_ms": (time.perf_counter() - wall) * 1000,
                "cpu_ms": (time.thread_time() - cpu) * 1000,
                "syscalls": self.syscalls,
                "rows": self._rows_seen - rows_before,
            }
        )

    _rows_seen = 0

    def read(self) -> Any:
        rows = super().read()
        self._rows_seen += len(rows)
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=10)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("topbench: needs root (it loads BPF)", file=sys.stderr)
        return 1
    build = BENCH_DIR / "build" / "top"
    build.mkdir(parents=True, exist_ok=True)
    TopKeys.compiled = compile_bpf(
        BENCH_DIR / "topkeys.bpf.c", build / "topkeys.bpf.o", build_dir=build / "b"
    )
    TopKeys.keys = args.keys
    TopKeys.trigger = subprocess.Popen(
        [sys.executable, "-c", TRIGGER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    seconds = float(args.interval.removesuffix("s"))
    runtime = Runtime([SortOperator, LimitOperator, OutputOperator])
    values = {
        "runtime.interval": args.interval,
        "runtime.timeout": f"{seconds * (args.intervals + 0.5)}s",
        "operator.output.output": "json",
    }
    devnull = open(os.devnull, "w")  # noqa: SIM115 (open for the whole run)

    def to_devnull(ctx: GadgetContext, operators: list[Any]) -> None:
        for op in operators:
            if isinstance(op, OutputOperator):
                op.stream = devnull

    try:
        ctx = runtime.run(TopKeys, *runtime.params_for(TopKeys, values), prepare=to_devnull)
    finally:
        TopKeys.trigger.kill()
        TopKeys.trigger.wait()
    figures = TopKeys.figures
    run = ctx.resources.get(Run)
    summary = {
        name: {
            "median": statistics.median(f[name] for f in figures),
            "min": min(f[name] for f in figures),
            "max": max(f[name] for f in figures),
        }
        for name in ("wall_ms", "cpu_ms", "syscalls", "rows")
    }
    result = {
        "keys_per_interval": args.keys,
        "interval": args.interval,
        "intervals": figures,
        "summary": summary,
        "lost": run.lost_total if run is not None else None,
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"top-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {args.keys:,} keys per interval | median | min | max |")
    print("|---|---|---|---|")
    for name, label in (
        ("wall_ms", "wall time per interval (ms)"),
        ("cpu_ms", "igrun CPU per interval (ms)"),
        ("syscalls", "syscalls to drain the map"),
        ("rows", "rows drained"),
    ):
        s = summary[name]
        print(f"| {label} | {s['median']:.1f} | {s['min']:.1f} | {s['max']:.1f} |")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
