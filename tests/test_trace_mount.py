"""trace mount in the real kernel: the test mounts and unmounts itself, through the old API and
the new one, and each event must say exactly what the call was and what it returned."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest
from gadgetlab import marker

from igrun.core.bpf.objects import Map, MapType
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_mount import TraceMount

if TYPE_CHECKING:
    from conftest import IgrunCli

    from igrun.testing import CliRun

pytestmark = pytest.mark.bpf

# <linux/mount.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_MGC_VAL = 0xC0ED0000
MNT_DETACH, UMOUNT_NOFOLLOW = 2, 8
FSOPEN_CLOEXEC = FSMOUNT_CLOEXEC = 1
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 1, 2
MOVE_MOUNT_F_EMPTY_PATH = 4
FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 1, 6
AT_FDCWD = -100
# The new mount API has the same numbers on every architecture but alpha.
SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 429, 430, 431, 432


libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.syscall.restype = ctypes.c_long


def result(ret: int) -> int:
    """A libc call's result as the kernel returned it: the value, or -errno."""
    return -ctypes.get_errno() if ret < 0 else ret


def mount(src: str, dst: str | Path, fs: str, flags: int, data: str) -> int:
    args = (src.encode(), str(dst).encode(), fs.encode(), flags, data.encode())
    return result(libc.mount(*args))


def umount2(target: str | Path, flags: int = 0) -> int:
    return result(libc.umount2(str(target).encode(), flags))


def syscall(number: int, *args: Any) -> int:
    return result(libc.syscall(ctypes.c_long(number), *args))


def fsopen(fs: str, flags: int) -> int:
    return syscall(SYS_FSOPEN, fs.encode(), ctypes.c_uint(flags))


def fsconfig(fd: int, cmd: int, key: str | None = None, value: str | None = None) -> int:
    k = key.encode() if key is not None else None
    v = value.encode() if value is not None else None
    return syscall(SYS_FSCONFIG, ctypes.c_int(fd), ctypes.c_uint(cmd), k, v, ctypes.c_int(0))


def fsmount(fd: int, flags: int, attr_flags: int) -> int:
    return syscall(SYS_FSMOUNT, ctypes.c_int(fd), ctypes.c_uint(flags), ctypes.c_uint(attr_flags))


def move_mount(from_fd: int, from_path: str, to_fd: int, to_path: str | Path, flags: int) -> int:
    return syscall(
        SYS_MOVE_MOUNT,
        ctypes.c_int(from_fd),
        from_path.encode(),
        ctypes.c_int(to_fd),
        str(to_path).encode(),
        ctypes.c_uint(flags),
    )


def mount_options(target: Path) -> list[str] | None:
    """The per-mount options of the mount at ``target`` (None when nothing is mounted there)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(target):
            return fields[5].split(",")
    return None


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Path]:
    """An empty directory to mount on, left unmounted whatever the test did."""
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    while mount_options(path) is not None:
        umount2(path, MNT_DETACH)


class Caller:
    """Who made the calls: the thread the action runs in (pid, tid and its comm)."""

    pid = 0
    tid = 0
    comm = ""

    def here(self) -> None:
        self.pid, self.tid = os.getpid(), threading.get_native_id()
        self.comm = Path(f"/proc/self/task/{self.tid}/comm").read_text().strip()


def trace(action: Callable[[], None]) -> tuple[Caller, list[dict[str, Any]]]:
    """The events of the thread that ran ``action``, in order (the host is busy: other
    processes mount too)."""
    caller = Caller()

    def run() -> None:
        caller.here()
        action()

    rows = gadgetlab.trace(TraceMount, run)
    return caller, [r for r in rows if (r["pid"], r["tid"]) == (caller.pid, caller.tid)]


def test_mount_tmpfs_event_has_exact_fields(target: Path) -> None:
    src = marker()
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    got: dict[str, Any] = {}

    def run() -> None:
        got["ret"] = mount(src, target, "tmpfs", flags, "size=1m,mode=700")
        got["options"] = mount_options(target)

    before = time.time_ns()
    caller, rows = trace(run)
    after = time.time_ns()
    assert got["ret"] == 0
    assert {"nosuid", "nodev", "noexec"} <= set(got["options"])
    (event,) = rows
    assert event["operation"] == "mount"
    assert event["pid"] == caller.pid == os.getpid()
    assert event["tid"] == caller.tid
    assert event["comm"] == caller.comm
    assert event["ret"] == 0
    assert event["fs"] == "tmpfs"
    assert event["source"] == src
    assert event["target"] == str(target)
    assert event["data"] == "size=1m,mode=700"
    assert event["flags"] == ["MS_NOSUID", "MS_NODEV", "MS_NOEXEC"]
    assert event["flagsRaw"] == flags
    assert event["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert before <= event["timestamp"] <= after
    assert 0 < event["latency"] < after - before


def test_umount_with_flags(target: Path) -> None:
    assert mount(marker(), target, "tmpfs", 0, "size=1m") == 0
    got: dict[str, int] = {}

    def run() -> None:
        got["ret"] = umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW)

    caller, rows = trace(run)
    assert got["ret"] == 0
    assert mount_options(target) is None
    (event,) = rows
    assert event["operation"] == "umount"
    assert event["pid"] == caller.pid
    assert event["comm"] == caller.comm
    assert event["ret"] == 0
    assert event["target"] == str(target)
    assert (event["source"], event["fs"], event["data"]) == ("", "", "")
    assert event["flags"] == ["MNT_DETACH", "UMOUNT_NOFOLLOW"]
    assert event["flagsRaw"] == MNT_DETACH | UMOUNT_NOFOLLOW


def test_mount_then_umount_in_order(target: Path) -> None:
    src = marker()

    def run() -> None:
        assert mount(src, target, "tmpfs", MS_RDONLY, "size=1m") == 0
        assert umount2(target) == 0

    _, rows = trace(run)
    assert [(r["operation"], r["ret"], r["target"]) for r in rows] == [
        ("mount", 0, str(target)),
        ("umount", 0, str(target)),
    ]
    assert rows[0]["flags"] == ["MS_RDONLY"]
    assert rows[1]["flags"] == [] and rows[1]["flagsRaw"] == 0
    assert rows[0]["timestamp"] < rows[1]["timestamp"]


def test_failed_calls_report_errno(tmp_path: Path) -> None:
    missing = tmp_path / marker()
    unknown_fs = f"nofs{marker()}"
    got: list[int] = []

    def run() -> None:
        got.append(mount("none", missing, "tmpfs", 0, "size=1m"))
        got.append(mount("none", tmp_path, unknown_fs, 0, ""))
        got.append(umount2(tmp_path))  # not a mount point
        got.append(fsopen(unknown_fs, 0))

    _, rows = trace(run)
    assert got == [-errno.ENOENT, -errno.ENODEV, -errno.EINVAL, -errno.ENODEV]
    assert [(r["operation"], r["ret"]) for r in rows] == [
        ("mount", -errno.ENOENT),
        ("mount", -errno.ENODEV),
        ("umount", -errno.EINVAL),
        ("fsopen", -errno.ENODEV),
    ]
    assert (rows[0]["target"], rows[0]["fs"], rows[0]["data"]) == (str(missing), "tmpfs", "size=1m")
    assert (rows[1]["target"], rows[1]["fs"]) == (str(tmp_path), unknown_fs)
    assert rows[2]["target"] == str(tmp_path)
    assert rows[3]["fs"] == unknown_fs


def test_new_mount_api(target: Path) -> None:
    """fsopen + fsmount + move_mount: the descriptor calls get their fs type and source from
    the mount the descriptor holds."""
    src = marker()
    got: dict[str, Any] = {}

    def run() -> None:
        fd = got["fsopen"] = fsopen("tmpfs", FSOPEN_CLOEXEC)
        assert fsconfig(fd, FSCONFIG_SET_STRING, "source", src) == 0
        assert fsconfig(fd, FSCONFIG_SET_STRING, "size", "1m") == 0
        assert fsconfig(fd, FSCONFIG_CMD_CREATE) == 0
        mfd = got["fsmount"] = fsmount(fd, FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
        got["move_mount"] = move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)
        got["options"] = mount_options(target)
        os.close(mfd)
        os.close(fd)

    caller, rows = trace(run)
    assert got["fsopen"] >= 0 and got["fsmount"] >= 0 and got["move_mount"] == 0
    assert {"ro", "nosuid"} <= set(got["options"])
    opened, mounted, moved = rows
    assert all(r["pid"] == caller.pid and r["comm"] == caller.comm for r in rows)

    assert opened["operation"] == "fsopen"
    assert opened["ret"] == got["fsopen"]
    assert opened["fs"] == "tmpfs"
    assert opened["flags"] == ["FSOPEN_CLOEXEC"] and opened["flagsRaw"] == FSOPEN_CLOEXEC
    assert (opened["source"], opened["target"], opened["data"]) == ("", "", "")

    assert mounted["operation"] == "fsmount"
    assert mounted["ret"] == got["fsmount"]
    assert mounted["fs"] == "tmpfs"
    assert mounted["source"] == src
    assert mounted["target"] == ""
    assert mounted["flags"] == ["FSMOUNT_CLOEXEC", "MOUNT_ATTR_RDONLY", "MOUNT_ATTR_NOSUID"]
    assert mounted["flagsRaw"] == (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID) << 32 | FSMOUNT_CLOEXEC

    assert moved["operation"] == "move_mount"
    assert moved["ret"] == 0
    assert moved["fs"] == "tmpfs"
    assert moved["source"] == src
    assert moved["target"] == str(target)
    assert moved["flags"] == ["MOVE_MOUNT_F_EMPTY_PATH"]
    assert moved["flagsRaw"] == MOVE_MOUNT_F_EMPTY_PATH


def test_move_mount_by_path(tmp_path: Path) -> None:
    """Moving an attached mount by its path: the source is that path, as given."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert mount(marker(), a, "tmpfs", 0, "size=1m") == 0
    got: list[int] = []

    def run() -> None:
        got.append(move_mount(AT_FDCWD, str(a), AT_FDCWD, b, 0))
        got.append(move_mount(AT_FDCWD, str(a), AT_FDCWD, b, 0))  # nothing there any more

    try:
        _, rows = trace(run)
    finally:
        for path in (a, b):
            while mount_options(path) is not None:
                umount2(path, MNT_DETACH)
    assert got == [0, -errno.EINVAL]
    assert [(r["operation"], r["source"], r["target"], r["ret"]) for r in rows] == [
        ("move_mount", str(a), str(b), 0),
        ("move_mount", str(a), str(b), -errno.EINVAL),
    ]
    assert rows[0]["fs"] == "" and rows[0]["flags"] == []


def test_legacy_magic_and_unnamed_bits_are_shown(tmp_path: Path) -> None:
    """MS_MGC_VAL in the high bits is named (the kernel ignores it); a bit without a name is
    shown in hex rather than dropped."""
    missing = tmp_path / marker()

    def run() -> None:
        assert mount("none", missing, "tmpfs", MS_MGC_VAL | MS_RDONLY, "") == -errno.ENOENT
        assert mount("none", missing, "tmpfs", 1 << 9 | MS_NOSUID, "") == -errno.ENOENT
        assert umount2(missing, 0x100 | MNT_DETACH) == -errno.EINVAL

    _, rows = trace(run)
    assert [r["flags"] for r in rows] == [
        ["MS_MGC_VAL", "MS_RDONLY"],
        ["MS_NOSUID", "0x200"],
        ["MNT_DETACH", "0x100"],
    ]
    assert [r["flagsRaw"] for r in rows] == [MS_MGC_VAL | MS_RDONLY, 0x202, 0x102]


def test_long_strings_are_cut_at_their_limits(tmp_path: Path) -> None:
    """Paths keep 4095 bytes and data 511 (PATH_MAX and 512 with the NUL), all three at once."""
    src, dst, data = "s" * 5000, "/" + "d" * 5000, "o" * 700
    got: list[int] = []

    def run() -> None:
        got.append(mount(src, dst, "tmpfs", 0, data))

    _, rows = trace(run)
    (event,) = rows
    assert event["ret"] == got[0] < 0
    assert event["source"] == src[:4095]
    assert event["target"] == dst[:4095]
    assert event["data"] == data[:511]
    assert event["fs"] == "tmpfs"


def test_calls_from_another_thread_carry_its_tid(tmp_path: Path) -> None:
    missing = tmp_path / marker()
    worker: dict[str, int] = {}

    def call() -> None:
        worker["tid"] = threading.get_native_id()
        mount("none", missing, "tmpfs", 0, "")

    def run() -> None:
        thread = threading.Thread(target=call)
        thread.start()
        thread.join()

    rows = gadgetlab.trace(TraceMount, run)
    (event,) = [r for r in rows if r["target"] == str(missing)]
    assert event["pid"] == os.getpid()
    assert event["tid"] == worker["tid"] != os.getpid()
    assert event["ret"] == -errno.ENOENT


def test_a_burst_of_calls_loses_nothing(tmp_path: Path) -> None:
    """Records are trimmed to their strings, so hundreds fit in the ring buffer at once."""
    missing = tmp_path / marker()
    count = 500

    def run() -> None:
        for i in range(count):
            mount("none", missing, "tmpfs", 0, f"n={i}")

    _, rows = trace(run)
    assert [r["data"] for r in rows] == [f"n={i}" for i in range(count)]
    assert {r["ret"] for r in rows} == {-errno.ENOENT}


def mount_in_new_namespace(src: str, target: Path) -> tuple[int, int]:
    """Mount a tmpfs from a child in a mount namespace of its own; its pid and namespace id.

    ``unshare`` execs the child in place (no fork), so the pid it was started with is the one
    that mounts.
    """
    code = (
        "import ctypes, os, sys; print(os.stat('/proc/self/ns/mnt').st_ino, flush=True); "
        "sys.exit(ctypes.CDLL(None).mount(*[a.encode() for a in sys.argv[1:4]], 0, None))"
    )
    argv = ["unshare", "-m", sys.executable, "-c", code, src, str(target), "tmpfs"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        out, _ = child.communicate()
    assert child.returncode == 0
    return child.pid, int(out)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_in_another_namespace_carries_its_id(target: Path) -> None:
    src = marker()
    child: dict[str, int] = {}

    def run() -> None:
        child["pid"], child["mntns"] = mount_in_new_namespace(src, target)

    rows = gadgetlab.trace(TraceMount, run)
    (event,) = [r for r in rows if r["source"] == src]
    assert event["pid"] == child["pid"]
    assert event["comm"] == Path(sys.executable).name[:15]
    assert event["mountnsid"] == child["mntns"] != os.stat("/proc/self/ns/mnt").st_ino
    assert (event["ret"], event["target"], event["fs"]) == (0, str(target), "tmpfs")
    assert mount_options(target) is None  # it stayed in the child's namespace


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces(target: Path) -> None:
    """With only the host's mount-ns in the filter map, a mount in a fresh one is dropped."""
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))
    inside, outside = marker(), marker()

    def run() -> None:
        mount_in_new_namespace(inside, target)
        assert mount(outside, target / "missing", "tmpfs", 0, "") == -errno.ENOENT

    try:
        rows = gadgetlab.trace(TraceMount, run, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
    assert all(r["mountnsid"] == host_ns for r in rows)
    assert [r for r in rows if r["source"] == inside] == []
    (event,) = [r for r in rows if r["source"] == outside]
    assert event["pid"] == os.getpid()
    assert event["ret"] == -errno.ENOENT


def assert_nothing_left(cli: IgrunCli, proc: CliRun) -> None:
    assert cli.pin_dirs_of(proc.pid) == []
    proc.assert_released()


def test_cli_columns_show_the_call_as_ig_does(igrun_cli: IgrunCli, target: Path) -> None:
    src = marker()
    proc = igrun_cli.start(
        "trace", "mount", "--host", "-F", f"pid:{os.getpid()}", "-o", "columns=flags,call"
    )
    assert mount(src, target, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") == 0
    assert umount2(target, MNT_DETACH) == 0
    fd = fsopen("tmpfs", FSOPEN_CLOEXEC)
    os.close(fd)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    lines = [line.rstrip() for line in out.splitlines()]
    header = lines[0].split()
    assert header == ["FLAGS", "CALL"]
    calls = [line[25:] for line in lines[1:]]
    flags = [line[:24].rstrip() for line in lines[1:]]
    assert calls == [
        f'mount("{src}", "{target}", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") = 0',
        f'umount("{target}", MNT_DETACH) = 0',
        f'fsopen("tmpfs", FSOPEN_CLOEXEC) = {fd}',  # the last column is never cut
    ]
    assert flags == ["MS_NOSUID | MS_NODEV", "MNT_DETACH", "FSOPEN_CLOEXEC"]
    assert_nothing_left(igrun_cli, proc)


def test_cli_json_prints_the_event(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    missing = tmp_path / marker()
    proc = igrun_cli.start("trace", "mount", "--host", "-o", "json", "-F", "op:mount", "-t", "2s")
    assert mount("none", missing, "tmpfs", MS_RDONLY, "size=1m") == -errno.ENOENT
    assert umount2(missing) == -errno.ENOENT
    out, err = proc.communicate(timeout=20)  # the run ends by itself after 2s
    assert proc.returncode == 0, err
    mine = [e for e in igrun_cli.events(out) if e["target"] == str(missing)]
    assert len(mine) == 1  # the umount is filtered out
    event = mine[0]
    assert {k: event[k] for k in ("operation", "pid", "ret", "fs", "source", "data")} == {
        "operation": "mount",
        "pid": os.getpid(),
        "ret": -errno.ENOENT,
        "fs": "tmpfs",
        "source": "none",
        "data": "size=1m",
    }
    assert event["flags"] == ["MS_RDONLY"]
    assert event["flagsRaw"] == MS_RDONLY
    assert "call" not in event  # a column made for reading, as in ig
    assert "Traceback" not in err
    assert_nothing_left(igrun_cli, proc)


def test_cli_help_lists_the_fields(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.run("trace", "mount", "--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    shown = [line for line in out.splitlines() if line.startswith("  * ")]
    listed = {line.split()[1] for line in shown if "[operator " not in line}
    assert listed == {"comm", "pid", "tid", "call"}
    assert {line.split()[1] for line in shown if "[operator " in line} == {"runtime.containerName"}
    for name in ("op", "ret", "latency", "fs", "src", "dst", "data", "flags", "mntns"):
        assert f"    {name} " in out
