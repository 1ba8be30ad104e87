"""trace oomkill in the real kernel: children in a small memory cgroup run out of memory.

Each test makes its own memory cgroup (cgroup v1's memory controller, or cgroup v2 with the
memory controller) with a small limit and no swap, starts Python children in it and keeps only
the events of those children (by pid), since anything else on the host may be killed too.

A child starts, names itself (its comm), says ``ready`` and waits: the test then moves it into
the cgroup (and sets its OOM score) before telling it to go, so no preexec hook runs in a
threaded parent and nothing the child allocated before counts against the limit.
"""

from __future__ import annotations

import mmap
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest

from igrun.core.bpf.objects import Map, MapType
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_oomkill import TraceOomkill

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

PYTHON = sys.executable
MB = 1 << 20
PAGE = mmap.PAGESIZE
PAGES_PER_MB = MB // PAGE
LIMIT_MB = 80
TUID, TGID = 4242, 4343
# mm counters are per-cpu; /proc and the tracepoint may each miss up to a batch per CPU.
COUNTER_SLACK = 3 * 64 * (os.cpu_count() or 1)

# Name itself, take the user and group ids `uid`/`gid` (-1: keep), say ready, wait for "go",
# then allocate `mb` MiB (forever when mb < 0), touching every page and printing the MiB held
# after each. Then `then`: "hold" waits to be killed, "exit" ends. (Python starts as root: the
# interpreter may live where other users cannot read.)
CHILD = f"""
import os, sys
name, mb, then, uid, gid = sys.argv[1], int(sys.argv[2]), sys.argv[3], *map(int, sys.argv[4:])
with open("/proc/self/comm", "w") as f:  # first: a process that changed ids cannot
    f.write(name)
if uid >= 0:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
print("ready", flush=True)
sys.stdin.readline()
held = []
while mb < 0 or len(held) < mb:
    block = bytearray({MB})
    block[::{PAGE}] = b"\\1" * len(block[::{PAGE}])
    held.append(block)
    print(len(held), flush=True)
if then == "hold":
    print("held", flush=True)
    sys.stdin.readline()
"""


def cgroup_mounts() -> tuple[Path | None, str, Path | None]:
    """Where the v1 memory hierarchy is mounted and which of its cgroups is the mount's root;
    where the v2 hierarchy is mounted."""
    v1, v1_root, v2 = None, "/", None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, kind = left.split(), right.split()
        if len(kind) < 3:
            continue
        if kind[0] == "cgroup" and "memory" in kind[2].split(","):
            v1, v1_root = Path(fields[4]), fields[3]
        elif kind[0] == "cgroup2" and v2 is None:
            v2 = Path(fields[4])
    return v1, v1_root, v2


def own_memory_cgroup() -> str:
    """This process's cgroup in the v1 memory hierarchy."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if "memory" in names.split(","):
            return path
    return "/"


@dataclass
class MemCgroup:
    """A memory cgroup made for one test."""

    path: Path
    v2: bool

    def set_limit(self, limit: int) -> None:
        if self.v2:
            (self.path / "memory.max").write_text(str(limit))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
            return
        (self.path / "memory.limit_in_bytes").write_text(str(limit))
        memsw = self.path / "memory.memsw.limit_in_bytes"
        if memsw.exists():  # memory + swap: no more than memory, so nothing is swapped out
            memsw.write_text(str(limit))
        (self.path / "memory.oom_control").write_text("0")  # v1 inherits oom_kill_disable

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:  # EBUSY until the last killed child is gone
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def make_memcg() -> MemCgroup | str:
    """A fresh memory cgroup, or why none can be made here."""
    name = f"igrun-oom-{uuid.uuid4().hex[:8]}"
    v1, v1_root, v2 = cgroup_mounts()
    if v1 is not None:
        # Under this process's own cgroup when the mount shows it, so it stays in our budget.
        own = own_memory_cgroup()
        rel = os.path.relpath(own, v1_root) if own.startswith(v1_root) else "."
        parent = (v1 / rel).resolve()
        if not parent.is_dir() or not str(parent).startswith(str(v1)):
            parent = v1
        path = parent / name
        path.mkdir()
        return MemCgroup(path, v2=False)
    if v2 is not None and "memory" in (v2 / "cgroup.subtree_control").read_text().split():
        # The root's children have the memory controller (the host's setup, left as it is).
        path = v2 / name
        path.mkdir()
        return MemCgroup(path, v2=True)
    return "no memory cgroup controller here (v1, or v2 enabled for the root's children)"


@pytest.fixture
def memcg() -> Iterator[MemCgroup]:
    made = make_memcg()
    if isinstance(made, str):
        pytest.skip(made)
    made.set_limit(LIMIT_MB * MB)
    try:
        yield made
    finally:
        for pid in (made.path / "cgroup.procs").read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        made.remove()


class Child:
    """A Python child that allocates on request in a memory cgroup."""

    def __init__(
        self,
        name: str,
        mb: int,
        then: str = "exit",
        prefix: tuple[str, ...] = (),
        ids: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        uid, gid = ids or (-1, -1)
        self.proc = subprocess.Popen(
            [*prefix, PYTHON, "-c", CHILD, name, str(mb), then, str(uid), str(gid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.held_mb = 0
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def status_kb(self, key: str) -> int:
        """A memory line of /proc/PID/status, in kB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {key} in /proc/{self.pid}/status")

    def start_in(self, cg: MemCgroup, oom_score_adj: int = 0) -> None:
        cg.add(self.pid)
        Path(f"/proc/{self.pid}/oom_score_adj").write_text(str(oom_score_adj))
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait_until(self, word: str) -> None:
        """Read the child's progress up to ``word`` (or its end), keeping the MiB it held."""
        while True:
            line = self.readline()
            if line.isdigit():
                self.held_mb = int(line)
            elif line == word or line == "":
                return

    def wait(self) -> int:
        """Its exit status, once it ended (killed or done)."""
        self.wait_until("")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.stdout.close()
        return self.proc.wait(timeout=60)


def comm() -> str:
    return f"oom{uuid.uuid4().hex[:8]}"


def trace(
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
) -> list[dict[str, Any]]:
    return gadgetlab.trace(TraceOomkill, action, values, resources)


def killed(rows: list[dict[str, Any]], pid: int) -> list[dict[str, Any]]:
    return [r for r in rows if r["kpid"] == pid]


def host_mntns() -> int:
    return os.stat("/proc/self/ns/mnt").st_ino


def run_to_death(cg: MemCgroup, name: str, prefix: tuple[str, ...] = ()) -> Child:
    """A child that allocates until the OOM killer kills it, for its own allocation."""
    child = Child(name, -1, prefix=prefix, ids=(TUID, TGID))
    child.start_in(cg)
    assert child.wait() == -signal.SIGKILL
    return child


def test_self_inflicted_kill_has_exact_fields(memcg: MemCgroup) -> None:
    """A child that allocates past the limit is both the trigger and the victim."""
    name = comm()
    box: dict[str, Any] = {}

    def run() -> None:
        child = Child(name, -1, ids=(TUID, TGID))
        box["base_kb"] = child.status_kb("VmRSS")
        child.start_in(memcg)
        box["rc"] = child.wait()
        box["child"] = child

    before = time.time_ns()
    rows = trace(run)
    after = time.time_ns()
    child: Child = box["child"]
    assert box["rc"] == -signal.SIGKILL
    (event,) = killed(rows, child.pid)
    assert event["kpid"] == child.pid
    assert event["kcomm"] == name
    assert event["tpid"] == child.pid
    assert event["tcomm"] == name
    assert event["tuid"] == TUID
    assert event["tgid"] == TGID
    assert event["mountnsid"] == host_mntns()
    assert before - 1_000_000_000 <= event["timestamp"] <= after
    # It held at least the MiB it reported, and at most those, one more, and what it had.
    assert child.held_mb >= LIMIT_MB // 2
    low = child.held_mb * PAGES_PER_MB
    high = (box["base_kb"] * 1024) // PAGE + (child.held_mb + 1) * PAGES_PER_MB
    assert low - COUNTER_SLACK <= event["pages"] <= high + COUNTER_SLACK
    assert event["pages"] <= (LIMIT_MB * MB) // PAGE + (box["base_kb"] * 1024) // PAGE


def test_trigger_and_victim_are_told_apart(memcg: MemCgroup) -> None:
    """A hog that sits on memory is killed when another child's allocation fails."""
    hog_name, trigger_name = comm(), comm()
    # Only what they allocate once in the cgroup counts: together more than the limit, the
    # trigger alone well below it.
    hog_mb, trigger_mb = LIMIT_MB // 2, LIMIT_MB * 3 // 5
    box: dict[str, Any] = {}

    def run() -> None:
        hog = Child(hog_name, hog_mb, then="hold")
        hog.start_in(memcg, oom_score_adj=1000)  # the one to kill
        hog.wait_until("held")
        box["rss_kb"] = hog.status_kb("VmRSS")
        box["anon_kb"] = hog.status_kb("RssAnon")
        trigger = Child(trigger_name, trigger_mb, ids=(TUID, TGID))
        trigger.start_in(memcg)  # it has far less than the hog's score: it finishes
        box["trigger_rc"] = trigger.wait()
        box["hog_rc"] = hog.wait()
        box["hog"], box["trigger"] = hog, trigger

    rows = trace(run)
    hog: Child = box["hog"]
    trigger: Child = box["trigger"]
    assert box["hog_rc"] == -signal.SIGKILL
    assert box["trigger_rc"] == 0
    assert trigger.held_mb == trigger_mb
    assert killed(rows, trigger.pid) == []
    (event,) = killed(rows, hog.pid)
    assert event["kpid"] == hog.pid
    assert event["kcomm"] == hog_name
    assert event["tpid"] == trigger.pid
    assert event["tcomm"] == trigger_name
    assert event["tuid"] == TUID
    assert event["tgid"] == TGID
    assert event["mountnsid"] == host_mntns()
    # What the hog had resident when it was chosen: all it allocated, at most its RSS.
    assert event["pages"] >= hog_mb * PAGES_PER_MB
    anon, rss = box["anon_kb"] * 1024 // PAGE, box["rss_kb"] * 1024 // PAGE
    assert anon - COUNTER_SLACK <= event["pages"] <= rss + COUNTER_SLACK


def test_gadget_has_the_fields_and_no_params_of_inspektor_gadget() -> None:
    """kpid/kcomm is the killed process, tpid/tcomm the trigger; ig has no params here."""
    assert TraceOomkill.params == ()
    schema = TraceOomkill.schema
    assert [f.name for f in schema.default_columns()] == [
        "kpid",
        "kcomm",
        "pages",
        "tpid",
        "tcomm",
    ]
    assert [f.json_key for f in schema] == [
        "timestamp",
        "mountnsid",
        "kpid",
        "kcomm",
        "pages",
        "tpid",
        "tuid",
        "tgid",
        "tcomm",
    ]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces(memcg: MemCgroup) -> None:
    """With only the host's mount-ns in the filter map, a kill in a fresh one is dropped."""
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_mntns()), struct.pack("<I", 1))
    box: dict[str, Child] = {}

    def run() -> None:
        # unshare execs Python in the same process: the child's pid is unshare's.
        box["inside"] = run_to_death(memcg, comm(), prefix=("unshare", "-m"))
        box["outside"] = run_to_death(memcg, comm())

    try:
        rows = trace(run, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
    assert killed(rows, box["inside"].pid) == []
    (event,) = killed(rows, box["outside"].pid)
    assert event["kcomm"] == box["outside"].name
    assert event["mountnsid"] == host_mntns()


def test_cli_prints_the_kill_as_json(igrun_cli: IgrunCli, memcg: MemCgroup) -> None:
    proc = igrun_cli.start("trace", "oomkill", "--host", "-o", "json")
    try:
        child = run_to_death(memcg, comm())
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    (event,) = [e for e in igrun_cli.events(out) if e["kpid"] == child.pid]
    assert event["kcomm"] == child.name
    assert event["tpid"] == child.pid
    assert event["tcomm"] == child.name
    assert event["tuid"] == TUID and event["tgid"] == TGID
    assert event["pages"] >= child.held_mb * PAGES_PER_MB - COUNTER_SLACK
    assert "Traceback" not in err
    assert igrun_cli.pin_dirs_of(proc.pid) == []
