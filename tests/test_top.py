"""Interval gadgets end to end, on the example ``top signal`` (examples/igrun-gadget-topsignal):
the kernel counts in a hash map, igrun drains it once per interval, and each interval is one
window: counted exactly, sorted by the gadget's default, limited, one JSON array per interval,
redrawn in place on a terminal and never in a pipe, and keys that did not fit reported lost."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TextIO

import pytest

from igrun.core import Batch, Gadget, GadgetContext, Operator
from igrun.core.bpf.build import compile_bpf
from igrun.core.run.local import Run, Runtime
from igrun.operators.limit import LimitOperator
from igrun.operators.output import CLEAR_SCREEN, OutputOperator
from igrun.operators.sort import SortOperator

pytestmark = pytest.mark.bpf

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "igrun-gadget-topsignal"
SOURCE = EXAMPLE / "igrun_gadget_topsignal" / "topsignal.bpf.c"
sys.path.insert(0, str(EXAMPLE))

from igrun_gadget_topsignal import TopSignal  # noqa: E402 (found through the line above)

WAITER = "import signal, sys; signal.pthread_sigmask(signal.SIG_BLOCK, {10, 12}); sys.stdin.read()"
"""A child that blocks SIGUSR1 and SIGUSR2 (each one sent is still generated) until stdin ends."""


class CompiledTopSignal(TopSignal):
    compiled: ClassVar[Path]
    last: ClassVar[CompiledTopSignal | None] = None

    def __init__(self) -> None:
        super().__init__()
        CompiledTopSignal.last = self

    def object_path(self) -> Any:
        return self.compiled


@pytest.fixture(scope="module", autouse=True)
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("topsignal")
    CompiledTopSignal.compiled = compile_bpf(SOURCE, out / "topsignal.bpf.o", build_dir=out / "b")
    return CompiledTopSignal.compiled


@pytest.fixture
def waiters() -> Iterator[Callable[[], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        child = subprocess.Popen([sys.executable, "-c", WAITER], stdin=subprocess.PIPE, text=True)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()
        child.wait()


class Windows(Operator):
    """Keeps each window the chain releases: the rows that reach it between two ends."""

    name = "windows"
    priority = 9000

    def __init__(self, ctx: GadgetContext, params: Any) -> None:
        super().__init__(ctx, params)
        self.windows: list[list[dict[str, Any]]] = []
        self._rows: list[dict[str, Any]] = []

    def process(self, batch: Batch) -> Batch:
        self._rows.extend(batch.to_dicts())
        return batch

    def flush(self) -> Batch | None:
        self.windows.append(self._rows)
        self._rows = []
        return None


def run_top(
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    stream: TextIO | None = None,
    gadget: type[Gadget] = CompiledTopSignal,
) -> tuple[list[list[dict[str, Any]]], GadgetContext]:
    """Run the gadget with sort, limit and a window capture (and the JSON or columns output
    to ``stream``); ``action`` runs once every program is attached."""
    operators: list[type[Operator]] = [SortOperator, LimitOperator, Windows]
    if stream is not None:
        operators.append(OutputOperator)
    runtime = Runtime(operators)
    params = runtime.params_for(gadget, {"runtime.timeout": "10s", **(values or {})})
    kept: list[Windows] = []
    failed: list[BaseException] = []

    def prepare(ctx: GadgetContext, ops: list[Operator]) -> None:
        kept.extend(op for op in ops if isinstance(op, Windows))
        for op in ops:
            if isinstance(op, OutputOperator) and stream is not None:
                op.stream = stream

    def ready(ctx: GadgetContext, instance: Gadget) -> None:
        def work() -> None:
            try:
                action()
            except BaseException as exc:
                failed.append(exc)
                ctx.cancel()

        threading.Thread(target=work, daemon=True).start()

    ctx = runtime.run(gadget, *params, prepare=prepare, on_ready=ready)
    if failed:
        raise failed[0]
    return kept[0].windows, ctx


def rows_for(windows: list[list[dict[str, Any]]], **match: Any) -> list[tuple[int, dict[str, Any]]]:
    return [
        (i, row)
        for i, window in enumerate(windows)
        for row in window
        if all(row.get(k) == v for k, v in match.items())
    ]


def test_each_interval_counts_exactly_what_was_sent_and_starts_again_from_zero(
    waiters: Callable[[], subprocess.Popen[str]],
) -> None:
    child = waiters()

    def send() -> None:
        for _ in range(7):
            os.kill(child.pid, signal.SIGUSR1)
        for _ in range(3):
            os.kill(child.pid, signal.SIGUSR2)
        time.sleep(1.6)  # the next interval: nothing sent
        os.kill(child.pid, signal.SIGUSR2)

    windows, _ = run_top(send, {"runtime.timeout": "3.5s", "runtime.interval": "1s"})
    assert len(windows) == 3  # a partial last interval is not reported
    usr1 = rows_for(windows, pid=os.getpid(), tpid=child.pid, signal="SIGUSR1")
    usr2 = rows_for(windows, pid=os.getpid(), tpid=child.pid, signal="SIGUSR2")
    assert [row["count"] for _, row in usr1] == [7]
    assert [row["count"] for _, row in usr2] == [3, 1]
    assert usr1[0][0] == usr2[0][0] < usr2[1][0]  # one interval, then a later one
    assert usr1[0][1]["comm"] == Path(sys.executable).name[:15]


def test_rows_come_sorted_by_count_and_limited_per_interval(
    waiters: Callable[[], subprocess.Popen[str]],
) -> None:
    children = [waiters() for _ in range(3)]
    counts = {children[0].pid: 2, children[1].pid: 9, children[2].pid: 5}

    def send() -> None:
        for pid, n in counts.items():
            for _ in range(n):
                os.kill(pid, signal.SIGUSR1)

    values = {"runtime.timeout": "2.5s", "runtime.interval": "2s"}
    windows, _ = run_top(send, {**values, "operator.limit.max-rows": "2", "signal": "10"})
    assert len(windows) == 1
    assert [(r["tpid"], r["count"]) for r in windows[0]] == [
        (children[1].pid, 9),
        (children[2].pid, 5),
    ]


def test_a_top_gadget_has_igs_defaults() -> None:
    runtime = Runtime([SortOperator, LimitOperator])
    _, runtime_params, operator_params = runtime.params_for(CompiledTopSignal)
    assert runtime_params.get("interval") == 1.0
    assert operator_params["limit"].get("max-rows") == 50
    spec = SortOperator.spec_for(_Plan(runtime_params), operator_params["sort"])
    assert spec == "-count,pid,tpid"


class _Plan:
    gadget = CompiledTopSignal

    def __init__(self, runtime_params: Any) -> None:
        self.runtime_params = runtime_params


def test_json_is_one_array_per_interval_even_when_empty(
    waiters: Callable[[], subprocess.Popen[str]],
) -> None:
    child = waiters()
    out = io.StringIO()

    def send() -> None:
        os.kill(child.pid, signal.SIGUSR1)

    values = {"runtime.timeout": "2.6s", "runtime.interval": "0.8s", "signal": "10"}
    run_top(send, {**values, "operator.output.output": "json"}, stream=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    arrays = [json.loads(line) for line in lines]
    assert all(isinstance(a, list) for a in arrays)
    mine = [r for a in arrays for r in a if r.get("tpid") == child.pid]
    assert [(r["pid"], r["signal"], r["count"]) for r in mine] == [(os.getpid(), "SIGUSR1", 1)]
    assert CLEAR_SCREEN not in out.getvalue()


def test_on_a_terminal_each_interval_redraws_the_screen() -> None:
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w", closefd=False)
    got = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    values = {"runtime.timeout": "2.5s", "runtime.interval": "0.7s"}
    values["operator.output.output"] = "columns"
    run_top(lambda: None, values, stream=stream)
    stream.flush()
    os.close(slave)
    reader.join(5)
    os.close(master)
    text = got.decode()
    assert text.count(CLEAR_SCREEN) == 3
    assert text.count("COUNT") == 3  # a header per interval


def test_in_a_pipe_intervals_follow_each_other_as_blocks() -> None:
    out = io.StringIO()
    values = {"runtime.timeout": "1.8s", "runtime.interval": "0.5s"}
    values["operator.output.output"] = "columns"
    run_top(lambda: None, values, stream=out)
    text = out.getvalue()
    assert CLEAR_SCREEN not in text
    assert text.count("COUNT") == 3 and text.count("--- ") == 3


class SmallTopSignal(CompiledTopSignal):
    stats_entries = 4


def test_keys_that_do_not_fit_the_map_are_reported_lost(
    waiters: Callable[[], subprocess.Popen[str]],
) -> None:
    children = [waiters() for _ in range(10)]

    def send() -> None:
        for child in children:
            os.kill(child.pid, signal.SIGUSR1)

    values = {"runtime.timeout": "1.5s", "runtime.interval": "1s", "signal": "10"}
    windows, ctx = run_top(send, values, gadget=SmallTopSignal)
    run = ctx.resources.get(Run)
    assert run is not None
    seen = len(rows_for(windows, pid=os.getpid(), signal="SIGUSR1"))
    assert seen == 4
    assert run.lost_total >= 6  # ours, and any other signal sent meanwhile that found no room


def test_one_interval_is_read_in_a_fixed_number_of_syscalls(
    waiters: Callable[[], subprocess.Popen[str]],
) -> None:
    children = [waiters() for _ in range(40)]

    def send() -> None:
        for child in children:
            os.kill(child.pid, signal.SIGUSR1)

    values = {"runtime.timeout": "1.5s", "runtime.interval": "1s", "signal": "10"}
    windows, _ = run_top(send, values)
    assert len(rows_for(windows, pid=os.getpid(), signal="SIGUSR1")) == 40
    gadget = CompiledTopSignal.last
    assert gadget is not None
    assert gadget.syscalls <= 2  # one batch, and the call that says the map is empty


def test_a_gauge_shows_the_top_rows_of_the_last_interval(
    waiters: Callable[[], subprocess.Popen[str]], tmp_path: Path
) -> None:
    from test_prometheus import free_port, scrape

    from igrun.operators.prometheus import PrometheusOperator

    children = [waiters() for _ in range(3)]
    counts = {children[0].pid: 2, children[1].pid: 9, children[2].pid: 5}
    config = tmp_path / "metrics.toml"
    config.write_text(
        '[[gauges]]\nname = "igrun_test_signals"\nfield = "count"\n'
        'labels = ["tpid", "signal"]\nfilter = ["signal:SIGUSR1"]\ntop = 2\n'
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    seen: list[dict[str, float]] = []

    def gauge() -> dict[str, float]:
        return {
            dict(key)["tpid"]: value
            for (name, key), value in scrape(url).items()
            if name == "igrun_test_signals" and dict(key)["tpid"] in map(str, counts)
        }

    def send() -> None:
        for pid, n in counts.items():
            for _ in range(n):
                os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not seen or seen[-1] == {}:
            seen.append(gauge())
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        while seen[-1] != {}:  # the next interval had none of them
            seen.append(gauge())
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)

    values = {
        "runtime.timeout": "10s",
        "runtime.interval": "0.5s",
        "signal": "10",
        "operator.prometheus.metrics-config": str(config),
        "operator.prometheus.metrics-listen-address": f"127.0.0.1:{port}",
    }
    operators: list[type[Operator]] = [PrometheusOperator, SortOperator, LimitOperator, Windows]
    runtime = Runtime(operators)
    params = runtime.params_for(CompiledTopSignal, values)

    def ready(ctx: GadgetContext, instance: Gadget) -> None:
        def work() -> None:
            try:
                send()
            finally:
                ctx.cancel()

        threading.Thread(target=work, daemon=True).start()

    runtime.run(CompiledTopSignal, *params, on_ready=ready)
    assert seen[-1] == {}, seen  # the gauge followed the intervals to an empty one
    shown = [s for s in seen if s]
    assert shown and all(
        s == {str(children[1].pid): 9.0, str(children[2].pid): 5.0} for s in shown
    ), seen
