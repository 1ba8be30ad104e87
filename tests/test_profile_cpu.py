"""``profile cpu`` for real: a C program built here, sampled by the kernel, named by igrun.

The program has a distinctive function, ``burn_cpu_marker``, that spins for a given CPU time
(however busy the machine, so the wall time may be longer), and
``syscall_loop_marker``, which calls getppid() in a loop; it can also spread its time over
eight functions (``spread_0``…``spread_7``). Sampling is at 49 Hz per CPU (ig's
default), on the CPU clock: a process gets about 49 samples per second of CPU time it uses.
The expected count is taken from the child's own CPU time (``wait4``'s rusage), not from the
wall clock, because other work on this small machine may share its CPUs; the tolerance is
±25 % plus 3 samples (the clock's phase at the start and end, and the kernel's frequency
adjustment over the first samples).
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core import run_gadget
from igrun.core.bpf.objects import (
    BpfObject,
    Map,
    MapType,
    RunTimeStats,
    SizeError,
    online_cpus,
)
from igrun.core.errors import BpfError
from igrun.plugins.profile_cpu import DEFAULT_FREQUENCY, ProfileCpu, formats
from igrun.plugins.profile_cpu.symbolize import Symbolizer, read_elf_symbols
from igrun.testing import BpfIds, assert_released, without_ready

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

SOURCE = r"""
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

/* CPU time, not wall time: the program uses `seconds` of CPU however busy the machine is. */
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) unsigned long burn_cpu_marker(double seconds)
{
	volatile unsigned long x = 0;
	double end = now() + seconds;
	while (now() < end)
		for (int i = 0; i < 2000000; i++) /* ~1 ms between two looks at the clock */
			x += i;
	return x;
}

__attribute__((noinline)) void syscall_loop_marker(double seconds)
{
	double end = now() + seconds;
	while (now() < end)
		for (int i = 0; i < 1000; i++)
			syscall(SYS_getppid);
}

/* Eight functions that differ (so the compiler keeps eight), for a profile with many. */
#define SPREAD(n) \
	__attribute__((noinline)) unsigned long spread_##n(void) \
	{ \
		volatile unsigned long x = n; \
		for (int i = 0; i < 2000000; i++) \
			x += i ^ n; \
		return x; \
	}
SPREAD(0) SPREAD(1) SPREAD(2) SPREAD(3) SPREAD(4) SPREAD(5) SPREAD(6) SPREAD(7)

/* Round-robin over the eight, ~1 ms each, straight from main (no common caller). */
static inline __attribute__((always_inline)) void spread(double seconds)
{
	double end = now() + seconds;
	while (now() < end) {
		spread_0(); spread_1(); spread_2(); spread_3();
		spread_4(); spread_5(); spread_6(); spread_7();
	}
}

int main(int argc, char **argv)
{
	double seconds = argc > 2 ? atof(argv[2]) : 2.0;
	if (argc > 1 && argv[1][0] == 's')
		syscall_loop_marker(seconds);
	else if (argc > 1 && argv[1][0] == 'm')
		spread(seconds);
	else
		burn_cpu_marker(seconds);
	return 0;
}
"""
MARKER = "burn_cpu_marker"
TOLERANCE = 0.25
SLACK = 3


@pytest.fixture(scope="module")
def burn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test program: static (it runs as it is in a busybox container), with frame
    pointers (the kernel walks user stacks by them)."""
    out = tmp_path_factory.mktemp("burn") / "burn"
    src = out.with_suffix(".c")
    src.write_text(SOURCE)
    subprocess.run(
        ["cc", "-O2", "-fno-omit-frame-pointer", "-static", "-o", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return out


def run_child(argv: list[str]) -> tuple[int, float]:
    """Run ``argv`` to its end: its pid and the CPU seconds it used."""
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.returncode == 0
    return child.pid, usage.ru_utime + usage.ru_stime


def profile_while(argv: list[str], params: dict[str, Any] | None = None) -> tuple[Any, int, float]:
    """Profile the host while ``argv`` runs; the run's one result batch, the child's pid and
    CPU seconds."""
    settings = {"operator.containers.host": True, "runtime.timeout": "60s", **(params or {})}
    with run_gadget("profile cpu", settings, ["containers"]) as run:
        run.wait_ready()
        pid, cpu = run_child(argv)
        run.cancel()
        batches = list(run.batches())
        folder = run.pin_folder
    assert len(batches) == 1  # the whole result, once
    assert_released(BpfIds(programs=run.program_ids), [folder])  # program, links, pins
    return batches[0], pid, cpu


def rows_of(batch: Any, pid: int) -> list[dict[str, Any]]:
    keep = batch["pid"] == pid
    return [
        {"comm": c, "user": u, "kernel": k, "count": n}
        for c, u, k, n in zip(
            batch["comm"][keep].tolist(), batch["userStack"][keep].tolist(),
            batch["kernelStack"][keep].tolist(), batch["count"][keep].tolist(), strict=True,
        )
    ]  # fmt: skip


def expected_samples(cpu_seconds: float) -> tuple[float, float]:
    want = DEFAULT_FREQUENCY * cpu_seconds
    return want * (1 - TOLERANCE) - SLACK, want * (1 + TOLERANCE) + SLACK


@pytest.fixture(scope="module")
def burned(burn: Path) -> tuple[Any, int, float]:
    """One profile of the spinning program, shared by the tests of its outputs."""
    return profile_while([str(burn), "b", "2"])


def test_the_marker_is_named_with_about_frequency_times_seconds_samples(
    burned: tuple[Any, int, float],
) -> None:
    batch, pid, cpu = burned
    rows = rows_of(batch, pid)
    assert rows and {r["comm"] for r in rows} == {"burn"}
    in_marker = sum(r["count"] for r in rows if MARKER in r["user"])
    total = sum(r["count"] for r in rows)
    low, high = expected_samples(cpu)
    assert cpu >= 2.0  # it spins for 2 s of CPU time
    assert low <= total <= high, (total, cpu)
    # Nearly all its time is in the marker; a sample in the clock_gettime() it calls may
    # lose the marker frame (glibc's code keeps no frame pointer), and the start-up has a few.
    assert in_marker >= 0.9 * total, rows
    # Leaf first, as ig: the marker is the innermost user frame, main its caller.
    top = max((r for r in rows if MARKER in r["user"]), key=lambda r: r["count"])
    assert top["user"][:2] == [MARKER, "main"]
    assert np.all(np.diff(batch["count"]) >= 0)  # ig's order: ascending count


def test_a_syscall_loop_shows_the_syscall_in_kernel_stacks(burn: Path) -> None:
    batch, pid, cpu = profile_while([str(burn), "s", "1.5"])
    rows = rows_of(batch, pid)
    kernel = [r for r in rows if r["kernel"]]
    in_getppid = sum(r["count"] for r in kernel if any("sys_getppid" in f for f in r["kernel"]))
    assert in_getppid > 0, kernel
    low, high = expected_samples(cpu)
    assert low <= sum(r["count"] for r in rows) <= high
    with_sys = next(r for r in kernel if any("sys_getppid" in f for f in r["kernel"]))
    # The kernel stack is entered from the syscall entry (outermost); the user stack's
    # innermost frame is the C library's syscall() (which keeps no frame pointer, so its
    # caller, the loop, is skipped by the kernel's frame-pointer walk: main comes next).
    assert with_sys["kernel"][-1].startswith("entry_SYSCALL")
    assert with_sys["user"][:2] == ["syscall", "main"]


def test_stacks_lost_to_collisions_still_count(burn: Path) -> None:
    """A stack map of 2 slots: most stacks collide and read as lost, but every sample is still
    counted (the frame says why, it never vanishes)."""
    batch, pid, cpu = profile_while([str(burn), "s", "1"], {"stack-storage-size": 2})
    rows = rows_of(batch, pid)
    lost = "[stack lost: stack map collision]"
    assert any(lost in r["user"] or lost in r["kernel"] for r in rows)
    low, high = expected_samples(cpu)
    assert low <= sum(r["count"] for r in rows) <= high


class TinyProfile(ProfileCpu):
    counts_entries = 2


def test_a_full_counts_map_is_reported_as_lost(burn: Path) -> None:
    """Samples of a stack that finds no room are counted and reported, not dropped silently."""
    settings = {"operator.containers.host": True, "runtime.timeout": "60s"}
    with run_gadget(TinyProfile, settings, ["containers"]) as run:
        run.wait_ready()
        run_child([str(burn), "s", "1"])
        run.cancel()
        batches = list(run.batches())
        lost = run.lost
    assert len(batches) == 1 and len(batches[0]) <= 2
    assert lost is not None and lost > 0


def test_kernel_only_and_user_only(burn: Path) -> None:
    batch, pid, _ = profile_while([str(burn), "s", "1"], {"kernel-stack": True})
    rows = rows_of(batch, pid)
    assert rows and all(r["user"] == [] for r in rows)
    assert any(r["kernel"] for r in rows)
    batch, pid, _ = profile_while([str(burn), "s", "1"], {"user-stack": True})
    rows = rows_of(batch, pid)
    assert rows and all(r["kernel"] == [] for r in rows)
    assert any(r["user"][:2] == ["syscall", "main"] for r in rows)


def test_stacks_output_is_igs_columns_with_the_frames_under_each_row(
    burned: tuple[Any, int, float],
) -> None:
    batch, pid, _ = burned
    lines = formats.to_stacks(batch).decode().splitlines()
    assert lines[0].split() == ["RUNTIME.CONTAINERNAME", "COMM", "PID", "COUNT"]
    rows = [i for i, line in enumerate(lines) if not line.startswith("\t")][1:]
    assert len(rows) == len(batch)
    ours = [i for i in rows if lines[i].split()[:2] == ["burn", str(pid)]]
    assert ours
    top = max(ours, key=lambda i: int(lines[i].split()[-1]))
    frames = []
    for line in lines[top + 1 :]:
        if not line.startswith("\t"):
            break
        frames.append(line[1:])
    # ig's order: the user stack from its outermost frame in: main, then the marker, last.
    assert frames[-2:] == ["main", MARKER]


def test_folded_output_parses(burned: tuple[Any, int, float]) -> None:
    batch, _, _ = burned
    text = formats.to_folded(batch).decode()
    lines = text.splitlines()
    assert lines and text.endswith("\n")
    total = 0
    for line in lines:
        path, _, count = line.rpartition(" ")
        frames = path.split(";")
        assert all(frames) and int(count) > 0
        total += int(count)
    assert total == int(batch["count"].sum())
    ours = [line for line in lines if line.startswith("burn;") and f";{MARKER}" in line]
    assert ours
    # Root first: the command, then outer frames down to the marker.
    assert any(line.rpartition(" ")[0].endswith(f"main;{MARKER}") for line in ours)


def _pprof_message() -> Any:
    """``perftools.profiles.Profile`` built from profile.proto's field numbers with the
    protobuf package (no protoc): an independent reader of what igrun wrote."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    f = descriptor_pb2.FileDescriptorProto(name="profile.proto", package="perftools.profiles")

    def msg(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = f.message_type.add(name=name)
        for fname, number, type_, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=type_, label=label)
            if type_name:
                fd.type_name = f".perftools.profiles.{type_name}"

    R, OPT = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    msg(
        "Profile",
        ("sample_type", 1, F.TYPE_MESSAGE, R, "ValueType"),
        ("sample", 2, F.TYPE_MESSAGE, R, "Sample"),
        ("location", 4, F.TYPE_MESSAGE, R, "Location"),
        ("function", 5, F.TYPE_MESSAGE, R, "Function"),
        ("string_table", 6, F.TYPE_STRING, R, ""),
        ("duration_nanos", 10, F.TYPE_INT64, OPT, ""),
        ("period_type", 11, F.TYPE_MESSAGE, OPT, "ValueType"),
        ("period", 12, F.TYPE_INT64, OPT, ""),
    )
    msg("ValueType", ("type", 1, F.TYPE_INT64, OPT, ""), ("unit", 2, F.TYPE_INT64, OPT, ""))
    msg(
        "Sample",
        ("location_id", 1, F.TYPE_UINT64, R, ""),
        ("value", 2, F.TYPE_INT64, R, ""),
        ("label", 3, F.TYPE_MESSAGE, R, "Label"),
    )
    msg(
        "Label",
        ("key", 1, F.TYPE_INT64, OPT, ""),
        ("str", 2, F.TYPE_INT64, OPT, ""),
        ("num", 3, F.TYPE_INT64, OPT, ""),
    )
    msg(
        "Location",
        ("id", 1, F.TYPE_UINT64, OPT, ""),
        ("line", 4, F.TYPE_MESSAGE, R, "Line"),
    )
    msg("Line", ("function_id", 1, F.TYPE_UINT64, OPT, ""), ("line", 2, F.TYPE_INT64, OPT, ""))
    msg(
        "Function",
        ("id", 1, F.TYPE_UINT64, OPT, ""),
        ("name", 2, F.TYPE_INT64, OPT, ""),
        ("system_name", 3, F.TYPE_INT64, OPT, ""),
        ("filename", 4, F.TYPE_INT64, OPT, ""),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("perftools.profiles.Profile"))


def test_pprof_output_loads_with_a_protobuf_reader(burned: tuple[Any, int, float]) -> None:
    batch, pid, _ = burned
    fmts, default = ProfileCpu().output_formats()
    assert default == "stacks" and {"stacks", "folded", "pprof", "svg"} == set(fmts)
    data = fmts["pprof"].transform(batch)
    profile = _pprof_message().FromString(gzip.decompress(data))
    s = list(profile.string_table)
    assert s[0] == ""
    assert [(s[t.type], s[t.unit]) for t in profile.sample_type] == [
        ("samples", "count"),
        ("cpu", "nanoseconds"),
    ]
    assert profile.period == 1_000_000_000 // DEFAULT_FREQUENCY
    names = {f.id: s[f.name] for f in profile.function}
    loc_fn = {loc.id: names[loc.line[0].function_id] for loc in profile.location}
    assert sum(x.value[0] for x in profile.sample) == int(batch["count"].sum())
    ours = [
        x for x in profile.sample
        if any(s[lab.key] == "pid" and lab.num == pid for lab in x.label)
    ]  # fmt: skip
    assert ours
    marked = [x for x in ours if loc_fn[x.location_id[0]] == MARKER]  # leaf first
    assert marked
    assert all(x.value[1] == x.value[0] * profile.period for x in ours)
    assert loc_fn[marked[0].location_id[-1]] == "burn"  # the root: the command


def test_go_tool_pprof_reads_it(burned: tuple[Any, int, float], tmp_path: Path) -> None:
    """The reference reader, where Go is installed: its top list names the marker with the
    samples the run counted in it."""
    if shutil.which("go") is None:
        pytest.skip("needs go (go tool pprof)")
    batch, _, _ = burned
    path = tmp_path / "cpu.pb.gz"
    path.write_bytes(formats.to_pprof(batch))
    env = {**os.environ, "HOME": str(tmp_path), "PPROF_TMPDIR": str(tmp_path)}
    top = subprocess.run(
        ["go", "tool", "pprof", "-top", "-sample_index=samples", "-nodecount=100000", str(path)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    ).stdout  # fmt: skip
    # pprof's flat samples of a function: those whose innermost frame it is (no kernel frame).
    counts = [
        row["count"]
        for row in _reports(batch)
        if row["userStack"][:1] == [MARKER] and not row["kernelStack"]
    ]
    flat = next(line.split() for line in top.splitlines() if line.endswith(f" {MARKER}"))
    assert int(flat[0]) == sum(counts)


def _reports(batch: Any) -> list[dict[str, Any]]:
    cols = [batch[n].tolist() for n in ("userStack", "kernelStack", "count")]
    return [{"userStack": u, "kernelStack": k, "count": n} for u, k, n in zip(*cols, strict=True)]


def test_svg_is_well_formed_and_has_the_marker(burned: tuple[Any, int, float]) -> None:
    batch, _, _ = burned
    data = formats.to_svg(batch, title="a <test> & title")
    root = ET.fromstring(data)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    names = [g.get("data-name") for g in root.iter(f"{ns}g") if g.get("class") == "f"]
    assert MARKER in names and "burn" in names and "all" in names
    titles = [t.text or "" for t in root.iter(f"{ns}title")]
    assert any(t.startswith(f"{MARKER} (") and "samples" in t for t in titles)
    texts = {t.get("id"): t.text for t in root.iter(f"{ns}text")}
    assert texts["title"] == "a <test> & title"
    assert "search" in texts and "unzoom" in texts
    script = next(root.iter(f"{ns}script")).text or ""
    assert "function zoom" in script and "function search" in script


def test_formats_take_ig_json_reports_too() -> None:
    """A saved ``-o json`` turns into the same folded stacks as the live result."""
    reports = [
        {"comm": "a", "pid": 1, "userStack": ["leaf", "main"], "count": 3},
        {"comm": "a", "pid": 2, "userStack": ["leaf", "main"], "kernelStack": ["k"], "count": 2},
        {"comm": "b;x", "pid": 3, "count": 1},
    ]
    assert formats.to_folded(reports) == b"a;main;leaf 3\na;main;leaf;k 2\nb_x 1\n"


def test_the_json_has_igs_keys(igrun_cli: IgrunCli, burn: Path) -> None:
    proc = igrun_cli.start("profile", "cpu", "--host", "-o", "json")
    pid, _ = run_child([str(burn), "b", "1"])
    time.sleep(0.2)
    out, _ = proc.stop()
    proc.assert_released()
    events = [e for e in igrun_cli.events(out) if e.get("pid") == pid]
    assert events
    keys = set().union(*(e.keys() for e in events))
    assert {"comm", "pid", "userStack", "count"} <= keys
    assert keys <= {
        "comm", "pid", "userStack", "kernelStack", "count", "runtime", "k8s", "type",
    }  # fmt: skip
    assert any(MARKER in e["userStack"] for e in events)


FUNCTIONS_CONFIG = """\
[[functions]]
name = "igrun_cpu_self_samples"
total_name = "igrun_cpu_total_samples"
labels = ["comm"]
top = 5
"""


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of the endpoint, by sample name: (labels, value)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_per_function_samples_are_top_n_prometheus_counters(
    igrun_cli: IgrunCli, burn: Path, tmp_path: Path
) -> None:
    """With --interval each interval's stacks are counted per function while the run goes
    on: the marker has its ~frequency x CPU-seconds samples (self: it is the innermost
    frame; total: anywhere in the stack), at most top = 5 functions are exported per
    metric, and the counts are exactly those of the rows printed for the same intervals."""
    config = tmp_path / "functions.toml"
    config.write_text(FUNCTIONS_CONFIG)
    port = free_port()
    proc = igrun_cli.start(
        "profile", "cpu", "--host", "--interval", "500ms", "-o", "json",
        "--metrics-config", str(config), "--metrics-listen-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    pid, cpu = run_child([str(burn), "b", "2"])
    run_child([str(burn), "m", "1"])  # eight more functions, fewer samples each
    # Two reports after the children's end: every sample they had is in the counters.
    ended = scrape(port)["igrun_batches_total"][0][1]
    deadline = time.monotonic() + 20
    while scrape(port)["igrun_batches_total"][0][1] < ended + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    samples = scrape(port)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert "functions_only_at_the_end" not in err
    proc.assert_released()

    def marker(name: str) -> float:
        found = [
            value
            for labels, value in samples[name]
            if labels["function"] == MARKER and labels["comm"] == "burn"
        ]
        assert len(found) == 1, samples[name]
        return found[0]

    self_samples = marker("igrun_cpu_self_samples_total")
    total_samples = marker("igrun_cpu_total_samples_total")
    low, high = expected_samples(cpu)
    assert 0.9 * low <= total_samples <= high, (total_samples, cpu)
    assert 0.8 * low <= self_samples <= total_samples
    for name in ("igrun_cpu_self_samples_total", "igrun_cpu_total_samples_total"):
        assert len(samples[name]) == 5, samples[name]  # more functions ran: the top 5
        for labels, _ in samples[name]:
            assert set(labels) == {"function", "module", "comm"}
        assert {"function": MARKER, "module": "burn", "comm": "burn"} in [
            labels for labels, _ in samples[name]
        ]
    # The same intervals' rows, as printed: the marker in the stacks of the child's pid.
    events = [e for e in igrun_cli.events(out) if e.get("pid") == pid]
    printed = sum(e["count"] for e in events if MARKER in e.get("userStack", []))
    assert printed == total_samples
    printed_self = sum(
        e["count"]
        for e in events
        if not e.get("kernelStack") and e.get("userStack", [None])[0] == MARKER
    )
    assert printed_self == self_samples


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("top = 0", "metrics config: functions[0].top: top is a number of functions, 1 or more "
         "(not 0)"),
        ('top = "20"', "metrics config: functions[0].top: Input should be a valid integer"),
        ("top = 2.5", "metrics config: functions[0].top: Input should be a valid integer"),
        ("tpo = 5", "metrics config: functions[0].tpo: unknown key (known: name, help, labels, "
         "filter, total_name, top)"),
        ('labels = ["function"]', "metrics config: functions[0].labels: no column "
         '"function"'),
        ('total_name = "igrun_cpu_self_samples_total"', "metrics config: "
         "functions[0].total_name: the total samples need a name other than the self samples'"),
    ],
)  # fmt: skip
def test_a_bad_functions_config_is_one_line_and_exit_2(
    igrun_cli: IgrunCli, tmp_path: Path, config: str, message: str
) -> None:
    file = tmp_path / "functions.toml"
    file.write_text(f'[[functions]]\nname = "igrun_cpu_self_samples"\n{config}\n')
    done = igrun_cli.run("profile", "cpu", "--host", "-t", "5s", "--metrics-config", str(file))
    assert (done.returncode, done.stderr, done.stdout) == (2, f"igrun: error: {message}\n", "")


def test_per_function_samples_without_interval_are_warned_about(
    igrun_cli: IgrunCli, tmp_path: Path
) -> None:
    config = tmp_path / "functions.toml"
    config.write_text(FUNCTIONS_CONFIG)
    done = igrun_cli.run(
        "profile", "cpu", "--host", "-t", "1s", "-o", "none", "--metrics-config", str(config),
        "--metrics-listen-address", f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "[warning] functions_only_at_the_end" in done.stderr


def test_per_function_samples_need_a_profile_of_stacks(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    file = tmp_path / "functions.toml"
    file.write_text('[[functions]]\nname = "igrun_execs_self_samples"\n')
    done = igrun_cli.run("trace", "exec", "--host", "-t", "5s", "--metrics-config", str(file))
    assert done.returncode == 2
    assert done.stderr == (
        "igrun: error: metrics config: functions[0]: per-function samples need a profile of "
        "stacks (profile cpu)\n"
    )


def objects(lists: list[list[str]]) -> Any:
    """A column of frame lists (an object array, each cell a list)."""
    out = np.empty(len(lists), dtype=object)
    for i, frames in enumerate(lists):
        out[i] = frames
    return out


@pytest.mark.parametrize("doc", ["metrics.md", "profiling.md"])
def test_the_functions_examples_of_the_docs_run(
    igrun_cli: IgrunCli, tmp_path: Path, doc: str
) -> None:
    import re

    text = (Path(__file__).parent.parent / "docs" / doc).read_text()
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[functions]]" in b]
    assert blocks
    for block in blocks:
        config = tmp_path / "cpu.toml"
        config.write_text(block)
        done = igrun_cli.run(
            "profile", "cpu", "--host", "--interval", "500ms", "-t", "1s", "-o", "none",
            "--metrics-config", str(config), "--metrics-listen-address", f"127.0.0.1:{free_port()}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_functions_are_counted_once_per_stack_and_escaped() -> None:
    """Self and total samples of known rows, exactly: a recursive function counts once per
    stack, a kernel frame is innermost, unnamed addresses are one "[unknown]", only the top N
    are exported, and a symbol with quotes, a backslash or a newline is escaped as a label
    value (it reads back the same)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from igrun.core import Batch
    from igrun.operators.metrics_config import MODULES_COLUMN, parse_config
    from igrun.operators.metrics_state import MetricsCollector
    from igrun.plugins import profile_cpu
    from igrun.plugins.profile_cpu import ROW

    assert profile_cpu.MODULES_COLUMN == MODULES_COLUMN

    odd = 'op"er\\ator\nnew'
    rows = np.zeros(4, ROW)
    rows["comm"] = [b"a", b"a", b"b", b"a"]
    rows["count"] = [5, 3, 4, 7]
    user = [
        ["rec", "rec", "rec", "main"],
        ["leaf", "rec", "main"],
        [odd, "[unknown]+0x1234", "main"],
        ["[unknown]+0x99", "[unknown]+0x1234"],
    ]
    modules = [["p"] * 4, ["p"] * 3, ["q", "[unknown]", "q"], ["[unknown]"] * 2]
    kernel: list[list[str]] = [[], ["do_sys"], [], []]
    batch = Batch(
        ProfileCpu.schema.bind(ROW),
        rows,
        columns={
            "userStack": objects(user),
            "kernelStack": objects(kernel),
            "userModules": objects(modules),
        },
    )
    metrics = parse_config(
        FUNCTIONS_CONFIG.replace("top = 5", "top = 3"), ProfileCpu.schema.bind(ROW)
    )
    collector = MetricsCollector(metrics)
    collector.add(batch)
    registry = CollectorRegistry()
    registry.register(collector)
    found: dict[str, dict[tuple[str, str, str], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name.endswith("_samples_total"):
                key = (s.labels["function"], s.labels["module"], s.labels["comm"])
                found.setdefault(s.name, {})[key] = s.value
    assert found["igrun_cpu_self_samples_total"] == {  # the top 3 of 4 (do_sys: 3)
        ("[unknown]", "[unknown]", "a"): 7,
        ("rec", "p", "a"): 5,
        (odd, "q", "b"): 4,
    }
    assert collector.states[0].values == {  # all kept; the kernel frame is the innermost
        ("[unknown]", "[unknown]", "a"): 7,
        ("rec", "p", "a"): 5,
        (odd, "q", "b"): 4,
        ("do_sys", "[kernel]", "a"): 3,
    }
    assert found["igrun_cpu_total_samples_total"] == {  # the top 3 of 8
        ("main", "p", "a"): 8,
        ("rec", "p", "a"): 8,
        ("[unknown]", "[unknown]", "a"): 7,
    }
    assert b'function="op\\"er\\\\ator\\nnew"' in generate_latest(registry)


@pytest.mark.parametrize("fmt", ["folded", "svg", "stacks"])
def test_the_command_writes_each_format(igrun_cli: IgrunCli, burn: Path, fmt: str) -> None:
    """``-o folded|svg|stacks`` on the command line: the format, once, on stdout."""
    proc = igrun_cli.start("profile", "cpu", "--host", "-o", fmt)
    pid, _ = run_child([str(burn), "b", "1"])
    time.sleep(0.2)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    proc.assert_released()
    if fmt == "folded":
        lines = [line.rpartition(" ") for line in out.splitlines()]
        assert lines and all(count.isdigit() for _, _, count in lines)
        assert any(MARKER in stack for stack, _, _ in lines)
    elif fmt == "svg":
        import xml.etree.ElementTree as ET

        assert MARKER in out and ET.fromstring(out).tag.endswith("svg")
    else:
        assert out.count("COMM") == 1 and MARKER in out  # one table, frames under rows
    assert str(pid) in out or fmt != "stacks"


def test_a_container_is_symbolized_through_its_root(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    burn: Path,
) -> None:
    """The binary exists only inside the container (a path the host does not have): its
    frames are named from the container's root, and only the container's processes show."""
    name = f"igrun-prof-{uuid.uuid4().hex[:6]}"
    box = podman.run(name)
    inside = f"/burn-{uuid.uuid4().hex[:6]}"
    assert not os.path.exists(inside)
    podman("cp", str(burn), f"{name}:{inside}")
    proc = igrun_cli.start("profile", "cpu", "-c", name, "-o", "json")
    started = time.monotonic()
    podman("exec", name, inside, "b", "2")
    assert time.monotonic() - started >= 2
    time.sleep(0.2)
    out, _ = proc.stop()
    proc.assert_released()
    events = igrun_cli.events(out)
    ours = [e for e in events if e.get("comm") == inside[1:16]]
    assert ours, events
    assert {e["runtime"]["containerName"] for e in events} == {name}
    assert box.pid not in {e["pid"] for e in ours}  # the exec'd program, not the container's sh
    svg = ET.fromstring(formats.to_svg(events, title="CPU"))
    title = next(t for t in svg.iter("{http://www.w3.org/2000/svg}text") if t.get("id") == "title")
    assert title.text == f"CPU: container {name}"
    table = formats.to_stacks(ours).decode().splitlines()
    assert all(line.startswith(name) for line in table[1:] if not line.startswith("\t"))
    assert sum(e["count"] for e in ours if MARKER in e.get("userStack", [])) > 0, json.dumps(ours)


# ---- naming frames, without BPF: real processes and real (or broken) binaries --------------


def _symbol(binary: Path, name: str) -> int:
    """A function's address, as ``nm`` reads it from the unstripped binary."""
    out = subprocess.run(["nm", str(binary)], check=True, capture_output=True, text=True).stdout
    return next(int(a, 16) for a, _, n in (line.split() for line in out.splitlines()) if n == name)


def _spinning(binary: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen([str(binary), "b", "30"])
    deadline = time.monotonic() + 5
    while f"{binary.name[:15]}" not in Path(f"/proc/{child.pid}/comm").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return child


def test_a_stripped_binary_shows_module_and_offset(burn: Path, tmp_path: Path) -> None:
    """No symbol to name an address: the frame is ``module+0xfile offset`` (what
    ``addr2line -e module`` takes), never dropped; an address outside every mapping is
    ``[unknown]+0xaddress``."""
    stripped = tmp_path / "burn-stripped"
    shutil.copy(burn, stripped)
    subprocess.run(["strip", str(stripped)], check=True)
    marker = _symbol(burn, MARKER)
    child = _spinning(stripped)
    try:
        sym = Symbolizer()
        # Static, not PIE: mapped at the link address, text at file offset address - 0x400000.
        names = sym.user_names(child.pid, np.array([marker + 4, 0x10], np.uint64))
        assert names.tolist() == [f"burn-stripped+0x{marker + 4 - 0x400000:x}", "[unknown]+0x10"]
        named = Symbolizer().user_names(child.pid, np.array([marker + 4], np.uint64))
        assert named.tolist() == [f"burn-stripped+0x{marker + 4 - 0x400000:x}"]
        sym.close()
    finally:
        child.kill()
        child.wait()
    child = _spinning(burn)
    try:
        sym = Symbolizer()
        assert sym.user_names(child.pid, np.array([marker], np.uint64)).tolist() == [MARKER]
        sym.close()
    finally:
        child.kill()
        child.wait()


def test_a_process_gone_before_the_end_is_named_from_what_was_read(burn: Path) -> None:
    child = _spinning(burn)
    sym = Symbolizer()
    sym.remember([child.pid], [b"burn"])
    child.kill()
    child.wait()
    assert not Path(f"/proc/{child.pid}").exists()
    marker = _symbol(burn, MARKER)
    assert sym.user_names(child.pid, np.array([marker], np.uint64)).tolist() == [MARKER]
    sym.close()


@pytest.mark.parametrize(
    "damage",
    ["truncated", "not elf", "section table past the end", "symbol table past the end"],
)
def test_a_broken_binary_is_refused_not_trusted(burn: Path, tmp_path: Path, damage: str) -> None:
    """Every offset and size in the file is checked against the file: a damaged binary gives
    no symbols (its frames then show module+offset), never a crash or a huge allocation."""
    data = bytearray(burn.read_bytes())
    shoff = int.from_bytes(data[0x28:0x30], "little")
    if damage == "truncated":
        data = data[:4096]
    elif damage == "not elf":
        data[:4] = b"\x7fELG"
    elif damage == "section table past the end":
        data[0x28:0x30] = (len(data) - 64).to_bytes(8, "little")
    else:  # the .symtab entry's size, made huge
        shdrs = np.frombuffer(bytes(data[shoff : shoff + 64 * data[0x3C]]), "<u4").reshape(-1, 16)
        symtab = int(np.flatnonzero(shdrs[:, 1] == 2)[0])
        at = shoff + symtab * 64 + 32  # sh_size
        data[at : at + 8] = (1 << 40).to_bytes(8, "little")
    path = tmp_path / "broken"
    path.write_bytes(bytes(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        syms = read_elf_symbols(fd, "broken")
    finally:
        os.close(fd)
    if damage == "symbol table past the end":  # that table is skipped, the file still read
        assert syms is not None and len(syms.values) == 0 and syms.loads
    else:
        assert syms is None


def test_a_saved_json_profile_converts(tmp_path: Path) -> None:
    reports = [
        {"comm": "app", "pid": 7, "userStack": [MARKER, "main"], "kernelStack": [], "count": 5},
        {"comm": "app", "pid": 7, "userStack": ["main"], "kernelStack": ["do_sys"], "count": 1},
    ]
    saved = tmp_path / "cpu.json"
    saved.write_text("".join(json.dumps(r) + "\n" for r in reports))
    command = [sys.executable, "-m", "igrun.plugins.profile_cpu"]
    folded = subprocess.run([*command, "folded", str(saved)], capture_output=True, check=True)
    assert folded.stdout == f"app;main;{MARKER} 5\napp;main;do_sys 1\n".encode()
    svg = subprocess.run([*command, "svg", str(saved)], capture_output=True, check=True)
    names = {g.get("data-name") for g in ET.fromstring(svg.stdout).iter() if g.get("data-name")}
    assert {"all", "app", "main", MARKER, "do_sys"} == names
    bad = subprocess.run([*command, "svg", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("profile cpu: cannot convert")
    assert bad.stderr.count("\n") == 1
    usage = subprocess.run([*command, "gif"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


# ---- the C helpers it adds: every size checked --------------------------------------------


def test_lookup_many_reads_many_keys_in_one_call_and_checks_sizes() -> None:
    m = Map.create(MapType.HASH, "igrun_lm_test", 4, 8, 16)
    try:
        for k in (1, 5):
            m.update(k.to_bytes(4, "little"), (k * 100).to_bytes(8, "little"))
        values, found = m.lookup_many(np.array([5, 2, 1], "<u4"))
        assert found.tolist() == [True, False, True]
        assert values.view("<u8").reshape(-1).tolist() == [500, 0, 100]
        empty, none = m.lookup_many(np.zeros(0, "<u4"))
        assert empty.shape == (0, 8) and none.shape == (0,)
        with pytest.raises(SizeError):
            m.lookup_many(np.array([1], "<u2"))  # 2 bytes: not a 4-byte key
    finally:
        m.close()


def test_perf_event_attach_checks_its_arguments() -> None:
    import importlib.resources

    with BpfObject.open(
        importlib.resources.files("igrun.plugins.profile_cpu") / "profile.bpf.o"
    ) as obj:
        obj.load()
        program = obj.programs["ig_prof_cpu"]
        with pytest.raises(SizeError):
            program.attach_perf_event(0, 0)  # no frequency
        with pytest.raises(SizeError):
            program.attach_perf_event(-1, 49)
        with pytest.raises(BpfError) as no_cpu:
            program.attach_perf_event(max(online_cpus()) + 1000, 49)
        assert no_cpu.value.errno in (errno.ENODEV, errno.EINVAL, errno.ENXIO)
        # The frequency is the one asked for: at most about 997 runs in a second, counted by
        # the kernel's BPF statistics, and far more than the default 49. Not exactly 997: on
        # an idle virtual CPU the clock skips ticks while the CPU is halted (451 seen).
        stats = RunTimeStats()
        try:
            _, before = program.run_stats()
            link = program.attach_perf_event(min(online_cpus()), 997)
            started = time.monotonic()
            time.sleep(1.0)
            elapsed = time.monotonic() - started
            _, after = program.run_stats()
            link.destroy()
        finally:
            stats.close()
        assert 4 * DEFAULT_FREQUENCY * elapsed <= after - before <= 1.2 * 997 * elapsed + 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-U", "-K"], "igrun: error: --user-stack and --kernel-stack exclude each other\n"),
        (["--frequency", "0"], "igrun: error: --frequency: 0 Hz is outside 1-10000\n"),
        (["--frequency", "20000"], "igrun: error: --frequency: 20000 Hz is outside 1-10000\n"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    igrun_cli: IgrunCli, args: list[str], message: str
) -> None:
    done = igrun_cli.run("profile", "cpu", "--host", "--timeout", "1", *args)
    assert done.returncode == 2
    assert without_ready(done.stderr) == message
    assert done.stdout == ""


def test_binaries_are_read_once_per_build_id_and_found_when_deleted(
    burn: Path, tmp_path: Path
) -> None:
    """Two copies of one binary share one symbol table (keyed by build id); a binary deleted
    after its process started is read through the mapping itself (``map_files``)."""
    a, b = tmp_path / "copy-a", tmp_path / "copy-b"
    shutil.copy(burn, a)
    shutil.copy(burn, b)
    marker = _symbol(burn, MARKER)
    first, second = _spinning(a), _spinning(b)
    try:
        b.unlink()  # gone from the file system, still mapped
        sym = Symbolizer()
        sym.remember([first.pid, second.pid])
        for child in (first, second):
            named = sym.user_names(child.pid, np.array([marker], np.uint64))
            assert named.tolist() == [MARKER]
        keys = {m[1] for pid in (first.pid, second.pid) for m in sym._procs[pid].modules if m[1]}
        tables = {id(sym.symbols(k)) for k in keys if sym.symbols(k) is not None}
        assert len(keys) == 2 and len(tables) == 1
        sym.close()
    finally:
        for child in (first, second):
            child.kill()
            child.wait()


def test_a_binary_replaced_on_disk_is_read_as_mapped(burn: Path, tmp_path: Path) -> None:
    """An upgrade replaced the file after the process started: the path now names another
    file (another inode), so the mapping itself is read, not the newcomer."""
    path, other = tmp_path / "app", tmp_path / "app.new"
    shutil.copy(burn, path)
    shutil.copy(burn, other)
    subprocess.run(["strip", str(other)], check=True)
    marker = _symbol(burn, MARKER)
    child = _spinning(path)
    try:
        os.replace(other, path)
        sym = Symbolizer()
        assert sym.user_names(child.pid, np.array([marker], np.uint64)).tolist() == [MARKER]
        sym.close()
    finally:
        child.kill()
        child.wait()
