"""The runtime's lifecycle with a real BPF gadget: losses reported, intervals, cleanup on
every failure."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from igrun.core import Category, Field, GadgetContext, Kind, Schema
from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.pins import PinDir
from igrun.core.operator import Operator
from igrun.core.plugins import PluginRegistry
from igrun.core.run.local import Run, Runtime
from igrun.core.tracer import BpfTracer
from igrun.operators.output import OutputOperator

pytestmark = pytest.mark.bpf

SOURCE = Path(__file__).parent / "bpf" / "testprog.bpf.c"


@pytest.fixture(scope="module")
def test_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rt")
    return compile_bpf(SOURCE, out / "testprog.bpf.o", build_dir=out / "build")


class Burst(BpfTracer):
    """1000 events per getppid() of this process, into a ring buffer of 4 KiB."""

    name = "burst"
    category = Category.OTHER
    bpf_object = ""
    ring_buffer_size = 4096
    path: ClassVar[Path]
    schema = Schema([Field("seq", Kind.UINT), Field("pid", Kind.UINT)], struct="event")

    def object_path(self) -> Any:
        return self.path

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {"target_pid": os.getpid(), "burst": 1000}


class Trigger:
    def __init__(self, action: Any) -> None:
        self.action = action
        self.finished: list[BaseException | None] = []

    def igrun_run_started(self, ctx: GadgetContext) -> None:
        self.action(ctx)

    def igrun_run_finished(self, ctx: GadgetContext, error: BaseException | None) -> None:
        self.finished.append(error)


@pytest.fixture
def run_burst(test_object: Path) -> Iterator[Any]:
    Burst.path = test_object
    ops = PluginRegistry().operators()

    def run(values: dict[str, str], action: Any) -> tuple[str, GadgetContext]:
        runtime = Runtime(ops)
        params = runtime.params_for(Burst, values)
        stream = io.StringIO()

        def capture(ctx: GadgetContext, operators: list[Operator]) -> None:
            for op in operators:
                if isinstance(op, OutputOperator):
                    op.stream = stream

        ctx = runtime.run(Burst, *params, hooks=Trigger(action), prepare=capture)
        return stream.getvalue(), ctx

    yield run


def test_lost_events_reported_in_json(run_burst: Any) -> None:
    def burst_then_stop(ctx: GadgetContext) -> None:
        os.getppid()
        ctx.cancel()

    values = {"operator.output.output": "json", "runtime.timeout": "5s"}
    text, ctx = run_burst(values, burst_then_stop)
    lines = [json.loads(line) for line in text.splitlines()]
    events = [line for line in lines if "seq" in line]
    warns = [line for line in lines if line.get("type") == "warn"]
    lost = ctx.resources.require(Run, by="test").lost_total
    assert 0 < len(events) < 1000
    assert len(events) + lost == 1000
    assert warns == [{"type": "warn", "message": f"lost {lost} events"}]
    assert [e["seq"] for e in events] == list(range(len(events)))


def test_interval_sorts_and_limits_each_window(run_burst: Any) -> None:
    def burst(ctx: GadgetContext) -> None:
        os.getppid()

    text, _ = run_burst(
        {
            "runtime.interval": "200ms",
            "runtime.timeout": "500ms",
            "operator.sort.sort": "-seq",
            "operator.limit.max-rows": "3",
            "operator.output.output": "columns=seq",
        },
        burst,
    )
    windows = [w.split("\n") for w in text.strip("\n").split("\n\n")]
    assert all(w[0].startswith("--- ") and w[0].endswith("Z ---") for w in windows)
    assert windows[0][1].strip() == "SEQ"
    first = [int(v) for v in windows[0][2:]]
    assert len(first) == 3 and first == sorted(first, reverse=True)


def test_failures_stop_everything_started(run_burst: Any, test_object: Path) -> None:
    """A failing operator after the BPF object loaded: the object is closed and the pin
    folder removed, and the finished hook sees the error."""

    class Exploding(Operator):
        name = "exploding"
        priority = 50

        def pre_run(self, schema: Schema) -> None:
            raise RuntimeError("boom")

    Burst.path = test_object
    runtime = Runtime([Exploding])
    trigger = Trigger(lambda ctx: None)
    with pytest.raises(RuntimeError, match="boom"):
        runtime.run(Burst, *runtime.params_for(Burst), hooks=trigger)
    assert [type(e) for e in trigger.finished] == [RuntimeError]
    assert not list(Path("/sys/fs/bpf/gadget").glob(f"{os.getpid()}-*"))


def test_stale_pin_folders_are_removed(tmp_path: Path) -> None:
    root = Path(f"/sys/fs/bpf/igrun-test-root-{os.getpid()}")
    try:
        root.mkdir(0o700)
        (root / "999999999-1").mkdir()  # no such process
        (root / f"{os.getpid()}-1").mkdir()  # our pid, another start time: also stale
        (root / "not-ours").mkdir()  # whatever its name, no run holds it: stale
        pins = PinDir.create(root)
        assert sorted(p.name for p in root.iterdir()) == [pins.path.name]
        assert oct(pins.path.stat().st_mode & 0o777) == "0o700"
        pins.cleanup()
        assert not pins.path.exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
