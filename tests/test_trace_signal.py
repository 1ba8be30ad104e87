"""trace signal in the real kernel: signals sent to children, and the events say exactly what."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gadgetlab
import pytest

from igrun.core.bpf.objects import Map, MapType
from igrun.core.errors import ParamError
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_signal import TraceSignal, parse_signal, signal_name

pytestmark = pytest.mark.bpf

NOBODY = 65534
SYS_TKILL = {"x86_64": 200, "aarch64": 130}


def trace(
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
) -> list[dict[str, Any]]:
    return gadgetlab.trace(TraceSignal, action, values, resources)


def where(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """The rows whose fields have these values."""
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def thread_comm() -> str:
    """The comm of the calling thread: what the kernel reports as the sender's."""
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().rstrip("\n")


def free_pid() -> int:
    """A pid no process or thread has now (the highest free one: the last to be reused)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return next(p for p in range(pid_max - 1, 1, -1) if not Path(f"/proc/{p}").exists())


def start_sleeper(**kwargs: Any) -> subprocess.Popen[bytes]:
    """``sleep`` in a child, returned once it runs sleep (so its comm is known)."""
    proc = subprocess.Popen(["sleep", "30"], **kwargs)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{proc.pid}/comm").read_text() != "sleep\n":
        assert time.monotonic() < deadline, "sleep did not start"
        time.sleep(0.01)
    return proc


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = start_sleeper()
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def sigpipe_child() -> subprocess.Popen[bytes]:
    """A child the kernel sends SIGPIPE to: it writes to a pipe nobody reads."""
    code = (
        "import os, signal; signal.signal(signal.SIGPIPE, signal.SIG_DFL); "
        "r, w = os.pipe(); os.close(r); os.write(w, b'x')"
    )
    return subprocess.Popen([sys.executable, "-c", code])


# ---- the events ------------------------------------------------------------------------------


def test_kill_event_has_exact_fields(sleeper: subprocess.Popen[bytes]) -> None:
    me = os.getpid()
    seen: dict[str, str] = {}

    def run() -> None:
        seen["comm"] = thread_comm()
        os.kill(sleeper.pid, signal.SIGUSR1)
        sleeper.wait()

    before = time.time_ns()
    rows = trace(run)
    after = time.time_ns()
    (event,) = where(rows, pid=me, tpid=sleeper.pid)
    assert event["comm"] == seen["comm"]
    assert event["signal"] == "SIGUSR1"
    assert event["ret"] == 0
    assert event["uid"] == os.getuid()
    assert event["gid"] == os.getgid()
    assert event["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert before - 1_000_000_000 <= event["timestamp"] <= after
    # The kernel then tells the parent (the thread that started sleep: this one) it died.
    (child,) = where(rows, pid=sleeper.pid, signal="SIGCHLD")
    assert child["tpid"] == me
    assert child["comm"] == "sleep"
    assert child["ret"] == 0
    assert sleeper.returncode == -signal.SIGUSR1


def test_kill_command_is_seen_with_its_pid_and_comm(sleeper: subprocess.Popen[bytes]) -> None:
    sender: dict[str, int] = {}

    def run() -> None:
        proc = subprocess.Popen(["kill", "-s", "TERM", str(sleeper.pid)])
        sender["pid"] = proc.pid
        assert proc.wait() == 0
        sleeper.wait()

    (event,) = where(trace(run), tpid=sleeper.pid, signal="SIGTERM")
    assert event["pid"] == sender["pid"]
    assert event["comm"] == "kill"
    assert event["ret"] == 0
    assert sleeper.returncode == -signal.SIGTERM


def test_failed_kill_reports_esrch() -> None:
    missing = free_pid()

    def run() -> None:
        with pytest.raises(ProcessLookupError):
            os.kill(missing, signal.SIGTERM)

    (event,) = where(trace(run), pid=os.getpid(), tpid=missing)
    assert event["signal"] == "SIGTERM"
    assert event["ret"] == -errno.ESRCH


def test_kill_denied_reports_eperm_and_the_senders_ids(sleeper: subprocess.Popen[bytes]) -> None:
    """An unprivileged process may not signal root's: the syscall fails, no signal is made."""
    sender: dict[str, int] = {}

    def run() -> None:
        proc = subprocess.Popen(
            ["kill", "-s", "TERM", str(sleeper.pid)],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            stderr=subprocess.DEVNULL,
        )
        sender["pid"] = proc.pid
        assert proc.wait() != 0

    (event,) = where(trace(run), tpid=sleeper.pid)
    assert event["pid"] == sender["pid"]
    assert event["comm"] == "kill"
    assert event["signal"] == "SIGTERM"
    assert event["ret"] == -errno.EPERM
    assert event["uid"] == NOBODY
    assert event["gid"] == NOBODY
    assert sleeper.poll() is None


def test_signal_zero_and_an_invalid_signal(sleeper: subprocess.Popen[bytes]) -> None:
    """kill(pid, 0) generates nothing but is a kill all the same; so is one with signal 100."""

    def run() -> None:
        os.kill(sleeper.pid, 0)
        with pytest.raises(OSError) as exc:
            os.kill(sleeper.pid, 100)
        assert exc.value.errno == errno.EINVAL

    rows = where(trace(run), pid=os.getpid(), tpid=sleeper.pid)
    assert [(r["signal"], r["ret"]) for r in rows] == [("", 0), ("SIG100", -errno.EINVAL)]


def test_tgkill_reaches_the_thread() -> None:
    """pthread_kill() is tgkill(): the target is the thread, by its own id."""
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        ident = worker.ident
        assert ident is not None and worker.native_id is not None

        def run() -> None:
            signal.pthread_kill(ident, signal.SIGWINCH)  # ignored by default

        (event,) = where(trace(run), pid=os.getpid(), tpid=worker.native_id)
    finally:
        stop.set()
        worker.join()
    assert event["signal"] == "SIGWINCH"
    assert event["ret"] == 0


@pytest.mark.skipif(platform.machine() not in SYS_TKILL, reason="tkill number unknown here")
def test_tkill_reports_success_and_failure(sleeper: subprocess.Popen[bytes]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    missing = free_pid()
    results: list[tuple[int, int]] = []

    def run() -> None:
        for tid in (sleeper.pid, missing):
            ret = libc.syscall(SYS_TKILL[platform.machine()], tid, signal.SIGWINCH)
            results.append((ret, ctypes.get_errno() if ret else 0))

    rows = trace(run)
    assert results == [(0, 0), (-1, errno.ESRCH)]
    (ok,) = where(rows, pid=os.getpid(), tpid=sleeper.pid)
    (failed,) = where(rows, pid=os.getpid(), tpid=missing)
    assert (ok["signal"], ok["ret"]) == ("SIGWINCH", 0)
    assert (failed["signal"], failed["ret"]) == ("SIGWINCH", -errno.ESRCH)


def test_kill_of_a_process_group_reports_every_target() -> None:
    leader = start_sleeper(process_group=0)
    member = start_sleeper(process_group=leader.pid)
    try:

        def run() -> None:
            os.killpg(leader.pid, signal.SIGTERM)
            leader.wait()
            member.wait()

        rows = where(trace(run), pid=os.getpid(), signal="SIGTERM")
    finally:
        for proc in (leader, member):
            proc.kill()
            proc.wait()
    assert sorted(r["tpid"] for r in rows) == sorted([leader.pid, member.pid])
    assert [r["ret"] for r in rows] == [0, 0]
    assert rows[0]["timestamp"] == rows[1]["timestamp"]  # one kill() call


def test_signal_raised_by_the_kernel() -> None:
    """SIGPIPE comes from the kernel, in the writer's own context: sender and target."""
    child: dict[str, int] = {}

    def run() -> None:
        proc = sigpipe_child()
        child["pid"] = proc.pid
        assert proc.wait() == -signal.SIGPIPE

    rows = trace(run)
    (event,) = where(rows, pid=child["pid"], signal="SIGPIPE")
    assert event["tpid"] == child["pid"]
    assert event["comm"] == Path(sys.executable).name[:15]
    assert event["ret"] == 0


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces(
    sleeper: subprocess.Popen[bytes],
) -> None:
    """With only the host's mount-ns in the filter map, a kill sent from a fresh one is
    dropped."""
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))

    def run() -> None:
        subprocess.run(["unshare", "-m", "kill", "-s", "WINCH", str(sleeper.pid)], check=True)
        os.kill(sleeper.pid, signal.SIGWINCH)

    try:
        rows = trace(run, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
    (event,) = where(rows, tpid=sleeper.pid, signal="SIGWINCH")
    assert event["pid"] == os.getpid()
    assert event["mountnsid"] == host_ns


# ---- the params ------------------------------------------------------------------------------


def test_pid_param_keeps_only_that_sender(sleeper: subprocess.Popen[bytes]) -> None:
    me = os.getpid()
    other: dict[str, int] = {}

    def run() -> None:
        proc = subprocess.Popen(["kill", "-s", "WINCH", str(sleeper.pid)])
        other["pid"] = proc.pid
        assert proc.wait() == 0
        os.kill(sleeper.pid, signal.SIGWINCH)

    rows = trace(run, {"pid": str(me)})
    assert {r["pid"] for r in rows} == {me}  # filtered in the kernel: nothing else came
    (event,) = where(rows, tpid=sleeper.pid)
    assert event["signal"] == "SIGWINCH"
    assert where(rows, pid=other["pid"]) == []


@pytest.mark.parametrize("value", ["SIGUSR2", "USR2", "usr2", "12"])
def test_signal_param_keeps_only_that_signal(value: str, sleeper: subprocess.Popen[bytes]) -> None:
    def run() -> None:
        os.kill(sleeper.pid, signal.SIGWINCH)
        os.kill(sleeper.pid, signal.SIGUSR2)
        sleeper.wait()  # its SIGCHLD is left out too

    rows = trace(run, {"signal": value})
    assert {r["signal"] for r in rows} == {"SIGUSR2"}
    (event,) = where(rows, pid=os.getpid(), tpid=sleeper.pid)
    assert event["ret"] == 0


def test_signal_param_takes_realtime_signals(sleeper: subprocess.Popen[bytes]) -> None:
    rt = signal.SIGRTMIN + 1

    def run() -> None:
        os.kill(sleeper.pid, signal.SIGWINCH)
        os.kill(sleeper.pid, rt)
        sleeper.wait()

    rows = trace(run, {"signal": "SIGRTMIN+1"})
    assert {r["signal"] for r in rows} == {"SIGRTMIN+1"}
    assert len(where(rows, pid=os.getpid(), tpid=sleeper.pid)) == 1
    assert sleeper.returncode == -rt


@pytest.mark.parametrize("value", ["SIGNOPE", "RTMIN+40", "65", "-3"])
def test_signal_param_rejects_what_is_no_signal(value: str) -> None:
    with pytest.raises(ParamError, match="--signal"):
        trace(lambda: None, {"signal": value})


def test_failed_only_param_keeps_only_failed_sends(sleeper: subprocess.Popen[bytes]) -> None:
    missing = free_pid()
    child: dict[str, int] = {}

    def run() -> None:
        os.kill(sleeper.pid, signal.SIGWINCH)
        with pytest.raises(ProcessLookupError):
            os.kill(missing, signal.SIGWINCH)
        proc = sigpipe_child()
        child["pid"] = proc.pid
        proc.wait()

    rows = trace(run, {"failed-only": "true"})
    assert all(r["ret"] < 0 for r in rows)
    (event,) = where(rows, pid=os.getpid(), tpid=missing)
    assert (event["signal"], event["ret"]) == ("SIGWINCH", -errno.ESRCH)
    assert where(rows, tpid=sleeper.pid) == []
    assert where(rows, pid=child["pid"]) == []


def test_kill_only_param_leaves_out_signals_the_kernel_raises(
    sleeper: subprocess.Popen[bytes],
) -> None:
    child: dict[str, int] = {}

    def run() -> None:
        proc = sigpipe_child()
        child["pid"] = proc.pid
        assert proc.wait() == -signal.SIGPIPE
        os.kill(sleeper.pid, signal.SIGWINCH)

    rows = trace(run, {"kill-only": "true"})
    (event,) = where(rows, pid=os.getpid(), tpid=sleeper.pid)
    assert (event["signal"], event["ret"]) == ("SIGWINCH", 0)
    assert where(rows, pid=child["pid"]) == []  # neither its SIGPIPE nor its SIGCHLD


def test_signal_names_and_numbers_round_trip() -> None:
    for number in [*range(1, 32), *range(signal.SIGRTMIN, signal.SIGRTMAX + 1)]:
        assert parse_signal(signal_name(number)) == number
    assert signal_name(32) == "SIG32"  # kept by the C library, no name
    assert parse_signal("32") == 32
    assert parse_signal("") == 0
    assert parse_signal("sigkill") == parse_signal("KILL") == parse_signal("9") == 9
    assert parse_signal("SIGIOT") == 6
    assert signal_name(0) == ""
    assert signal_name(signal.SIGRTMIN) == "SIGRTMIN"
    assert signal_name(signal.SIGRTMAX) == "SIGRTMAX"
    assert signal_name(signal.SIGRTMAX - 1) == "SIGRTMIN+29"
    for sig in signal.valid_signals():
        if sig < signal.SIGRTMIN and sig.name not in ("SIGIOT", "SIGCLD", "SIGPOLL"):
            assert signal_name(int(sig)) == sig.name


# ---- the command -----------------------------------------------------------------------------


def test_cli_help_lists_params_and_fields() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "igrun.core.cli", "trace", "signal", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--pid PID",
        "--signal SIGNAL",
        "-f [BOOL], --failed-only",
        "-k [BOOL], --kill-only",
    ):
        assert flag in out
    for field in ("* pid", "* comm", "* signal", "* tpid", "* ret", "  uid", "  mntns"):
        assert f"\n  {field} " in out


def test_cli_prints_the_event_as_json(igrun_cli: Any, sleeper: subprocess.Popen[bytes]) -> None:
    me = os.getpid()
    proc = igrun_cli.start("trace", "signal", "--host", "-o", "json", "--pid", str(me), "-t", "20s")
    try:
        os.kill(sleeper.pid, signal.SIGUSR1)
        sleeper.wait()
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    (event,) = where(igrun_cli.events(out), tpid=sleeper.pid)
    assert event["pid"] == me
    assert event["signal"] == "SIGUSR1"
    assert "ret" not in event  # 0: left out, as ig leaves it out (omitempty)
    assert event["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert igrun_cli.pin_dirs_of(proc.pid) == []
