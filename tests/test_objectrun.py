"""``igrun run FILE.bpf.o``: bare CO-RE objects run with no Python of their own.

The objects are compiled from tests/bpf/run_*.bpf.c. The tracer reacts only to the getppid()
calls of one child process (``--target_pid``), so every event is known in advance: its pid,
comm, mount namespace, count and endpoint. The snapshot lists every process, this one
included. Each run must leave nothing behind: no pin folder, no program loaded.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from igrun.core.bpf.build import compile_bpf
from igrun.operators.containers import ENRICHED_NAMES
from igrun.testing import CliRun, without_ready

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

SOURCES = Path(__file__).parent / "bpf"
OBJECTS = (
    "run_tracer",
    "run_layouts",
    "run_snapshot",
    "run_undeclared",
    "run_bitfield",
    "run_badlost",
    "rejected",
    "run_display",
    "run_process",
)
PROGRAM_PREFIX = "igrt_"
"""Every program of the run_* objects is named so."""
CHILD_COMM = "igrt-child"

CHILD = f"""
import os, sys
with open("/proc/self/comm", "w") as f:
    f.write({CHILD_COMM!r})
print(os.getpid(), flush=True)
calls = int(sys.stdin.readline())
for _ in range(calls):
    os.getppid()
"""


@pytest.fixture(scope="session")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("objectrun")
    return {
        name: compile_bpf(SOURCES / f"{name}.bpf.c", out / f"{name}.bpf.o", build_dir=out / "b")
        for name in OBJECTS
    }


@dataclass
class Child:
    """A process that calls getppid() when told to, with a known comm and mount namespace."""

    proc: subprocess.Popen[str]
    pid: int
    mntns: int

    def call_getppid(self, times: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{times}\n")
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0


@pytest.fixture
def child() -> Iterator[Child]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    mntns = os.stat(f"/proc/{pid}/ns/mnt").st_ino
    yield Child(proc, pid, mntns)
    proc.kill()
    proc.wait()


def assert_nothing_left(cli: IgrunCli, run: CliRun | Done) -> None:
    """No pin folder of the run; for a run started and seen ready, none of the programs,
    maps and links it held either (a run that ended by itself was never seen holding any)."""
    assert cli.pin_dirs_of(run.pid) == []
    if isinstance(run, CliRun):
        run.assert_released()


@dataclass
class Done:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def run(cli: IgrunCli, *args: str) -> Done:
    """Run igrun to its end, keeping its pid to look for what it may have left."""
    proc = subprocess.Popen(
        [*cli.command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=30)
    return Done(proc.pid, proc.returncode, out, err)


def endpoint(count: int, port_base: int) -> dict[str, object]:
    """What run_tracer.bpf.c puts in the endpoint of its ``count``-th event."""
    addr, version = ("127.0.0.1", 4) if count % 2 else ("::1", 6)
    return {"addr": addr, "version": version, "port": port_base + count, "proto": "TCP"}


# ---- the tracer ------------------------------------------------------------------------------


def test_tracer_shows_the_childs_calls_exactly(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    proc = igrun_cli.start(
        "run", str(objects["run_tracer"]), "-o", "json", "--host", "-m", "3",
        "--target_pid", str(child.pid), "--port_base", "5000",
    )  # fmt: skip
    before = time.time_ns()
    child.call_getppid(3)
    after = time.time_ns()
    out, err = proc.communicate(timeout=15)  # -m 3 ends the run by itself
    assert proc.returncode == 0, err
    events = igrun_cli.events(out)
    assert [e["count"] for e in events] == [1, 2, 3]
    for n, e in enumerate(events, start=1):
        assert e["pid"] == child.pid
        assert e["comm"] == CHILD_COMM
        assert e["mountnsid"] == child.mntns
        assert e["delta"] == -n
        assert e["odd"] is (n % 2 == 1)
        assert e["endpoint"] == endpoint(n, 5000)
        assert before - 50_000_000 <= e["timestamp"] <= after + 50_000_000
        assert e["runtime"] == {}  # a host process: no container keys (omitempty, as ig)
    assert "Traceback" not in err
    assert_nothing_left(igrun_cli, proc)


def test_tracer_columns_and_a_bool_flag(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    """``--odd_only`` (a bool global) drops even counts in the kernel; -o columns shows the
    endpoint as address:port, and -F filters on a generated field."""
    proc = igrun_cli.start(
        "run", str(objects["run_tracer"]), "--host", "--odd_only", "--target_pid",
        str(child.pid), "-o", "columns=pid,count,comm,endpoint", "-F", "count:>1",
    )  # fmt: skip
    child.call_getppid(4)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert out.splitlines() == [
        "    PID   COUNT COMM             ENDPOINT",
        f"{child.pid:>7} {3:>7} {CHILD_COMM:<16} 127.0.0.1:4003",
    ]
    assert_nothing_left(igrun_cli, proc)


def test_tracer_without_host_drops_host_processes_in_the_kernel(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    proc = igrun_cli.start(
        "run", str(objects["run_tracer"]), "-o", "json", "--target_pid", str(child.pid)
    )
    child.call_getppid(3)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert igrun_cli.events(out) == []
    assert_nothing_left(igrun_cli, proc)


def test_help_lists_the_objects_flags_and_fields(
    igrun_cli: IgrunCli, objects: dict[str, Path]
) -> None:
    done = run(igrun_cli, "run", str(objects["run_tracer"]), "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "--target_pid TARGET_PID" in text
    assert "sets __s32 port_base in the object [default: 4000]" in text
    assert "--odd_only [BOOL]" in text
    assert "--host" in text and "-F FILTER" in text  # the operators' flags
    lines = text.split("fields (")[1].splitlines()[1:]
    added = [line for line in lines if line.endswith(" [operator containers]")]
    rows = [line[4:].split()[:2] for line in lines if line not in added]
    fields = {name: kind for name, kind in rows}
    assert [line[4:].split()[0] for line in added] == list(ENRICHED_NAMES)  # the operator's too
    assert fields == {
        "timestamp": "time", "mntns": "uint", "pid": "uint", "delta": "int", "count": "uint",
        "odd": "bool", "comm": "str", "endpoint.addr": "str", "endpoint.version": "uint",
        "endpoint.port": "uint", "endpoint": "str", "endpoint.proto": "str",
    }  # fmt: skip


def test_nested_members_are_flattened_and_the_rest_named(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    """A nested struct is shown as outer.inner, an L3 endpoint as its address, an enum by
    name; a string flag sets a char array. What no column fits is named in --help."""
    proc = igrun_cli.start(
        "run", str(objects["run_layouts"]), "-o", "json", "-m", "1",
        "--target_pid", str(child.pid), "--label", "xyz",
    )  # fmt: skip
    child.call_getppid(1)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert igrun_cli.events(out) == [
        {
            "type": "normal",
            "pid": child.pid,
            "shade": "SHADE_DARK",
            "ptr": 0x1234,
            "label": "xyz",
            "in": {"a": 513, "b": -7, "name": "nested"},
            "peer": {"addr": "10.0.1.2", "version": 4},
        }
    ]
    assert_nothing_left(igrun_cli, proc)
    help_text = run(igrun_cli, "run", str(objects["run_layouts"]), "--help").stdout
    assert (
        "(not shown: an anonymous member at byte 64, either (union (anonymous)), "
        "values (__u32[3]: only char arrays are shown))"
    ) in help_text
    assert "--label LABEL         sets char[8] label in the object [default: abc]" in help_text


GETPPID = {"x86_64": 110, "aarch64": 173}
"""getppid's number, as the kernel's tracepoint reports it."""


def test_shared_process_and_connection_members_show_as_the_gadgets_do(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    """``struct gadget_process proc`` shows as pid, tid, comm, uid, gid, ppid and the
    mount namespace the containers operator reads; ``struct gadget_connection conn`` as
    ip, src and dst: the names and JSON keys of the built-in gadgets, not proc.pid."""
    proc = igrun_cli.start(
        "run", str(objects["run_process"]), "-o", "json", "--host", "-m", "1",
        "--target_pid", str(child.pid),
    )  # fmt: skip
    child.call_getppid(1)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    (event,) = igrun_cli.events(out)
    assert "containerName" not in event["runtime"]  # found by its mount namespace: the host
    del event["runtime"], event["k8s"], event["timestamp"]
    assert event == {
        "type": "normal",
        "mountnsid": child.mntns,
        "pid": child.pid,
        "tid": child.pid,
        "ppid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "comm": CHILD_COMM,
        "parent": {
            "mntns_id": child.mntns,
            "pid": os.getpid(),
            "tid": os.getpid(),  # the main thread started it
            "uid": os.getuid(),
            "gid": os.getgid(),
            "comm": Path("/proc/self/comm").read_text().strip(),
            "ppid": os.getppid(),
        },
        "ipversion": 4,
        "src": {"addr": "127.0.0.1", "version": 4, "port": 1234},
        "dst": {"addr": "10.0.0.2", "version": 4, "port": 443},
        "syscall": "getppid",
        "syscall_raw": GETPPID[platform.machine()],
        "other": str(0xFFFFF),
        "other_raw": 0xFFFFF,
        "marker": 0x1EE7,
    }
    assert_nothing_left(igrun_cli, proc)
    help_text = run(igrun_cli, "run", str(objects["run_process"]), "--help").stdout
    assert "always: struct event has no mount namespace member" not in help_text
    listed = help_text.split("fields (")[1]
    assert "proc." not in listed and "conn." not in listed


def test_columns_of_the_shared_members(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    proc = igrun_cli.start(
        "run", str(objects["run_process"]), "--host", "-m", "1", "--target_pid", str(child.pid),
        "-o", "columns=pid,tid,ppid,comm,src,dst,syscall",
    )  # fmt: skip
    child.call_getppid(1)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    header, row = out.splitlines()
    assert header.split() == ["PID", "TID", "PPID", "COMM", "SRC", "DST", "SYSCALL"]
    assert row.split() == [
        str(child.pid), str(child.pid), str(os.getpid()), CHILD_COMM, "127.0.0.1:1234",
        "10.0.0.2:443", "getppid",
    ]  # fmt: skip


# ---- display said in C (igrun/display.h) and programs chosen -------------------------------

DISPLAY = ("--buffer-map", "events")
"""run_display declares two tracers: the runs below read the one of ``events``."""
LONG_PATH = "/tmp/igrun-display/a-path-longer-than-16"
NO_LOST_COUNTER = (
    "losses cannot be counted: ring buffer events has no gadget_lost_events counter "
    "(igrun/buffer.h: GADGET_RINGBUF, gadget_reserve_buf)"
)


def display_event(pid: int, which: int) -> dict[str, object]:
    """What run_display.bpf.c sends from program ``which`` (1: igrt_display_a, 2: _b)."""
    return {
        "type": "normal", "pid": pid, "which": which, "error": "ENOENT", "error_raw": -2,
        "mode": "0640",
        "mode_raw": 0o640, "access": "IGRT_READ|IGRT_EXEC|0x8", "access_raw": 13,
        "took": "1.5ms", "took_raw": 1_500_000, "sig": "SIGKILL", "sig_raw": 9, "uid": 1234,
        "path": LONG_PATH, "secret": 42, "user": "root", "user_raw": 0, "group": "root",
        "group_raw": 0,
    }  # fmt: skip


def test_display_typedefs_and_annotations_in_json(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    """Each typedef and annotation of igrun/display.h, and the program on a tracepoint no
    kernel has skipped before load (the run works): both programs on getppid send."""
    proc = igrun_cli.start(
        "run", str(objects["run_display"]), *DISPLAY, "-o", "json", "-m", "2",
        "--target_pid", str(child.pid),
    )  # fmt: skip
    child.call_getppid(1)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    events = sorted(igrun_cli.events(out), key=lambda e: int(e["which"]))
    assert events == [display_event(child.pid, 1), display_event(child.pid, 2)]
    assert_nothing_left(igrun_cli, proc)


def test_display_columns_wide_path_and_hidden_member(
    igrun_cli: IgrunCli, objects: dict[str, Path], child: Child
) -> None:
    """--programs loads only the program named (one event, not two); a path longer than 16
    characters shows whole in its 40-wide column (GADGET_WIDTH(40)), the GADGET_HIDDEN member
    and the _raw numbers are not among the default columns."""
    proc = igrun_cli.start(
        "run", str(objects["run_display"]), *DISPLAY, "--programs", "igrt_display_b",
        "--target_pid", str(child.pid),
    )  # fmt: skip
    child.call_getppid(1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    header, *rows = out.splitlines()
    assert header.split() == [
        "PID", "WHICH", "ERROR", "MODE", "ACCESS", "TOOK", "SIG", "PATH", "UID", "USER",
        "GROUP",
    ]  # fmt: skip
    assert rows == [
        f"{child.pid:>7} {2:>7} {'ENOENT':<8} {'0640':<7} {'IGRT_READ|IGRT_EXEC|0x8':<24} "
        f"{'1.5ms':<10} {'SIGKILL':<8} {LONG_PATH:<40} {1234:>7} {'root':<16} root"
    ]
    assert "SECRET" not in header and "42" not in rows[0].split()
    assert_nothing_left(igrun_cli, proc)


def test_missing_tracepoint_is_skipped_with_one_line_at_v(
    igrun_cli: IgrunCli, objects: dict[str, Path]
) -> None:
    """The program on a tracepoint no kernel has is skipped before load, said at -v only."""
    done = run(igrun_cli, "run", str(objects["run_display"]), *DISPLAY, "-t", "1s", "-v")
    assert done.returncode == 0, done.stderr
    skipped = [line for line in done.stderr.splitlines() if "igrt_display_missing skipped" in line]
    assert len(skipped) == 1
    assert skipped[0].endswith(
        "program igrt_display_missing skipped: this kernel has no tracepoint "
        "syscalls/sys_enter_igrun_no_such_call"
    )
    quiet = run(igrun_cli, "run", str(objects["run_display"]), *DISPLAY, "-t", "1s")
    assert "skipped" not in quiet.stderr
    # A ring buffer without igrun's lost counter: said once, on stderr, not "0 lost".
    (line,) = without_ready(quiet.stderr).splitlines()
    assert line.endswith(f"[warning] {objects['run_display']}: {NO_LOST_COUNTER}")
    assert_nothing_left(igrun_cli, done)


def test_host_is_accepted_without_a_mount_namespace_member(
    igrun_cli: IgrunCli, objects: dict[str, Path]
) -> None:
    done = run(igrun_cli, "run", str(objects["run_display"]), *DISPLAY, "--host", "-t", "1s")
    assert done.returncode == 0, done.stderr
    (note,) = [line for line in done.stderr.splitlines() if "--host" in line]
    assert note.endswith(
        "--host: struct event has no mount namespace member (gadget_mntns_id): every event is "
        "shown; a container selection cannot filter them"
    )
    assert_nothing_left(igrun_cli, done)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "{path}: declares several gadgets (tracer display (map events), tracer other "
             "(map others)); choose one with --buffer-map"),
        (("--buffer-map", "nope"), "--buffer-map: no tracer of {path} reads 'nope' (it "
             "declares tracer display (map events), tracer other (map others))"),
        ((*DISPLAY, "--programs", "igrt_nope"), "--programs: {path} has no program igrt_nope "
             "(it has igrt_display_a, igrt_display_b, igrt_display_missing, igrt_display_other)"),
    ],
)  # fmt: skip
def test_choosing_the_buffer_and_programs_mistakes(
    igrun_cli: IgrunCli, objects: dict[str, Path], args: tuple[str, ...], message: str
) -> None:
    path = objects["run_display"]
    done = run(igrun_cli, "run", str(path), *args, "-t", "1s")
    assert done.returncode == 2
    assert done.stderr == f"igrun: error: {message.format(path=path)}\n"
    assert_nothing_left(igrun_cli, done)


def test_the_other_buffer_is_read_when_chosen(
    igrun_cli: IgrunCli, objects: dict[str, Path]
) -> None:
    """--buffer-map others: the tracer of the small struct, fed by getpgid() calls."""
    proc = igrun_cli.start(
        "run", str(objects["run_display"]), "--buffer-map", "others", "-o", "json",
        "-F", f"pid:{os.getpid()}", "-m", "1",
    )  # fmt: skip
    os.getpgid(0)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert igrun_cli.events(out) == [{"type": "normal", "pid": os.getpid()}]
    assert_nothing_left(igrun_cli, proc)


# ---- the snapshot ------------------------------------------------------------------------------


def test_snapshot_lists_this_process(igrun_cli: IgrunCli, objects: dict[str, Path]) -> None:
    me = os.getpid()
    done = run(igrun_cli, "run", str(objects["run_snapshot"]), "--host", "-o", "json",
                         "-F", f"pid:{me}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = igrun_cli.events(done.stdout)
    assert row["pid"] == me
    assert row["ppid"] == os.getppid()
    assert row["comm"] == Path("/proc/self/comm").read_text().strip()
    assert row["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert "Traceback" not in done.stderr
    assert_nothing_left(igrun_cli, done)


def test_snapshot_sorts_and_selects_in_user_space(
    igrun_cli: IgrunCli, objects: dict[str, Path]
) -> None:
    """The snapshot object has no kernel container filter: without --host, igrun drops the
    host's processes itself; with it, every process comes, sorted as asked."""
    me = os.getpid()
    hidden = run(igrun_cli, "run", str(objects["run_snapshot"]), "-o", "json")
    assert hidden.returncode == 0, hidden.stderr
    assert me not in [e["pid"] for e in igrun_cli.events(hidden.stdout)]
    shown = run(igrun_cli, "run", str(objects["run_snapshot"]), "--host", "-o", "json",
                          "--sort", "-pid")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    pids = [e["pid"] for e in igrun_cli.events(shown.stdout)]
    assert me in pids and os.getppid() in pids
    assert pids == sorted(pids, reverse=True)
    assert_nothing_left(igrun_cli, hidden)
    assert_nothing_left(igrun_cli, shown)


# ---- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "code", "message"),
    [
        ("missing", 2, "{path}: no such file"),
        ("folder", 2, "{path}: is a folder, not a BPF object"),
        ("text", 2, "{path}: not an ELF file: expected a compiled BPF object"),
        ("native", 2, "{path}: an ELF file for another machine, not a BPF object"),
        ("run_undeclared", 2, "{path}: declares no GADGET_TRACER nor GADGET_SNAPSHOTTER"),
        ("run_bitfield", 2, "{path}: struct packed_event cannot be decoded: bitfields have no "
                            "numpy layout (kind, flags)"),
    ],
)  # fmt: skip
def test_bad_objects_get_one_line(
    igrun_cli: IgrunCli,
    objects: dict[str, Path],
    tmp_path: Path,
    target: str,
    code: int,
    message: str,
) -> None:
    paths = {
        "missing": tmp_path / "missing.bpf.o",
        "folder": tmp_path,
        "text": Path(__file__),
        "native": Path(sys.executable).resolve(),
        **objects,
    }
    path = paths[target]
    done = run(igrun_cli, "run", str(path), "-o", "json")
    assert done.returncode == code
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("igrun: error: " + message.format(path=path))
    assert_nothing_left(igrun_cli, done)


def test_no_object_named(igrun_cli: IgrunCli) -> None:
    done = run(igrun_cli, "run", "--host")
    assert done.returncode == 2
    assert done.stderr == (
        "igrun: error: igrun run: name the object first: igrun run FILE.bpf.o [flags]  "
        "(igrun run FILE.bpf.o --help lists them)\n"
    )


def test_bad_flag_values(igrun_cli: IgrunCli, objects: dict[str, Path]) -> None:
    tracer = str(objects["run_tracer"])
    too_big = run(igrun_cli, "run", tracer, "--host", "--target_pid", str(1 << 32))
    assert too_big.returncode == 2
    assert too_big.stderr == (
        "igrun: error: --target_pid: 4294967296 is out of range (0 to 4294967295)\n"
    )
    unknown = run(igrun_cli, "run", tracer, "--nope", "1")
    assert unknown.returncode == 2
    assert "unrecognized arguments: --nope 1" in unknown.stderr
    assert_nothing_left(igrun_cli, too_big)


def test_verifier_rejection_shows_why(igrun_cli: IgrunCli, objects: dict[str, Path]) -> None:
    path = objects["rejected"]
    done = run(igrun_cli, "run", str(path), "-t", "1s")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == (
        f"igrun: error: {path}: the kernel refused to load it: Permission denied (errno 13)"
    )
    assert lines[-1] == "  R0 invalid mem access 'map_value_or_null'"
    assert "Traceback" not in done.stderr
    assert_nothing_left(igrun_cli, done)


def test_an_objects_own_drop_counter_of_another_layout_is_refused(
    igrun_cli: IgrunCli, objects: dict[str, Path]
) -> None:
    """The reader reads gadget_lost_events as one u64 per CPU: an object that declares it with
    a 32-byte value would have the kernel write past the reader's buffer. One line, exit 1."""
    done = run(igrun_cli, "run", str(objects["run_badlost"]), "-o", "json", "-t", "2s")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "igrun: error: map gadget_lost_events must be a per-CPU array of 1 entry, u32 key, "
        "u64 value (igrun/buffer.h); it is a per-CPU array of 1 entry, 4-byte key, "
        "32-byte value\n"
    )
    assert_nothing_left(igrun_cli, done)
