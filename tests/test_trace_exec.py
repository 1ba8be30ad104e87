"""trace exec in the real kernel: a child execs, and the event says exactly what happened."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gadgetlab
import pytest
from gadgetlab import marker

from igrun.core.bpf.objects import Map, MapType
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_exec import TraceExec

pytestmark = pytest.mark.bpf


def trace(
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
) -> list[dict[str, Any]]:
    return gadgetlab.trace(TraceExec, action, values, resources)


def with_arg(rows: list[dict[str, Any]], arg: str) -> list[dict[str, Any]]:
    return [r for r in rows if arg in r["args"]]


def test_exec_event_has_exact_fields() -> None:
    mark = marker()
    child: dict[str, int] = {}

    def run() -> None:
        proc = subprocess.Popen(["/bin/true", mark, "two words", ""])
        child["pid"] = proc.pid
        proc.wait()

    before = time.time_ns()
    rows = with_arg(trace(run), mark)
    after = time.time_ns()
    assert len(rows) == 1
    event = rows[0]
    assert event["pid"] == child["pid"]
    assert event["tid"] == child["pid"]
    assert event["ppid"] == os.getpid()
    assert event["uid"] == os.getuid()
    assert event["gid"] == os.getgid()
    assert event["comm"] == "true"
    assert event["ret"] == 0
    assert event["args"] == ["/bin/true", mark, "two words", ""]
    assert event["truncated"] is False
    assert event["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert event["loginuid"] == int(Path("/proc/self/loginuid").read_text())
    assert event["sessionid"] == int(Path("/proc/self/sessionid").read_text())
    assert before - 1_000_000_000 <= event["timestamp"] <= after


def test_failed_exec_reports_enoent() -> None:
    missing = f"/nonexistent/{marker()}"

    def run() -> None:
        with pytest.raises(FileNotFoundError):
            subprocess.run([missing, "x"])

    rows = [r for r in trace(run) if r["args"][:1] == [missing]]
    assert len(rows) == 1
    assert rows[0]["ret"] == -errno.ENOENT
    assert rows[0]["args"] == [missing, "x"]


def test_ignore_errors_hides_failed_exec() -> None:
    missing, ok = f"/nonexistent/{marker()}", marker()

    def run() -> None:
        with pytest.raises(FileNotFoundError):
            subprocess.run([missing])
        subprocess.run(["/bin/true", ok], check=True)

    rows = trace(run, {"ignore-errors": "true"})
    assert [r for r in rows if r["args"][:1] == [missing]] == []
    assert len(with_arg(rows, ok)) == 1


def test_cwd_is_the_working_directory_of_the_process_that_execd(tmp_path: Path) -> None:
    """--cwd: the directory each child was started in, as getcwd says it, for an exec that
    succeeded and one that failed; the root is "/"."""
    mark = marker()
    deep = tmp_path / "a b" / "c"
    deep.mkdir(parents=True)
    missing = f"/nonexistent/{mark}"

    def run() -> None:
        subprocess.run(["/bin/true", mark, "deep"], cwd=deep, check=True)
        subprocess.run(["/bin/true", mark, "root"], cwd="/", check=True)
        with pytest.raises(FileNotFoundError):
            subprocess.run([missing], cwd=deep)

    rows = trace(run, {"cwd": "true"})
    by_place = {r["args"][2]: r for r in with_arg(rows, mark)}
    assert by_place["deep"]["cwd"] == os.path.realpath(deep)
    assert by_place["root"]["cwd"] == "/"
    (failed,) = [r for r in rows if r["args"][:1] == [missing]]
    assert failed["ret"] == -errno.ENOENT
    assert failed["cwd"] == os.path.realpath(deep)


def test_no_cwd_without_the_flag(tmp_path: Path) -> None:
    mark = marker()
    rows = with_arg(
        trace(lambda: subprocess.run(["/bin/true", mark], cwd=tmp_path, check=True)), mark
    )
    assert len(rows) == 1
    assert rows[0]["cwd"] == ""  # the kernel left it empty: JSON omits the key


def test_long_and_many_args_are_marked_truncated() -> None:
    mark = marker()
    exact = "a" * 127  # fits: 127 bytes and the NUL
    many = [f"{mark}-{i}" for i in range(25)]

    def run() -> None:
        subprocess.run(["/bin/true", mark, exact], check=True)
        subprocess.run(["/bin/true", mark, "b" * 300], check=True)
        subprocess.run(["/bin/true", *many], check=True)

    rows = trace(run)
    fits, long_ = with_arg(rows, mark)
    assert fits["args"] == ["/bin/true", mark, exact] and fits["truncated"] is False
    assert long_["args"] == ["/bin/true", mark, "b" * 127] and long_["truncated"] is True
    (lots,) = with_arg(rows, many[0])
    assert lots["args"] == ["/bin/true", *many[:19]]
    assert lots["truncated"] is True


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces() -> None:
    """With only the host's mount-ns in the filter map, an exec in a fresh one is dropped."""
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))
    inside, outside = marker(), marker()

    def run() -> None:
        subprocess.run(["unshare", "-m", "/bin/true", inside], check=True)
        subprocess.run(["/bin/true", outside], check=True)

    try:
        rows = trace(run, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
    # unshare itself execs in the host namespace (and is traced); /bin/true then runs in the
    # fresh one (and is not).
    launched = with_arg(rows, inside)
    assert [r["comm"] for r in launched if r["ret"] == 0] == ["unshare"]
    assert [r for r in launched if r["args"][0] == "/bin/true"] == []
    (event,) = with_arg(rows, outside)
    assert event["mountnsid"] == host_ns


def test_execveat_is_traced() -> None:
    """os.execve on a file descriptor is fexecve, which glibc makes an execveat syscall."""
    mark = marker()
    child: dict[str, int] = {}

    def run() -> None:
        pid = os.fork()
        if pid == 0:
            try:
                fd = os.open("/bin/true", os.O_RDONLY)
                os.execve(fd, ["true", mark], {})
            finally:
                os._exit(127)
        child["pid"] = pid
        os.waitpid(pid, 0)

    (event,) = with_arg(trace(run), mark)
    assert event["pid"] == child["pid"]
    assert event["args"] == ["", mark]  # execveat(fd, "", AT_EMPTY_PATH): the path is empty
    assert event["ret"] == 0
    assert event["comm"] == "true"


def test_exec_by_a_non_root_user_and_group() -> None:
    """Inspektor Gadget's case: the event has the uid and gid of the process that execs, not
    of its parent."""
    mark = marker()
    child: dict[str, int] = {}

    def run() -> None:
        proc = subprocess.Popen(["/bin/true", mark], user=1000, group=1111, extra_groups=[])
        child["pid"] = proc.pid
        assert proc.wait() == 0

    (event,) = with_arg(trace(run), mark)
    assert (event["pid"], event["tid"], event["ppid"]) == (child["pid"], child["pid"], os.getpid())
    assert (event["uid"], event["gid"]) == (1000, 1111)
    assert event["ret"] == 0
    assert event["comm"] == "true"


EXEC_FROM_THREAD = """
import os, sys, threading

def execs():
    print(threading.get_native_id(), flush=True)
    os.execv("/bin/true", ["/bin/true", sys.argv[1]])

thread = threading.Thread(target=execs)
thread.start()
thread.join()
"""


def test_exec_from_a_thread_that_is_not_the_main_one() -> None:
    """Inspektor Gadget's case: a thread other than the main one execs (the kernel makes it
    the main one). The event has the process's pid and that thread's tid."""
    mark = marker()
    child: dict[str, int] = {}

    def run() -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", EXEC_FROM_THREAD, mark], stdout=subprocess.PIPE
        )
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        child["pid"], child["tid"] = proc.pid, int(out)

    rows = [r for r in trace(run) if r["args"] == ["/bin/true", mark]]
    (event,) = rows
    assert child["tid"] != child["pid"]
    assert (event["pid"], event["tid"], event["ppid"]) == (child["pid"], child["tid"], os.getpid())
    assert (event["uid"], event["gid"]) == (os.getuid(), os.getgid())
    assert event["ret"] == 0
    assert event["comm"] == "true"
