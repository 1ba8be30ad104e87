"""``snapshot process``: the real task iterator against ``/proc``, for processes the test starts
with known users; ``--threads``; a podman container with ``-c``; windows with ``--interval``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import IMAGE, unique
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

USERS = (23451, 23452, 23453)
"""Users (and groups) the children run as: none of them exists, which the kernel allows."""


def status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def as_user(uid: int) -> Any:
    def become() -> None:
        os.setgid(uid)
        os.setgroups([])
        os.setuid(uid)

    return become


@pytest.fixture
def children() -> Iterator[list[tuple[subprocess.Popen[bytes], int, str]]]:
    """Three sleepers, each under a command name of its own and a user of its own."""
    folder = tempfile.mkdtemp(prefix="igrun-snap-", dir="/tmp")
    os.chmod(folder, 0o755)
    started: list[tuple[subprocess.Popen[bytes], int, str]] = []
    try:
        for uid in USERS:
            comm = f"igs{uuid.uuid4().hex[:10]}"  # 13 bytes: the whole name fits in comm
            os.symlink(shutil.which("sleep") or "/bin/sleep", f"{folder}/{comm}")
            proc = subprocess.Popen([f"{folder}/{comm}", "60"], preexec_fn=as_user(uid))
            started.append((proc, uid, comm))
        yield started
    finally:
        for proc, _, _ in started:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder)


def snapshot(cli: IgrunCli, *flags: str) -> list[dict[str, Any]]:
    done = cli.run("snapshot", "process", "-o", "json", *flags)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return cli.events(done.stdout)


def test_rows_agree_with_proc_for_known_children(
    igrun_cli: IgrunCli, children: list[tuple[subprocess.Popen[bytes], int, str]]
) -> None:
    rows = snapshot(igrun_cli, "--host", "-m", "0")  # every row: ig's default is 50
    by_pid = {}
    for row in rows:
        assert row["pid"] not in by_pid, f"two rows for pid {row['pid']} without --threads"
        by_pid[row["pid"]] = row
    for proc, uid, comm in children:
        row = by_pid[proc.pid]
        st = status(proc.pid)
        assert row["comm"] == comm == st["Name"]
        assert row["ppid"] == os.getpid() == int(st["PPid"])
        assert row["uid"] == uid == int(st["Uid"].split()[0])
        assert row["gid"] == uid == int(st["Gid"].split()[0])
        assert row["tid"] == proc.pid  # one row per process: its main thread
        assert row["mountnsid"] == os.stat(f"/proc/{proc.pid}/ns/mnt").st_ino
        assert row["type"] == "normal" and row["runtime"] == {}
    me = by_pid[os.getpid()]
    assert (me["uid"], me["ppid"]) == (0, os.getppid())
    # The default sort: comm, then pid (no container, no Kubernetes names on a host).
    keys = [(r["comm"], r["pid"]) for r in rows if not r["runtime"]]
    assert keys == sorted(keys)


def test_threads_shows_each_thread_of_a_process(igrun_cli: IgrunCli) -> None:
    code = (
        "import threading, sys, time\n"
        "t = threading.Thread(target=time.sleep, args=(60,), daemon=True); t.start()\n"
        "print(t.native_id, flush=True); sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        tid = int(child.stdout.readline())
        threads = {int(t) for t in os.listdir(f"/proc/{child.pid}/task")}
        assert tid in threads and len(threads) == 2
        rows = snapshot(igrun_cli, "--host", "--threads", "-F", f"pid:{child.pid}")
        assert {r["tid"] for r in rows} == threads
        assert all(r["pid"] == child.pid and r["ppid"] == os.getpid() for r in rows)
        (one,) = snapshot(igrun_cli, "--host", "-F", f"pid:{child.pid}")
        assert one["tid"] == child.pid
        # --threads makes the thread id a column, as ig's param:threads tag does.
        columns = igrun_cli.run("snapshot", "process", "--host", "--threads",
                                "-F", f"tid:{tid}")  # fmt: skip
        header, line = columns.stdout.splitlines()[:2]
        assert header.split()[:4] == ["RUNTIME.CONTAINERNAME", "COMM", "PID", "TID"]
        assert line.split()[1:3] == [str(child.pid), str(tid)]
        plain = igrun_cli.run("snapshot", "process", "--host", "-F", f"pid:{child.pid}")
        assert "TID" not in plain.stdout.splitlines()[0]
    finally:
        child.kill()
        child.wait()


def test_a_container_shows_only_its_processes(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    name = unique("igrun-snap")
    podman.names.append(name)
    podman("run", "-d", "--pull=never", "--network", "none", "--name", name, IMAGE,
           "sh", "-c", "sleep 1000 & sleep 1001 & wait")  # fmt: skip
    init = int(podman("inspect", "-f", "{{.State.Pid}}", name))
    mntns = os.stat(f"/proc/{init}/ns/mnt").st_ino
    expected = {}
    for _ in range(100):  # the two sleeps are forked right after sh starts
        expected = {
            int(p): Path(f"/proc/{p}/comm").read_text().strip()
            for p in os.listdir("/proc")
            if p.isdigit() and _mntns(p) == mntns
        }
        if len(expected) == 3:
            break
    assert sorted(expected.values()) == ["sh", "sleep", "sleep"]
    rows = snapshot(igrun_cli, "-c", name)
    assert {r["pid"]: r["comm"] for r in rows} == expected
    assert {r["runtime"]["containerName"] for r in rows} == {name}
    assert {r["mountnsid"] for r in rows} == {mntns}
    sleeps = [r for r in rows if r["comm"] == "sleep"]
    assert {r["ppid"] for r in sleeps} == {init}
    # Sorted by comm, then pid.
    assert [(r["comm"], r["pid"]) for r in rows] == sorted((r["comm"], r["pid"]) for r in rows)
    # -o tree: ig's pstree-like output, the container's name over its process tree.
    tree = igrun_cli.run("snapshot", "process", "-c", name, "-o", "tree")
    assert tree.returncode == 0, tree.stderr
    first, second = sorted(p for p, comm in expected.items() if comm == "sleep")
    assert tree.stdout == f"{name}\n|-sh({init})\n\t|-sleep({first})\n\t|-sleep({second})\n"


def _mntns(pid: str) -> int:
    with contextlib.suppress(OSError):
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    return 0


def test_interval_writes_one_array_per_snapshot(igrun_cli: IgrunCli) -> None:
    """Snapshots at 0 s, 1 s and 2 s of a run that ends at 2.5 s: three arrays of one row."""
    proc = igrun_cli.start("snapshot", "process", "--host", "--interval", "1s", "-o", "json",
                           "--timeout", "2500ms", "-F", f"pid:{os.getpid()}")  # fmt: skip
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    windows = [json.loads(line) for line in out.splitlines()]
    assert len(windows) == 3, out
    for window in windows:
        assert [row["pid"] for row in window] == [os.getpid()]
    assert igrun_cli.pin_dirs_of(proc.pid) == []
    proc.assert_released()


def test_bad_flag_is_one_line(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("snapshot", "process", "--threads=maybe")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = igrun_cli.run("snapshot", "process", "-o", "forest")
    assert (done.returncode, done.stderr) == (
        2,
        'igrun: error: invalid output "forest": use one '
        "of columns, json, jsonpretty, yaml, none, tree\n",
    )


def test_tree_puts_each_process_under_its_parent(igrun_cli: IgrunCli) -> None:
    """A child that starts a grandchild: in the host's forest, the grandchild is the line
    right under the child, one tab deeper."""
    child = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        tree = igrun_cli.run("snapshot", "process", "--host", "-m", "0", "-o", "tree")
    finally:
        child.kill()
        os.kill(grandchild, signal.SIGKILL)
        child.wait()
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert lines[0] == "(no container)"
    (at,) = [i for i, line in enumerate(lines) if line.endswith(f"|-sh({child.pid})")]
    depth = lines[at].index("|")
    assert lines[at + 1] == "\t" * (depth + 1) + f"|-sleep({grandchild})"
    me = [line for line in lines if line.endswith(f"({os.getpid()})")]
    assert len(me) == 1 and me[0].index("|") + 1 == depth  # the child is under this test


def test_at_most_50_rows_by_default_as_ig(igrun_cli: IgrunCli) -> None:
    assert len(snapshot(igrun_cli, "--host")) == 50  # a host runs more than 50 processes
    assert len(snapshot(igrun_cli, "--host", "-m", "3")) == 3


def test_a_container_not_running_is_said_not_to_be_in_the_snapshot(igrun_cli: IgrunCli) -> None:
    name = unique("igrun-absent")
    done = igrun_cli.run("snapshot", "process", "-c", name, "-o", "json")
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert f"container_not_found_yet name={name} note='it is not in this snapshot'" in done.stderr
