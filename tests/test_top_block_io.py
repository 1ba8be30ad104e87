"""top block-io in the real kernel: O_DIRECT I/O of known sizes on a loop device.

Each test makes its own loop device over a sparse file in its own temporary folder (so runs
side by side never share one) and detaches it afterwards. A child process opens the device
with O_DIRECT and, once told to go, writes WRITES blocks of IO_SIZE bytes and reads READS of
them from a page-aligned buffer: each call is one bio, one request (IO_SIZE is below the
device's max_sectors_kb, checked) and, being synchronous, never merged with the next. So the
rows of that child's pid on that device are exact: WRITES writes of WRITES * IO_SIZE bytes,
READS reads of READS * IO_SIZE bytes. They are summed over the windows, since an interval may
end in the middle of the I/O. A podman container given the device with ``--device`` writes to
it with busybox's ``dd oflag=direct`` for the container filter (``-c``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from containerlab import IMAGE, needs, unique
from test_containers import Podman

from igrun.core.plugins import PluginRegistry
from igrun.core.run.local import Run
from igrun.plugins.top_block_io import TopBlockIo
from igrun.testing import IgrunCli, marker

IO_SIZE = 64 * 1024
WRITES = 64
READS = 16
BACKING_SIZE = 16 * 1024 * 1024
INTERVAL = "500ms"
SETTLE = 1.2
"""Seconds after the I/O before the run is stopped: more than two intervals, so the window
that holds the last request has been written."""
HEADERS = ["RUNTIME.CONTAINERNAME", "PID", "COMM", "R/W", "MAJOR", "MINOR", "BYTES", "TIME", "OPS"]
"""ig's default columns of top block-io, in its order (the container's name first, empty for
the host's processes)."""

# Open the device with O_DIRECT, name itself, say ready, wait for "go"; then write and read
# whole aligned blocks (mmap memory is page-aligned, as O_DIRECT wants) and say done.
CHILD = """
import mmap, os, sys
dev, comm, size, writes, reads = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
with open("/proc/self/comm", "w") as f:
    f.write(comm)
fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, size)
buf.write(b"\\xa5" * size)
print("ready", flush=True)
sys.stdin.readline()
for i in range(writes):
    assert os.pwritev(fd, [buf], i * size) == size
for i in range(reads):
    assert os.preadv(fd, [buf], i * size) == size
os.close(fd)
print("done", flush=True)
sys.stdin.readline()
"""


@dataclass(frozen=True)
class LoopDevice:
    path: Path
    major: int
    minor: int


@contextmanager
def made_loop_device(folder: Path) -> Iterator[LoopDevice]:
    """A loop device of its own over a sparse file of its own in ``folder``, detached
    afterwards."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed")
    backing = folder / f"{marker()}.img"
    with backing.open("wb") as f:
        f.truncate(BACKING_SIZE)
    made = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True
    )
    if made.returncode != 0:
        pytest.skip(f"no loop device: {made.stderr.strip()}")
    path = Path(made.stdout.strip())
    try:
        rdev = path.stat().st_rdev
        device = LoopDevice(path, os.major(rdev), os.minor(rdev))
        queue = Path(f"/sys/dev/block/{device.major}:{device.minor}/queue")
        # One request per call: the device takes IO_SIZE whole.
        assert int((queue / "max_sectors_kb").read_text()) * 1024 >= IO_SIZE
        yield device
    finally:
        subprocess.run(["losetup", "--detach", str(path)], check=False)


@dataclass
class Child:
    proc: subprocess.Popen[str]
    comm: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def go(self) -> None:
        """Do the I/O and return when it is all done."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "done\n"


@contextmanager
def started_child(device: LoopDevice) -> Iterator[Child]:
    """The child that does the I/O on ``device``, ready (the device open) and waiting for
    go; killed afterwards."""
    comm = marker()[:15]
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(device.path), comm, str(IO_SIZE), str(WRITES),
         str(READS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield Child(proc, comm)
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[LoopDevice]:
    with made_loop_device(tmp_path) as device:
        yield device


@pytest.fixture
def child(loop_device: LoopDevice) -> Iterator[Child]:
    with started_child(loop_device) as started:
        yield started


def windows(stdout: str) -> list[list[dict[str, Any]]]:
    """Every line of ``-o json`` output: each must be one interval's array."""
    lines = [line for line in stdout.split("\n") if line]
    parsed = [json.loads(line) for line in lines]
    assert parsed, "no window was written"
    for window in parsed:
        assert isinstance(window, list), window
    return parsed


def totals(rows: list[dict[str, Any]], pid: int, device: LoopDevice) -> dict[str, list[int]]:
    """[ops, bytes, us] of ``pid`` on ``device`` by direction (``W``/``R``), over all rows."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        if (row.get("pid"), row.get("major"), row.get("minor", 0)) != (
            pid,
            device.major,
            device.minor,
        ):
            continue
        sums = out["W" if row.get("write") else "R"]
        sums[0] += row["ops"]
        sums[1] += row["bytes"]
        sums[2] += row.get("us", 0)
    return dict(out)


def assert_exact(found: dict[str, list[int]]) -> None:
    assert set(found) == {"W", "R"}, found
    writes, reads = found["W"], found["R"]
    assert writes[:2] == [WRITES, WRITES * IO_SIZE]
    assert reads[:2] == [READS, READS * IO_SIZE]
    assert writes[2] > 0 and reads[2] > 0  # microseconds from issue to completion


def sort_key(row: dict[str, Any]) -> tuple[int, int, int]:
    """ig's default sort, -ops,-bytes,-time, as a key that ascends."""
    return (-row.get("ops", 0), -row.get("bytes", 0), -row.get("us", 0))


@pytest.mark.bpf
def test_json_rows_of_the_submitter_are_exact(
    igrun_cli: IgrunCli, loop_device: LoopDevice, child: Child
) -> None:
    proc = igrun_cli.start(
        "top", "block-io", "--host", "--interval", INTERVAL, "-o", "json",
        "-F", f"pid:{child.pid}",
    )  # fmt: skip
    child.go()
    time.sleep(SETTLE)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    found = windows(out)
    rows = [row for window in found for row in window]
    assert_exact(totals(rows, child.pid, loop_device))
    for row in rows:
        assert row["comm"] == child.comm
        assert row["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
        assert "r/w" not in row and "time" not in row  # column names, not ig's JSON keys
        if not row.get("write"):
            assert "write" not in row  # false: omitempty, as ig
    for window in found:
        assert window == sorted(window, key=sort_key)  # ig's default sort, per interval
    proc.assert_released()


@pytest.mark.bpf
def test_columns_show_igs_headers_and_the_exact_rows(
    igrun_cli: IgrunCli, loop_device: LoopDevice, child: Child
) -> None:
    proc = igrun_cli.start(
        "top", "block-io", "--host", "--interval", INTERVAL, "-o", "columns",
        "-F", f"pid:{child.pid}",
    )  # fmt: skip
    child.go()
    time.sleep(SETTLE)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    headers = [line.split() for line in lines if line.split()[:1] == HEADERS[:1]]
    assert headers and all(h == HEADERS for h in headers), out
    rows: list[dict[str, Any]] = []
    for line in lines:
        cells = line.split()
        if len(cells) == len(HEADERS) - 1 and cells[0] == str(child.pid):  # no container
            _, comm, rw, major, minor, size, us, ops = cells
            assert comm == child.comm and rw in ("R", "W")
            rows.append(
                {"pid": child.pid, "write": rw == "W", "major": int(major),
                 "minor": int(minor), "bytes": int(size), "us": int(us), "ops": int(ops)}
            )  # fmt: skip
    assert_exact(totals(rows, child.pid, loop_device))


@pytest.mark.bpf
def test_the_container_filter_drops_host_io_in_the_kernel(
    igrun_cli: IgrunCli, loop_device: LoopDevice, child: Child
) -> None:
    """Without ``--host`` only the selected containers' I/O counts: the host child's is
    dropped where it is submitted, while intervals still come."""
    proc = igrun_cli.start("top", "block-io", "--interval", INTERVAL, "-o", "json")
    child.go()
    time.sleep(SETTLE)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    rows = [row for window in windows(out) for row in window]
    assert totals(rows, child.pid, loop_device) == {}
    assert all(row.get("mountnsid") != os.stat("/proc/self/ns/mnt").st_ino for row in rows)


class SmallTopBlockIo(TopBlockIo):
    stats_entries = 1

    def object_path(self) -> Any:
        return importlib.resources.files(TopBlockIo.__module__) / self.bpf_object


@pytest.mark.bpf
def test_rows_that_do_not_fit_the_map_are_reported_lost(child: Child) -> None:
    """With room for one row per interval, the child's writes and reads (two rows, in the
    same interval) cannot both be kept: the one that found the map full is counted lost."""
    from test_top import run_top

    # The I/O takes some 50 ms right after the start: all of it in the first interval.
    values = {"runtime.timeout": "2.5s", "runtime.interval": "2s"}
    windows, ctx = run_top(child.go, values, gadget=SmallTopBlockIo)
    run = ctx.resources.get(Run)
    assert run is not None
    assert windows and all(len(window) <= 1 for window in windows)
    assert run.lost_total >= 1


def test_registered_under_igs_dashed_name() -> None:
    registry = PluginRegistry()
    for name in ("top block-io", "top_block_io", "top-block-io"):
        assert registry.gadget(name) is TopBlockIo
    assert TopBlockIo.id() == "top_block_io"  # the entry point's and the module's name
    assert TopBlockIo.full_name() == "top block-io"


def test_help_shows_igs_defaults(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("top", "block-io", "--help")
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--interval INTERVAL" in text and "[default: 1s]" in text
    assert "-m MAX-ROWS, --max-rows MAX-ROWS" in text and "[default: 50]" in text
    assert "[default: -ops,-bytes,-time]" in text


@pytest.fixture
def podman(rootfs_tar: Path, tmp_path: Path) -> Iterator[Podman]:
    """podman set up for this kind of host (as tests/test_containers.py does), with the
    busybox image; the containers it ran removed afterwards."""
    needs("podman", "runc")
    conf = tmp_path / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    subprocess.run(
        ["podman", "import", "--change", 'CMD ["/bin/sh"]', str(rootfs_tar), IMAGE],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    runner = Podman(env)
    yield runner
    for name in runner.names:
        runner.stop(name)


CONTAINER_WRITES = 32


@pytest.mark.bpf
def test_a_container_is_selected_in_the_kernel_and_named(
    igrun_cli: IgrunCli, loop_device: LoopDevice, child: Child, podman: Podman
) -> None:
    """``-c``: the container's O_DIRECT writes to the device, exactly, with its name; the
    host child's I/O on the same device is not there."""
    name = unique("igrun-blk")
    podman.names.append(name)
    dev = str(loop_device.path)
    podman(
        "run", "-d", "--pull=never", "--network", "none", "--device", f"{dev}:{dev}",
        "--name", name, IMAGE, "sh", "-c", "while true; do sleep 1; done",
    )  # fmt: skip
    mntns = os.stat(f"/proc/{podman('inspect', '-f', '{{.State.Pid}}', name)}/ns/mnt").st_ino
    proc = igrun_cli.start("top", "block-io", "-c", name, "--interval", INTERVAL, "-o", "json")
    podman(
        "exec", name, "dd", "if=/dev/zero", f"of={dev}", f"bs={IO_SIZE}",
        f"count={CONTAINER_WRITES}", "oflag=direct",
    )  # fmt: skip
    child.go()
    time.sleep(SETTLE)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    rows = [row for window in windows(out) for row in window]
    assert rows and all(row["runtime"]["containerName"] == name for row in rows)
    assert all(row["mountnsid"] == mntns for row in rows)
    device = [
        r for r in rows if (r["major"], r.get("minor", 0)) == (loop_device.major, loop_device.minor)
    ]
    assert {(r["comm"], r.get("write", False)) for r in device} == {("dd", True)}
    assert sum(r["ops"] for r in device) == CONTAINER_WRITES
    assert sum(r["bytes"] for r in device) == CONTAINER_WRITES * IO_SIZE
    assert totals(rows, child.pid, loop_device) == {}
