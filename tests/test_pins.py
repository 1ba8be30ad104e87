"""The pin root and run folders: a root others could change is refused, a live run's folder
is never removed (whatever pid namespace either run is in, whatever it is called), a dead
run's is, and SIGHUP cleans up like SIGTERM.

Each test uses a pin root of its own on bpffs (``IGRUN_PIN_ROOT``), so that runs of igrun
elsewhere on the host are never judged by these tests, nor these runs by them.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from igrun.core.bpf.pins import PinDir, remove_stale, run_id
from igrun.core.errors import EnvironmentProblem
from igrun.testing import READY_LINE

pytestmark = pytest.mark.bpf

IGRUN = [sys.executable, "-m", "igrun.core.cli"]
TRACE = ["trace", "exec", "--host", "-o", "json"]


@pytest.fixture
def root() -> Iterator[Path]:
    """A pin root of this test's own, on bpffs (not made yet: igrun makes it)."""
    top = Path(f"/sys/fs/bpf/igrun-test-{uuid.uuid4().hex[:8]}")
    try:
        yield top / "gadget"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def env_for(root: Path) -> dict[str, str]:
    return {**os.environ, "IGRUN_PIN_ROOT": str(root)}


def start(command: list[str], root: Path, **popen: object) -> subprocess.Popen[str]:
    """Start igrun with -v and return once its programs are attached."""
    proc = subprocess.Popen(
        [*command, "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(root),
        **popen,  # type: ignore[call-overload]
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if READY_LINE.search(line):
            return proc  # type: ignore[no-any-return]
    out, err = proc.communicate()
    pytest.fail(f"igrun did not start: {out}\n{''.join(seen)}{err}")


def folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def bpf_ids(pid: int) -> dict[str, set[int]]:
    """The programs, maps and links the process holds, by id (from its fds)."""
    found: dict[str, set[int]] = {"prog_id": set(), "map_id": set(), "link_id": set()}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        for key, value in re.findall(r"^(prog_id|map_id|link_id):\s+(\d+)$", info, re.M):
            found[key].add(int(value))
    return found


def exists(kind: str, id: int) -> bool:
    what = {"prog_id": "prog", "map_id": "map", "link_id": "link"}[kind]
    done = subprocess.run(["bpftool", what, "show", "id", str(id)], capture_output=True)
    return done.returncode == 0


# ---- the root --------------------------------------------------------------------------------


def test_the_root_is_made_root_owned_and_closed(root: Path) -> None:
    old = os.umask(0)  # a permissive umask must not open it
    try:
        pins = PinDir.create(root)
    finally:
        os.umask(old)
    st = root.stat()
    assert (st.st_uid, oct(st.st_mode & 0o7777)) == (0, "0o700")
    assert oct(pins.path.stat().st_mode & 0o777) == "0o700"
    assert pins.path.name == run_id()
    pins.cleanup()
    assert folders(root) == set()


@pytest.mark.parametrize(
    "make, fix",
    [
        (lambda r: (r.mkdir(0o700), os.chown(r, 1001, 1001)), "belongs to uid 1001, not 0"),
        (lambda r: (r.mkdir(), os.chmod(r, 0o755)), "has mode 755, open to others"),
        (lambda r: (r.mkdir(), os.chmod(r, 0o1777)), "has mode 1777, open to others"),
        (lambda r: (r.mkdir(), os.chmod(r, 0o720)), "has mode 720, open to others"),
        (lambda r: r.symlink_to("/sys/fs/bpf"), "is a symlink"),
    ],
    ids=["other-owner", "0755", "1777", "group-writable", "symlink"],
)
def test_a_root_others_could_change_is_refused(root: Path, make: object, fix: str) -> None:
    """What a non-root user could prepare on a world-writable bpffs before igrun's first run:
    one line that says how to fix it, exit 1, nothing loaded, nothing made inside."""
    root.parent.mkdir()
    make(root)  # type: ignore[operator]
    done = subprocess.run(
        [*IGRUN, *TRACE, "-t", "1s"], capture_output=True, text=True, env=env_for(root)
    )
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"igrun: error: pin folder {root} {fix}")
    assert ("chmod 700" in line) or ("rm " in line)
    if not root.is_symlink():
        assert folders(root) == set()
    with pytest.raises(EnvironmentProblem):
        PinDir.create(root)


def test_a_root_inside_a_folder_others_can_change_is_refused(root: Path) -> None:
    """Whoever owns a folder above the root can rename the root away and put their own."""
    root.parent.mkdir()
    os.chown(root.parent, 1001, 1001)
    with pytest.raises(EnvironmentProblem, match=r"is inside .*owner uid 1001, mode 755"):
        PinDir.create(root)
    os.chown(root.parent, 0, 0)
    os.chmod(root.parent, 0o777)
    with pytest.raises(EnvironmentProblem, match=r"is inside .*owner uid 0, mode 777"):
        PinDir.create(root)
    os.chmod(root.parent, 0o1777)  # sticky, like bpffs itself: only owners rename
    PinDir.create(root).cleanup()


def test_a_pin_in_place_of_the_root_is_refused(root: Path) -> None:
    """bpffs holds folders and pinned objects only: a map pinned at the root's path."""
    root.parent.mkdir()
    subprocess.run(
        ["bpftool", "map", "create", str(root), "type", "array", "key", "4", "value", "4",
         "entries", "1", "name", "igrun_test"],
        check=True,
    )  # fmt: skip
    with pytest.raises(EnvironmentProblem, match=r"is not a folder: remove it \('rm "):
        PinDir.create(root)


# ---- what is left behind ----------------------------------------------------------------------


def hold_lock(folder: Path) -> subprocess.Popen[str]:
    """A process that locks ``folder`` as a live run does, until it is killed."""
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_dead_runs_folders_go_whatever_their_name_live_ones_stay(root: Path) -> None:
    PinDir.create(root).cleanup()  # the root, made as igrun makes it
    live_renamed = root / "renamed-by-someone"
    for name in ("999999999-1", f"{os.getpid()}-1", "renamed-dead", "123-", "x", "1-2-3"):
        (root / name).mkdir()
        (root / name / "sub").mkdir()  # a gadget's folder inside, as runs leave them
    live_renamed.mkdir()
    sleeper = subprocess.Popen(["sleep", "600"])
    unlocked_live = root / run_id(sleeper.pid)  # an igrun that does not lock (yet)
    unlocked_live.mkdir()
    holder = hold_lock(live_renamed)
    try:
        pins = PinDir.create(root)
        assert folders(root) == {live_renamed.name, unlocked_live.name, pins.path.name}
        with pytest.raises(BlockingIOError):  # this run's folder is locked
            fd = os.open(pins.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        pins.cleanup()
        holder.kill()
        holder.wait()
        sleeper.kill()
        sleeper.wait()
        assert sorted(remove_stale(root)) == sorted([live_renamed.name, unlocked_live.name])
        assert folders(root) == set()
    finally:
        holder.kill()
        sleeper.kill()


def test_a_folder_taken_by_a_run_elsewhere_is_never_reused(root: Path) -> None:
    """Our own name already there and locked (a run in another pid namespace with the same
    pid and start time): this run takes another name and leaves that one alone."""
    PinDir.create(root).cleanup()
    taken = root / run_id()
    taken.mkdir()
    holder = hold_lock(taken)
    try:
        pins = PinDir.create(root)
        assert pins.path.name == f"{run_id()}-1"
        assert folders(root) == {taken.name, pins.path.name}
        pins.cleanup()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_runs_folder_is_removed_by_the_next_run(root: Path) -> None:
    proc = start([*IGRUN, *TRACE], root)
    (mine,) = folders(root)
    held = bpf_ids(proc.pid)
    assert held["map_id"] and held["prog_id"]
    assert any((root / mine).rglob("*"))  # its maps are pinned there
    proc.kill()
    proc.communicate()
    assert folders(root) == {mine}  # SIGKILL: nothing ran to clean up
    done = subprocess.run(
        [*IGRUN, *TRACE, "-t", "200ms"], capture_output=True, text=True, env=env_for(root)
    )
    assert done.returncode == 0, done.stderr
    assert folders(root) == set()
    time.sleep(0.2)  # the kernel frees maps once their last reference goes
    assert [m for m in held["map_id"] if exists("map_id", m)] == []


# ---- pid namespaces ---------------------------------------------------------------------------


def child_of(pid: int) -> int:
    """The one child of ``pid`` (unshare --fork's)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for task in os.listdir(f"/proc/{pid}/task"):
            children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.05)
    raise AssertionError(f"{pid} has no child")


def test_runs_in_different_pid_namespaces_leave_each_other_alone(root: Path) -> None:
    """A run on the host, one in a new pid namespace, and a third on the host that starts and
    ends while both run: every folder of a live run stays, each run removes only its own."""
    host = start([*IGRUN, *TRACE], root)
    (host_folder,) = folders(root)
    unshare = ["unshare", "--pid", "--fork", "--mount-proc"]
    other = start([*unshare, *IGRUN, *TRACE], root)
    inner = child_of(other.pid)
    try:
        (other_folder,) = folders(root) - {host_folder}
        assert other_folder.startswith("1-")  # its pid in its own namespace
        done = subprocess.run(
            [*IGRUN, *TRACE, "-t", "200ms"], capture_output=True, text=True, env=env_for(root)
        )
        assert done.returncode == 0, done.stderr
        assert folders(root) == {host_folder, other_folder}
        again = subprocess.run(
            [*unshare, *IGRUN, *TRACE, "-t", "200ms"],
            capture_output=True,
            text=True,
            env=env_for(root),
        )
        assert again.returncode == 0, again.stderr
        assert folders(root) == {host_folder, other_folder}
        # both still work: each sees an exec
        mark = f"igrun-{uuid.uuid4().hex[:8]}"
        subprocess.run(["/bin/echo", mark], check=True, capture_output=True)
        time.sleep(0.5)
    finally:
        host.send_signal(signal.SIGINT)
        os.kill(inner, signal.SIGINT)
    host_out, host_err = host.communicate(timeout=20)
    other_out, other_err = other.communicate(timeout=20)
    assert host.returncode == 0, host_err
    assert other.returncode == 0, other_err
    assert mark in host_out and mark in other_out
    assert folders(root) == set()


# ---- SIGHUP -----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_hangup_cleans_up_like_sigterm(root: Path, sig: signal.Signals) -> None:
    """A closed terminal or ssh session: exit 0, quietly, with no pin, link or program of
    the run left."""
    proc = start([*IGRUN, *TRACE], root)
    held = bpf_ids(proc.pid)
    assert held["prog_id"] and held["link_id"] and held["map_id"]
    assert len(folders(root)) == 1
    mark = f"igrun-{uuid.uuid4().hex[:8]}"
    subprocess.run(["/bin/echo", mark], check=True, capture_output=True)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert mark in out
    assert "Traceback" not in err and "error" not in err
    assert folders(root) == set()
    time.sleep(0.2)
    left = {kind: [i for i in ids if exists(kind, i)] for kind, ids in held.items()}
    assert left == {"prog_id": [], "map_id": [], "link_id": []}


def test_a_hangup_ends_every_run_of_a_config(root: Path, tmp_path: Path) -> None:
    config = tmp_path / "two.toml"
    host = 'operators = [{name = "containers", with = {host = true}}]\n'
    config.write_text(
        f'[[run]]\ngadget = "trace exec"\n{host}\n[[run]]\ngadget = "trace open"\n{host}'
    )
    proc = subprocess.Popen(
        [*IGRUN, "--config", str(config), "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env_for(root),
    )
    assert proc.stderr is not None
    started = 0
    for line in proc.stderr:
        started += bool(READY_LINE.search(line))
        if started == 2:
            break
    held = bpf_ids(proc.pid)
    (top,) = folders(root)
    assert folders(root / top) == {"run0", "run1"}
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert folders(root) == set()
    time.sleep(0.2)
    assert [p for p in held["prog_id"] if exists("prog_id", p)] == []


def test_nohup_keeps_a_run_going_when_its_terminal_closes(root: Path) -> None:
    """SIGHUP ignored by whoever started igrun (nohup) stays ignored."""
    proc = start(
        [*IGRUN, *TRACE],
        root,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert folders(root) == set()


def test_a_hangup_ends_list_containers_watch_quietly() -> None:
    proc = subprocess.Popen(
        [*IGRUN, "list-containers", "-w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().split()[:2] == ["EVENT", "RUNTIME"]
    time.sleep(0.3)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=20)
    assert (proc.returncode, err) == (0, "")
