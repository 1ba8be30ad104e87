"""``top ebpf`` on the real kernel: a socket filter this test loads and runs exactly K times
with ``BPF_PROG_TEST_RUN`` shows K runs in the interval they happened in and none in the next,
held by this test's process; the kernel's stats are as they were once the gadget exits; the
JSON is one array per interval and the columns are ``ig``'s."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from igrun.core import plugins
from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.objects import BpfObject, map_memory, program_stat, program_stats
from igrun.core.cli.flags import gadget_parser
from igrun.core.output.columns import bytes_text
from igrun.operators.output import CLEAR_SCREEN
from igrun.plugins.top_ebpf import (
    PROGRAM_TYPES,
    TopEbpf,
    go_duration,
    holder_columns,
    program_type_name,
)
from igrun.testing import IGRUN

if TYPE_CHECKING:
    from igrun.testing import CliRun, IgrunCli

SOURCE = Path(__file__).parent / "bpf" / "topebpf_prog.bpf.c"
STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
PACKET = bytes(64)
"""What the socket filter is test-run on: an Ethernet frame's worth of zeros."""
IG_HEADER = [
    "PROGID",
    "TYPE",
    "NAME",
    "PID",
    "COMM",
    "RUNTIME",
    "RUNCOUNT",
    "MAPMEMORY",
    "MAPCOUNT",
]


# ---- without BPF: ig's formats ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1000, "1µs"),
        (1500, "1.5µs"),
        (54_090, "54.09µs"),
        (1_265_693, "1.265693ms"),
        (999_999_999, "999.999999ms"),
        (1_000_000_000, "1s"),
        (1_500_000_000, "1.5s"),
        (60_000_000_000, "1m0s"),
        (3_600_000_000_000, "1h0m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-1500, "-1.5µs"),
    ],
)
def test_run_time_is_written_as_gos_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text  # Go: fmt.Sprint(time.Duration(ns))


def test_program_types_are_cilium_ebpfs_names() -> None:
    assert len(PROGRAM_TYPES) == 32  # UnspecifiedProgram (0) to Syscall (31)
    assert [program_type_name(n) for n in (1, 5, 26, 31)] == [
        "SocketFilter",
        "TracePoint",
        "Tracing",
        "Syscall",
    ]
    assert program_type_name(32) == "ProgramType(32)"  # BPF_PROG_TYPE_NETFILTER: unknown to it


def test_ig_defaults_and_columns() -> None:
    assert TopEbpf.full_name() == "top ebpf"
    assert TopEbpf.type.is_periodic
    assert TopEbpf.sort_by_default() == ["-runtime", "-runcount"]
    assert dict(TopEbpf.param_defaults) == {
        "interval": "1s",
        "max-rows": "50",
        "sort": "-runtime,-runcount",
    }
    shown = [f.name.upper() for f in TopEbpf.schema.default_columns()]
    assert shown == IG_HEADER


def test_flags_are_igs() -> None:
    """``ig top ebpf``'s flags: no gadget params; --interval (1 s), -m/--max-rows (50),
    --sort (-runtime,-runcount), with -o, -F and -t as every gadget has them."""
    registry = plugins.PluginRegistry()
    cls = registry.gadget("top ebpf")
    assert cls is TopEbpf and not cls.params
    parser, routes = gadget_parser(cls, registry)
    flags = {
        opt: (routes[action.dest][1], action.default)
        for opt, action in parser._option_string_actions.items()
        if action.dest in routes
    }
    assert flags["--interval"][0] == "interval"
    assert flags["-m"][0] == flags["--max-rows"][0] == "max-rows"
    assert {flags[o][0] for o in ("-o", "-F", "-t", "--sort")} == {
        "output",
        "filter",
        "timeout",
        "sort",
    }
    text = parser.format_help()
    for shown in ("[default: 1s]", "[default: 50]", "[default: -runtime,-runcount]"):
        assert shown in " ".join(text.split()), shown


def test_holders_each_process_once_per_program() -> None:
    entry = np.dtype([("id", "<u4"), ("pid", "<u4"), ("comm", "S16")])
    holders = np.array(
        [(7, 30, b"b"), (5, 20, b"a"), (7, 10, b"c"), (7, 30, b"b"), (9, 1, b"gone")],
        dtype=entry,
    )
    cols = holder_columns(np.array([5, 6, 7], dtype=np.uint32), holders)
    assert cols["pid"].tolist() == ["20", "", "10,30"]
    assert cols["comm"].tolist() == ["a", "", "c,b"]
    assert cols["processes"].tolist() == [
        [{"pid": 20, "comm": "a"}],
        [],
        [{"pid": 10, "comm": "c"}, {"pid": 30, "comm": "b"}],
    ]


# ---- on the kernel -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("topebpf")
    return compile_bpf(SOURCE, out / "topebpf_prog.bpf.o", build_dir=out / "build")


class Probe:
    """The test's socket filter, loaded by this process (so held by this test's pid)."""

    def __init__(self, path: Path) -> None:
        self.obj = BpfObject.open(path)
        self.obj.load()
        self.program = self.obj.programs["topebpf_probe"]
        self.id = int(program_stat(self.program.fd)["id"])
        self.map_memory = memlock(self.obj.map("topebpf_runs").fd)

    def run(self, times: int) -> None:
        retval, _ = self.program.test_run(PACKET, repeat=times)
        assert retval == 0

    def run_count(self) -> int:
        return int(program_stat(self.program.fd)["run_cnt"])


@pytest.fixture
def probe(compiled: Path) -> Iterator[Probe]:
    p = Probe(compiled)
    yield p
    p.obj.close()


@pytest.fixture
def stats_off() -> Iterator[None]:
    """The kernel's own stats switch off for the test (and put back as it was)."""
    before = STATS_SYSCTL.read_text().strip()
    STATS_SYSCTL.write_text("0")
    yield
    STATS_SYSCTL.write_text(before)


def memlock(fd: int) -> int:
    return int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("memlock:")[1].split()[0])


@pytest.mark.bpf
def test_map_memory_reads_again_only_maps_that_can_grow(probe: Probe) -> None:
    fixed, grows = probe.obj.map("topebpf_runs"), probe.obj.map("topebpf_grows")
    first = map_memory()
    at = {int(i): n for n, i in enumerate(first.ids)}
    assert first.memlock[at[fixed.id]] == memlock(fixed.fd) and not first.varies[at[fixed.id]]
    assert first.memlock[at[grows.id]] == memlock(grows.fd) and first.varies[at[grows.id]]
    empty = memlock(grows.fd)
    for key in range(500):
        grows.update(key.to_bytes(4, "little"), bytes(8))
    assert memlock(grows.fd) > empty  # the kernel counts its elements (Linux 6.4 and later)
    again = map_memory(first)
    at = {int(i): n for n, i in enumerate(again.ids)}
    assert again.memlock[at[grows.id]] == memlock(grows.fd)
    assert again.memlock[at[fixed.id]] == memlock(fixed.fd)
    # A map's size counts toward the programs that use it: the probe uses one map only.
    row = program_stat(probe.program.fd, again)
    assert (row["map_count"], row["map_memory"]) == (1, memlock(fixed.fd))
    # Room for one row at first: the C call says so and is asked again with more.
    every = program_stats(again, room=1)
    assert probe.id in every["id"].tolist() and list(every["id"]) == sorted(every["id"])


def next_interval(run: CliRun) -> list[dict[str, Any]]:
    assert run.stdout is not None
    line = run.stdout.readline()
    assert line.startswith("[") and line.endswith("]\n"), line
    rows: list[dict[str, Any]] = json.loads(line)
    return rows


def row_of(rows: list[dict[str, Any]], progid: int) -> dict[str, Any]:
    (row,) = [r for r in rows if r["progid"] == progid]
    return row


@pytest.mark.bpf
def test_runs_counted_in_their_interval_held_by_this_process(
    igrun_cli: IgrunCli, probe: Probe, stats_off: None
) -> None:
    k = 1234
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    run = igrun_cli.start("top", "ebpf", "-o", "json", "-m", "0", read_stdout=False)
    try:
        first = next_interval(run)  # the interval that was going on when it became ready
        probe.run(k)  # well inside the next one: an interval is a second, this takes < 1 ms
        busy = row_of(next_interval(run), probe.id)
        idle = row_of(next_interval(run), probe.id)
    finally:
        _out, err = run.stop()
    assert run.returncode == 0, err
    assert run.stdout is not None
    run.stdout.close()
    assert probe.id in {r["progid"] for r in first}

    expected = {
        "progid": probe.id,
        "type": "SocketFilter",
        "name": "topebpf_probe",
        "processes": [{"pid": os.getpid(), "comm": comm}],
        "mapCount": 1,
        "mapMemory": probe.map_memory,
        "runtime": {},
        "k8s": {"node": os.environ.get("NODE_NAME") or os.uname().nodename},
    }
    assert {key: busy[key] for key in expected} == expected
    assert busy["currentRunCount"] == k
    assert busy["cumulRunCount"] == k and busy["totalRunCount"] == k
    assert busy["currentRuntime"] > 0 and busy["totalRuntime"] == busy["currentRuntime"]
    assert busy["totalCpuUsage"] > 0 and busy["perCpuUsage"] > 0
    # The next interval: no run, so no current run count or time (0: omitted, as ig omits it).
    assert {key: idle[key] for key in expected} == expected
    assert "currentRunCount" not in idle and "currentRuntime" not in idle
    assert idle["cumulRunCount"] == k and idle["totalRunCount"] == k
    assert idle["cumulRuntime"] == busy["currentRuntime"]
    # "type" is the program's type: ig's stats carry no event type.
    assert all(r["type"] in PROGRAM_TYPES for r in first)
    run.assert_released()


@pytest.mark.bpf
def test_kernel_stats_off_again_after_the_gadget(
    igrun_cli: IgrunCli, probe: Probe, stats_off: None
) -> None:
    probe.run(3)
    assert probe.run_count() == 0  # stats off: the kernel does not count
    run = igrun_cli.start("top", "ebpf", "-o", "json")
    probe.run(5)
    assert probe.run_count() == 5  # on while the gadget runs
    _out, err = run.stop()
    assert run.returncode == 0, err
    assert STATS_SYSCTL.read_text().strip() == "0"
    probe.run(7)
    assert probe.run_count() == 5  # off again: the 7 runs after it are not counted
    run.assert_released()


@pytest.mark.bpf
def test_kernel_stats_left_on_when_they_were_on(
    igrun_cli: IgrunCli, probe: Probe, stats_off: None
) -> None:
    STATS_SYSCTL.write_text("1")
    run = igrun_cli.start("top", "ebpf", "-o", "json")
    _out, err = run.stop()
    assert run.returncode == 0, err
    assert STATS_SYSCTL.read_text().strip() == "1"
    probe.run(4)
    assert probe.run_count() == 4  # still counted: the gadget's end did not turn them off


@pytest.mark.bpf
def test_json_is_one_array_per_interval(igrun_cli: IgrunCli, probe: Probe) -> None:
    started = time.monotonic()
    done = igrun_cli.run("top", "ebpf", "-o", "json", "--interval", "1s", "--timeout", "3s")
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 30
    lines = done.stdout.splitlines()
    assert len(lines) == 3, done.stdout[:500]
    for line in lines:
        rows = json.loads(line)
        assert isinstance(rows, list) and rows  # this host has programs: the probe at least
        assert len(rows) <= 50  # ig's max-rows
        # Sorted by ig's default: the most run time in the interval first.
        runtimes = [r.get("currentRuntime", 0) for r in rows]
        assert runtimes == sorted(runtimes, reverse=True)


@pytest.mark.bpf
def test_columns_are_igs(igrun_cli: IgrunCli, probe: Probe) -> None:
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    done = igrun_cli.run("top", "ebpf", "--timeout", "1s", "-m", "0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("--- ") and lines[1].split() == IG_HEADER
    (mine,) = [line.split() for line in lines[2:] if line.split()[:1] == [str(probe.id)]]
    assert mine[:5] == [str(probe.id), "SocketFilter", "topebpf_probe", str(os.getpid()), comm]
    assert mine[5:7] == ["0s", "0"]  # not run
    assert mine[-2:] == [bytes_text(probe.map_memory), "1"]

    hidden = "progid,cumulruntime,cumulruncount,totalruntime,totalRunCount,totalcpu,percpu"
    done = igrun_cli.run(
        "top", "ebpf", "--timeout", "1s", "-o", f"columns={hidden}", "-F", f"progid:{probe.id}"
    )
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()[1:3]
    assert header.split() == [c.upper() for c in hidden.split(",")]
    assert row.split() == [str(probe.id), "0s", "0", "0s", "0", "0.0000", "0.0000"]

    # The processes (a JSON list of objects) show, filter and sort by their text, pid:comm.
    done = igrun_cli.run(
        "top", "ebpf", "--timeout", "1s", "-m", "0", "-o", "columns=progid,processes",
        "--sort", "processes", "-F", f"processes:~^{os.getpid()}:",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line.split() for line in done.stdout.splitlines()[2:]] == [
        [str(probe.id), f"{os.getpid()}:{comm}"]
    ]


@pytest.mark.bpf
def test_interval_is_a_prometheus_gauge_window(
    igrun_cli: IgrunCli, probe: Probe, stats_off: None, tmp_path: Path
) -> None:
    """A gauge of the run count by program shows the last whole interval: K, then 0."""
    config = tmp_path / "metrics.toml"
    config.write_text('[[gauges]]\nname = "bpf_runs"\nlabels = ["progid"]\nfield = "runcount"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    args = ("--metrics-config", str(config), "--metrics-listen-address", f"127.0.0.1:{port}")
    run = igrun_cli.start("top", "ebpf", "-o", "json", "-m", "0", *args, read_stdout=False)
    mine = f'bpf_runs{{progid="{probe.id}"}}'
    try:
        next_interval(run)
        probe.run(321)
        next_interval(run)  # the gauges took this window before the output wrote it
        busy = urllib.request.urlopen(url, timeout=5).read().decode()
        next_interval(run)
        idle = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        _, err = run.stop()
    assert run.returncode == 0, err
    assert run.stdout is not None
    run.stdout.close()
    assert f"{mine} 321.0" in busy.splitlines()
    assert f"{mine} 0.0" in idle.splitlines()


@pytest.mark.bpf
def test_on_a_terminal_each_interval_redraws_the_screen() -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*IGRUN, "top", "ebpf", "--timeout", "2s"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    got = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: igrun closed the terminal's last writer
            break
        if not chunk:
            break
        got.extend(chunk)
    os.close(master)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    text = got.decode()
    assert text.count(CLEAR_SCREEN) == 2  # one per interval, each redrawn from the top
    assert text.count("PROGID") == 2
