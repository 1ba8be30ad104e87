"""trace fsslower in the real kernel: a child does file operations of known sizes and offsets,
and each event says exactly which operation it was, how many bytes at which offset, on which
file, and only for files of the chosen file system type."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest
from gadgetlab import marker

from igrun.core.bpf.objects import Map, MapType
from igrun.core.errors import ParamError
from igrun.core.params import Params
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_fsslower import FS_NAME_LEN, TraceFsslower

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

COMM = "fsslow-child"
WHOLE_FILE = 2**63 - 1  # what fsync reports as bytes, as Inspektor Gadget does
JSON_KEYS = {
    "timestamp",
    "mountnsid",
    "pid",
    "tid",
    "comm",
    "op",
    "bytes",
    "offset",
    "latency",
    "file",
    "truncated",
    "error",
}


def trace(action: Callable[[], None], **values: str) -> list[dict[str, Any]]:
    return gadgetlab.trace(TraceFsslower, action, values)


def fs_type(path: Path) -> str:
    """The file system type of the mount that holds ``path`` (longest mount point wins)."""
    best, kind = "", ""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        point = point.replace("\\040", " ")
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fstype
    return kind


@pytest.fixture
def ext4_dir(tmp_path: Path) -> Path:
    if fs_type(tmp_path) != "ext4":
        pytest.skip(f"{tmp_path} is not on ext4")
    return tmp_path


@pytest.fixture
def tmpfs_dir(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


class Child:
    """A Python child named ``COMM`` that runs ``code`` (with ``p`` = its first argument)."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def run(self, code: str, *args: str | Path, prefix: tuple[str, ...] = ()) -> None:
        prelude = (
            "import os, sys\n"
            f"open('/proc/self/comm', 'w').write({COMM!r})\n"
            "p = sys.argv[1] if len(sys.argv) > 1 else ''\n"
        )
        proc = subprocess.Popen([*prefix, sys.executable, "-c", prelude + code, *map(str, args)])
        self.pids.append(proc.pid)
        assert proc.wait(timeout=20) == 0

    @property
    def pid(self) -> int:
        (pid,) = self.pids
        return pid


def ops(rows: list[dict[str, Any]], name: str) -> list[tuple[str, int, int]]:
    """(op, bytes, offset) of the events on the file called ``name``, in order."""
    return [(r["op"], r["bytes"], r["offset"]) for r in rows if r["file"] == name]


def on(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["file"] == name]


def test_reads_and_writes_have_exact_sizes_and_offsets(ext4_dir: Path) -> None:
    path = ext4_dir / marker()
    child = Child()
    code = """
fd = os.open(p, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
os.write(fd, b"a" * 1000)
os.write(fd, b"b" * 234)
os.pwrite(fd, b"c" * 10, 5000)
os.writev(fd, [b"d" * 100, b"e" * 20])
os.pwritev(fd, [b"f" * 30], 6000)
os.close(fd)
fd = os.open(p, os.O_RDONLY)
os.read(fd, 600)
os.pread(fd, 100, 6000)
os.readv(fd, [bytearray(50), bytearray(50)])
os.preadv(fd, [bytearray(40)], 5990)
os.lseek(fd, 6020, os.SEEK_SET)
os.read(fd, 100)
os.read(fd, 100)
os.close(fd)
"""
    before = time.time_ns()
    rows = trace(lambda: child.run(code, path), min="0")
    after = time.time_ns()
    assert ops(rows, path.name) == [
        ("O", 0, 0),
        ("W", 1000, 0),
        ("W", 234, 1000),
        ("W", 10, 5000),  # pwrite: its own offset, the position does not move
        ("W", 120, 1234),
        ("W", 30, 6000),
        ("O", 0, 0),
        ("R", 600, 0),
        ("R", 30, 6000),  # pread past the end reads what is there
        ("R", 100, 600),
        ("R", 40, 5990),
        ("R", 10, 6020),
        ("R", 0, 6030),  # end of file
    ]
    mountns = os.stat("/proc/self/ns/mnt").st_ino
    for event in on(rows, path.name):
        assert event["pid"] == child.pid
        assert event["tid"] == child.pid
        assert event["comm"] == COMM
        assert event["mountnsid"] == mountns
        assert event["error"] == ""
        assert 0 <= event["latency"] < 5_000_000
        assert before - 1_000_000_000 <= event["timestamp"] <= after
        assert set(event) == JSON_KEYS


def test_fsync_and_fdatasync_are_reported(ext4_dir: Path) -> None:
    path = ext4_dir / marker()
    child = Child()
    code = """
fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b"x" * 4096)
os.fsync(fd)
os.write(fd, b"y" * 10)
os.fdatasync(fd)
os.close(fd)
"""
    rows = trace(lambda: child.run(code, path), min="0")
    assert ops(rows, path.name) == [
        ("O", 0, 0),
        ("W", 4096, 0),
        ("F", WHOLE_FILE, 0),
        ("W", 10, 4096),
        ("F", WHOLE_FILE, 0),
    ]
    assert {r["pid"] for r in on(rows, path.name)} == {child.pid}


def test_very_high_min_reports_nothing(ext4_dir: Path) -> None:
    """Same fsync as above; a --min no operation reaches (and one whose nanoseconds overflow
    64 bits, which must not wrap to a small threshold) hides everything."""
    for minimum in ("600000", str(2**64)):
        path = ext4_dir / marker()
        child = Child()
        code = """
fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b"x" * 4096)
os.fsync(fd)
os.close(fd)
"""
        rows = trace(lambda: child.run(code, path), min=minimum)  # noqa: B023
        assert on(rows, path.name) == []
        assert [r for r in rows if r["pid"] == child.pid] == []


def test_min_keeps_only_the_slow_open(ext4_dir: Path) -> None:
    """An open blocks while another process holds a write lease on the file, until that one
    lets go (0.5 s after the kernel told it, by SIGIO, that someone waits): with --min 200 that
    open is reported, and the quick operations before it are not."""
    leased, quick = ext4_dir / marker(), ext4_dir / marker()
    leased.write_bytes(b"leased")
    holder_code = """
import fcntl, os, signal, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGIO])
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print("ready", flush=True)
assert signal.sigtimedwait([signal.SIGIO], 15) is not None
time.sleep(0.5)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
"""
    code = """
fd = os.open(sys.argv[2], os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b"quick")
os.close(fd)
fd = os.open(p, os.O_RDONLY)
os.close(fd)
"""
    child = Child()

    def run() -> None:
        holder = subprocess.Popen(
            [sys.executable, "-c", holder_code, str(leased)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline() == "ready\n"
            child.run(code, leased, quick)
        finally:
            assert holder.wait(timeout=20) == 0

    rows = trace(run, min="200")
    assert on(rows, quick.name) == []
    (event,) = on(rows, leased.name)
    assert (event["op"], event["bytes"], event["offset"]) == ("O", 0, 0)
    assert event["pid"] == child.pid
    assert event["comm"] == COMM
    assert 500_000 <= event["latency"] < 15_000_000


def test_filesystem_selects_ext4_or_tmpfs(ext4_dir: Path, tmpfs_dir: Path) -> None:
    on_ext4, on_tmpfs = ext4_dir / marker(), tmpfs_dir / marker()
    assert fs_type(on_tmpfs) == "tmpfs"
    code = """
for path in sys.argv[1:]:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b"hello")
    os.close(fd)
"""
    for fs, seen, unseen in (("ext4", on_ext4, on_tmpfs), ("tmpfs", on_tmpfs, on_ext4)):
        child = Child()
        rows = trace(lambda: child.run(code, on_ext4, on_tmpfs), min="0", filesystem=fs)  # noqa: B023
        assert ops(rows, seen.name) == [("O", 0, 0), ("W", 5, 0)], fs
        assert ops(rows, unseen.name) == [], fs
        assert {r["pid"] for r in on(rows, seen.name)} == {child.pid}


def test_failed_calls_carry_the_errno_and_failed_opens_are_not_reported(ext4_dir: Path) -> None:
    path, missing = ext4_dir / marker(), ext4_dir / marker()
    path.write_bytes(b"0123456789")
    child = Child()
    code = """
import errno
fd = os.open(p, os.O_RDONLY)
try:
    os.write(fd, b"x")
except OSError as e:
    assert e.errno == errno.EBADF
os.lseek(fd, 4, os.SEEK_SET)
assert os.read(fd, 3) == b"456"
os.close(fd)
try:
    os.open(sys.argv[2], os.O_RDONLY)
except FileNotFoundError:
    pass
"""
    rows = trace(lambda: child.run(code, path, missing), min="0")
    mine = on(rows, path.name)
    assert [(r["op"], r["bytes"], r["offset"], r["error"]) for r in mine] == [
        ("O", 0, 0, ""),
        ("W", 0, 0, "EBADF"),
        ("R", 3, 4, ""),
    ]
    assert on(rows, missing.name) == []


def test_directories_count_for_fsync_only(ext4_dir: Path) -> None:
    folder = ext4_dir / marker()
    folder.mkdir()
    child = Child()
    code = """
fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
os.fsync(fd)
os.close(fd)
"""
    rows = trace(lambda: child.run(code, folder), min="0")
    assert ops(rows, folder.name) == [("F", WHOLE_FILE, 0)]
    assert on(rows, folder.name)[0]["pid"] == child.pid


def test_overlay_files_count_as_the_file_system_below(ext4_dir: Path) -> None:
    """A container's files are on an overlay mount: they are found through the real file."""
    layers = {name: ext4_dir / name for name in ("lower", "upper", "work", "merged")}
    for folder in layers.values():
        folder.mkdir()
    name = marker()
    (layers["lower"] / name).write_bytes(b"from the lower layer")
    options = "lowerdir={lower},upperdir={upper},workdir={work}".format(**layers)
    mounted = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(layers["merged"])],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount overlay: {mounted.stderr.decode().strip()}")
    code = """
fd = os.open(p, os.O_RDONLY)
assert os.read(fd, 100) == b"from the lower layer"
os.close(fd)
"""
    try:
        results = {}
        for fs in ("ext4", "overlay", "tmpfs"):
            child = Child()
            rows = trace(lambda: child.run(code, layers["merged"] / name), min="0", filesystem=fs)  # noqa: B023
            results[fs] = ops([r for r in rows if r["pid"] == child.pid], name)
    finally:
        subprocess.run(["umount", str(layers["merged"])], check=True)
    assert results["ext4"] == [("O", 0, 0), ("R", 20, 0)]
    assert results["overlay"] == [("O", 0, 0), ("R", 20, 0)]
    assert results["tmpfs"] == []


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces(ext4_dir: Path) -> None:
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))
    inside, outside = ext4_dir / marker(), ext4_dir / marker()
    code = """
fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b"hi")
os.close(fd)
"""
    child = Child()

    def run() -> None:
        child.run(code, inside, prefix=("unshare", "-m"))
        child.run(code, outside)

    try:
        rows = gadgetlab.trace(
            TraceFsslower, run, {"min": "0"}, resources=[MntnsFilter(filter_map)]
        )
    finally:
        filter_map.close()
    assert on(rows, inside.name) == []
    assert ops(rows, outside.name) == [("O", 0, 0), ("W", 2, 0)]
    assert {r["mountnsid"] for r in on(rows, outside.name)} == {host_ns}


def constants(**values: str) -> dict[str, Any]:
    params = Params(TraceFsslower.params, values)
    ctx = SimpleNamespace(gadget_params=params)
    return TraceFsslower().constants(ctx)  # type: ignore[arg-type]


def test_params_become_the_object_globals() -> None:
    """ig's defaults (10 ms, ext4); nfs also covers NFSv4 mounts (type nfs4), as ig's does."""
    assert constants() == {
        "min_lat_ns": 10_000_000,
        "target_fs": b"ext4".ljust(FS_NAME_LEN, b"\0"),
        "target_fs_alt": bytes(FS_NAME_LEN),
    }
    nfs = constants(min="25", filesystem="nfs")
    assert nfs["min_lat_ns"] == 25_000_000
    assert nfs["target_fs"] == b"nfs".ljust(FS_NAME_LEN, b"\0")
    assert nfs["target_fs_alt"] == b"nfs4".ljust(FS_NAME_LEN, b"\0")
    for bad in ("", "ext 4", "x" * FS_NAME_LEN):
        with pytest.raises(ParamError, match="--filesystem"):
            constants(filesystem=bad)
    with pytest.raises(ParamError, match="--min"):
        constants(min="-1")


def test_cli_help_lists_the_fields(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.run("trace", "fsslower", "--help")
    assert proc.returncode == 0, proc.stderr
    fields = proc.stdout.split("fields (")[1]
    for name in ("pid", "comm", "T", "bytes", "offset", "lat", "file"):
        assert f"* {name} " in fields
    for name in ("timestamp", "mntns", "tid", "error"):
        assert f"  {name} " in fields
    assert "-f FILESYSTEM, --filesystem FILESYSTEM" in proc.stdout
    assert "--min MIN" in proc.stdout


def test_cli_prints_the_event_as_json(igrun_cli: IgrunCli, tmpfs_dir: Path) -> None:
    """On a tmpfs of its own (-f tmpfs), where the rest of the host writes little."""
    path = tmpfs_dir / marker()
    proc = igrun_cli.start("trace", "fsslower", "--host", "-o", "json", "--min", "0", "-f", "tmpfs")
    child = Child()
    child.run("fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o600)\nos.write(fd, b'12345678')", path)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    events = igrun_cli.events(out)
    assert [e for e in events if e["type"] != "normal"] == []  # no warning (lost events)
    mine = [e for e in events if e.get("file") == path.name]
    # 0 is left out, as ig leaves it out (omitempty)
    assert [(e["op"], e.get("bytes"), e.get("offset")) for e in mine] == [
        ("O", None, None),
        ("W", 8, None),
    ]
    assert {(e["pid"], e["comm"], e["latency"] >= 0) for e in mine} == {(child.pid, COMM, True)}
    assert "Traceback" not in err
    assert igrun_cli.pin_dirs_of(proc.pid) == []
