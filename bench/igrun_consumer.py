"""igrun's side of the throughput benchmark: the burst gadget, run through igrun's launcher.

    python bench/igrun_consumer.py OBJECT --pid P --per-trigger N [--cpu C] [--discard]
        [-- igrun flags, e.g. -o json]

The burst gadget and a counting operator are registered in this process only (``igrun list``
never shows them), then ``igrun other burst`` runs exactly as a user would run a gadget: the
same launcher, runtime, reader and operator chain. Data goes to stdout (the benchmark points it
at a file or /dev/null); ``bench-ready`` and one ``bench-result {json}`` line go to stderr.
``--discard`` makes the counter the end of the chain: the null sink.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
from pathlib import Path
from typing import ClassVar

from igrun.core import Category, Field, GadgetContext, Kind, ParamDesc, Schema, TypeHint, fields
from igrun.core.cli.main import main
from igrun.core.events.schema import Batch
from igrun.core.operator import PRIORITY_OUTPUT, Operator
from igrun.core.params import Params
from igrun.core.plugins import registry
from igrun.core.run.local import Run
from igrun.core.tracer import BpfTracer

RING_BYTES = 16 * 1024 * 1024  # as the C reference consumer's default
PERF_PAGES = 1024  # per CPU, as run.py gives the C reference consumer


class Burst(BpfTracer):
    """Synthetic events (``bench/burst.h``): ``per-trigger`` of them at each getppid() of
    ``pid``, numbered by one sequence so that every missing event is seen."""

    name = "burst"
    category = Category.OTHER
    description = "Synthetic events for the throughput benchmark"
    bpf_object = "burst_ring.bpf.o"
    ring_buffer_size = RING_BYTES
    perf_buffer_pages = PERF_PAGES
    object_file: ClassVar[Path]
    params = (
        ParamDesc("pid", type_hint=TypeHint.UINT, mandatory=True, description="load generator"),
        ParamDesc("per-trigger", type_hint=TypeHint.UINT, default="1", description="events"),
    )
    schema = Schema(
        [
            Field("seq", Kind.UINT, "sequence number"),
            fields.timestamp(),
            fields.mntns(),
            Field("pid", Kind.UINT),
            Field("tid", Kind.UINT),
            Field("cpu", Kind.UINT),
            Field("index", Kind.UINT, "position within its trigger"),
            Field("comm", Kind.STR),
        ],
        struct="burst_event",
    )

    def object_path(self) -> Path:
        return self.object_file

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {
            "target_tgid": ctx.gadget_params.get("pid"),
            "events_per_trigger": ctx.gadget_params.get("per-trigger"),
        }


class Counter(Operator):
    """Counts events and checks their sequence numbers, just before the output."""

    name = "bench-counter"
    priority = PRIORITY_OUTPUT - 1
    discard: ClassVar[bool] = False

    def __init__(self, ctx: GadgetContext, params: Params) -> None:
        super().__init__(ctx, params)
        self.received = 0
        self.max_seq = -1
        self.batches = 0
        self.cpu_at_start: resource.struct_rusage | None = None
        self.cpu_at_drain: resource.struct_rusage | None = None

    @classmethod
    def can_operate_on(cls, gadget: type) -> bool:
        return gadget is Burst

    def pre_run(self, schema: Schema) -> None:
        # Everything is attached: the load may start.
        self.cpu_at_start = resource.getrusage(resource.RUSAGE_SELF)
        sys.stderr.write("bench-ready\n")
        sys.stderr.flush()

    def process(self, batch: Batch) -> Batch:
        self.received += len(batch)
        self.batches += 1
        # One generator thread on one CPU: numbers arrive in order, the last is the largest
        # (a gap anywhere still shows, as max_seq + 1 - received).
        self.max_seq = max(self.max_seq, int(batch.member("seq")[-1]))
        return batch.head(0) if self.discard else batch

    def flush(self) -> None:
        # The end of the run's final drain: what follows (unloading) is not draining, and the
        # C reference stops its clock at the same point.
        self.cpu_at_drain = resource.getrusage(resource.RUSAGE_SELF)

    def post_run(self) -> None:
        if self.cpu_at_start is None:
            return
        end = self.cpu_at_drain or resource.getrusage(resource.RUSAGE_SELF)
        cpu = (end.ru_utime - self.cpu_at_start.ru_utime) + (
            end.ru_stime - self.cpu_at_start.ru_stime
        )
        run = self.ctx.resources.get(Run)
        result = {
            "received": self.received,
            "max_seq": self.max_seq,
            "gaps": self.max_seq + 1 - self.received if self.received else 0,
            "dropped": run.lost_total if run is not None else 0,
            "batches": self.batches,
            "cpu_seconds": cpu,
            "max_rss_mb": end.ru_maxrss / 1024,
        }
        sys.stderr.write("bench-result " + json.dumps(result) + "\n")
        sys.stderr.flush()


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("object", type=Path)
    parser.add_argument("--pid", required=True)
    parser.add_argument("--per-trigger", default="1")
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--discard", action="store_true")
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    igrun_flags = argv[split + 1 :]
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    Burst.object_file = args.object.resolve()
    Counter.discard = args.discard
    reg = registry()
    reg.operators()  # the installed ones first, then ours
    reg.add_gadget(Burst, "igrun-bench")
    reg.add_operator(Counter, "igrun-bench")
    return main(
        ["other", "burst", "--pid", args.pid, "--per-trigger", args.per_trigger, *igrun_flags]
    )


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
