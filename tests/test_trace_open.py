"""trace open in the real kernel: the test opens files, and each event says exactly what happened.

Events are picked out by a path holding a unique marker, since the host opens files all the
time; every open is made by the test itself (or a child it started), so pid, fd and errno are
known exactly.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest
from gadgetlab import marker

from igrun.core import ParamError
from igrun.core.bpf.objects import Map, MapType
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_open import TraceOpen, decode_flags, format_mode

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

SYS_OPEN = 2  # x86_64
SYS_OPENAT2 = 437
AT_FDCWD = -100
O_TMPFILE = 0o20000000 | os.O_DIRECTORY
COMM = Path("/proc/self/comm").read_text().strip()
libc = ctypes.CDLL(None, use_errno=True)


def trace(
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
) -> list[dict[str, Any]]:
    return gadgetlab.trace(TraceOpen, action, values, resources)


def of(rows: list[dict[str, Any]], path: str | Path) -> list[dict[str, Any]]:
    return [r for r in rows if r["path"] == str(path)]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with a unique name, by its real path (the kernel's dentries know no symlinks)."""
    folder = Path(os.path.realpath(tmp_path)) / marker()
    folder.mkdir()
    return folder


def in_child(body: Callable[[], int]) -> Callable[[], dict[str, int]]:
    """An action that forks, runs ``body`` in the child and records the child's pid and the
    number ``body`` returns (an fd, an errno)."""
    seen: dict[str, int] = {}

    def run() -> dict[str, int]:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(read_end)
                os.write(write_end, struct.pack("<i", body()))
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_end)
        data = os.read(read_end, 4)
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
        assert status == 0 and len(data) == 4
        seen["pid"] = pid
        (seen["value"],) = struct.unpack("<i", data)
        return seen

    return run


def open_fd(path: str | Path, flags: int, mode: int = 0o777) -> Callable[[], int]:
    def body() -> int:
        return os.open(path, flags, mode)

    return body


def errno_of(call: Callable[[], int]) -> Callable[[], int]:
    def body() -> int:
        try:
            call()
        except OSError as exc:
            return exc.errno or 0
        return 0

    return body


def raw_open(path: str | Path, flags: int, mode: int) -> int:
    """The legacy open(2) syscall (glibc's open() is openat)."""
    fd = libc.syscall(SYS_OPEN, os.fsencode(path), flags, mode)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "open")
    return int(fd)


class OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(path: str | Path, flags: int, mode: int = 0) -> int:
    how = OpenHow(flags, mode, 0)
    fd = libc.syscall(
        SYS_OPENAT2, AT_FDCWD, os.fsencode(path), ctypes.byref(how), ctypes.sizeof(how)
    )
    if fd < 0:
        raise OSError(ctypes.get_errno(), "openat2")
    return int(fd)


# -- the event


def test_open_event_has_exact_fields(work: Path) -> None:
    path = work / "created"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    child = in_child(open_fd(path, flags, 0o640))
    seen: dict[str, int] = {}

    before = time.time_ns()
    (event,) = of(trace(lambda: seen.update(child())), path)
    after = time.time_ns()
    assert event["pid"] == seen["pid"]
    assert event["tid"] == seen["pid"]
    assert event["uid"] == os.getuid()
    assert event["gid"] == os.getgid()
    assert event["comm"] == COMM
    assert event["fd"] == seen["value"] >= 3
    assert event["err"] == 0
    assert event["ret"] == event["fd"]  # what open returned, as ig's ret
    assert event["flags"] == ["O_WRONLY", "O_CREAT", "O_EXCL", "O_CLOEXEC"]
    assert event["flagsRaw"] == flags
    assert event["mode"] == "-rw-r-----"
    assert event["modeRaw"] == 0o640
    assert event["path"] == str(path)
    assert event["fullPath"] == ""  # only with --full-path
    assert event["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert before - 1_000_000_000 <= event["timestamp"] <= after
    assert set(event) == {
        "timestamp",
        "mountnsid",
        "pid",
        "tid",
        "uid",
        "gid",
        "comm",
        "fd",
        "ret",
        "err",
        "flags",
        "flagsRaw",
        "mode",
        "modeRaw",
        "path",
        "fullPath",
    }


def test_program_opening_a_file(work: Path) -> None:
    """cat opens its argument with openat(AT_FDCWD, path, O_RDONLY) as its first free fd."""
    path = work / "read-me"
    path.write_text("hello\n")
    child: dict[str, int] = {}

    def run() -> None:
        proc = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL)
        child["pid"] = proc.pid
        assert proc.wait() == 0

    (event,) = of(trace(run), path)
    assert event["pid"] == event["tid"] == child["pid"]
    assert event["comm"] == "cat"
    assert (event["fd"], event["err"]) == (3, 0)
    assert event["flags"] == ["O_RDONLY"]
    assert (event["flagsRaw"], event["mode"], event["modeRaw"]) == (0, "----------", 0)


@pytest.mark.parametrize(
    ("where", "code"),
    [("missing/file", errno.ENOENT), ("file/below-a-file", errno.ENOTDIR)],
)
def test_failed_open_reports_errno(work: Path, where: str, code: int) -> None:
    (work / "file").write_text("")
    path = work / where
    child = in_child(errno_of(open_fd(path, os.O_RDONLY)))
    seen: dict[str, int] = {}

    (event,) = of(trace(lambda: seen.update(child())), path)
    assert seen["value"] == code
    assert event["pid"] == seen["pid"]
    assert (event["err"], event["fd"]) == (code, 0)
    assert event["flags"] == ["O_RDONLY", "O_CLOEXEC"]


def test_thread_id_of_an_open_in_a_thread(work: Path) -> None:
    path = work / "threaded"
    path.write_text("")
    seen: dict[str, int] = {}

    def opener() -> None:
        seen["tid"] = threading.get_native_id()
        os.close(os.open(path, os.O_RDONLY))

    def run() -> None:
        thread = threading.Thread(target=opener)
        thread.start()
        thread.join()

    (event,) = of(trace(run), path)
    assert event["pid"] == os.getpid()
    assert event["tid"] == seen["tid"] != os.getpid()


def test_legacy_open_syscall_is_traced(work: Path) -> None:
    """open(2) itself, with a mode the kernel ignores without O_CREAT (so it reports none)."""
    created, plain = work / "legacy-created", work / "legacy-plain"
    plain.write_text("")

    def run() -> None:
        os.close(raw_open(created, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o4751))
        os.close(raw_open(plain, os.O_RDONLY | os.O_NOFOLLOW, 0o777))

    rows = trace(run)
    (made,) = of(rows, created)
    assert made["flags"] == ["O_RDWR", "O_CREAT", "O_TRUNC"]
    assert made["modeRaw"] == 0o4751
    assert made["mode"] == "-rwxr-x--x"  # Go's fs.FileMode shows no setuid for a raw 04000
    (read,) = of(rows, plain)
    assert read["flags"] == ["O_RDONLY", "O_NOFOLLOW"]
    assert (read["modeRaw"], read["mode"]) == (0, "----------")
    assert made["err"] == read["err"] == 0


def test_openat2_reads_flags_and_mode_from_open_how(work: Path) -> None:
    created, missing = work / "how-created", work / "how-missing"
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    seen: dict[str, int] = {}

    def run() -> None:
        fd = openat2(created, flags, 0o600)
        seen["fd"] = fd
        os.close(fd)
        with pytest.raises(FileNotFoundError):
            openat2(missing, os.O_RDONLY | os.O_DIRECTORY)

    rows = trace(run)
    (made,) = of(rows, created)
    assert made["fd"] == seen["fd"]
    assert made["flagsRaw"] == flags
    assert made["flags"] == ["O_WRONLY", "O_CREAT", "O_APPEND", "O_CLOEXEC"]
    assert (made["modeRaw"], made["mode"]) == (0o600, "-rw-------")
    (failed,) = of(rows, missing)
    assert (failed["err"], failed["fd"]) == (errno.ENOENT, 0)
    assert failed["flags"] == ["O_RDONLY", "O_DIRECTORY"]


def test_tmpfile_has_a_mode(work: Path) -> None:
    seen: dict[str, int] = {}

    def run() -> None:
        try:
            fd = os.open(work, O_TMPFILE | os.O_RDWR, 0o600)
        except OSError as exc:  # not every file system has O_TMPFILE
            seen["errno"] = exc.errno or 0
            return
        os.close(fd)

    (event,) = of(trace(run), work)
    if seen:
        pytest.skip(f"no O_TMPFILE here: {os.strerror(seen['errno'])}")
    assert event["flags"] == ["O_RDWR", "O_DIRECTORY", "O_CLOEXEC", "__O_TMPFILE"]
    assert (event["modeRaw"], event["mode"]) == (0o600, "-rw-------")


def test_burst_of_opens_is_all_there(work: Path) -> None:
    """Hundreds of events in few batches: decoded together, none lost, none mixed up."""
    paths = [work / f"f{i:03}{'x' * (i % 50)}" for i in range(400)]
    fds: dict[str, int] = {}

    def run() -> None:
        for i, path in enumerate(paths):
            flags = os.O_WRONLY | os.O_CREAT if i % 2 else os.O_RDWR | os.O_CREAT | os.O_TRUNC
            fd = os.open(path, flags, 0o600 + i % 8)
            fds[str(path)] = fd
            os.close(fd)

    rows = [r for r in trace(run) if r["path"].startswith(str(work))]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for i, row in enumerate(rows):
        assert row["fd"] == fds[row["path"]]
        assert row["modeRaw"] == 0o600 + i % 8
        assert row["flags"] == (
            ["O_WRONLY", "O_CREAT", "O_CLOEXEC"]
            if i % 2
            else ["O_RDWR", "O_CREAT", "O_TRUNC", "O_CLOEXEC"]
        )


# -- --failed


def test_failed_shows_only_failed_opens(work: Path) -> None:
    good, bad = work / "exists", work / "missing"
    good.write_text("")

    def run() -> None:
        os.close(os.open(good, os.O_RDONLY))
        with pytest.raises(FileNotFoundError):
            os.open(bad, os.O_RDONLY)

    rows = trace(run, {"failed": "true"})
    assert of(rows, good) == []
    (event,) = of(rows, bad)
    assert event["err"] == errno.ENOENT
    assert all(r["err"] > 0 for r in rows)


# -- --full-path


def chdir_and_open(folder: str | Path, rel: str, dir_fd: int | None = None) -> Callable[[], int]:
    def body() -> int:
        os.chdir(folder)
        return os.open(rel, os.O_RDONLY, dir_fd=dir_fd)

    return body


def test_full_path_joins_a_relative_path_to_the_working_directory(work: Path) -> None:
    (work / "sub").mkdir()
    (work / "sub" / "file").write_text("")
    (work / "top").write_text("")
    seen: dict[str, int] = {}
    first = in_child(chdir_and_open(work / "sub", "file"))
    dotted = in_child(chdir_and_open(work / "sub", "../top"))

    def run() -> None:
        seen.update(first())
        dotted()

    rows = trace(run, {"full-path": "true"})
    (event,) = [r for r in rows if r["pid"] == seen["pid"] and r["path"] == "file"]
    assert event["fullPath"] == f"{work}/sub/file"
    assert event["fd"] == seen["value"]
    (up,) = [r for r in rows if r["path"] == "../top" and r["fullPath"].startswith(str(work))]
    assert up["fullPath"] == f"{work}/sub/../top"  # as written: the kernel resolves ".."


def test_long_paths_are_kept_up_to_4095_bytes(work: Path) -> None:
    """Both strings share one trimmed record: each is whole up to PATH_MAX - 1 bytes."""
    rel = "/".join(["n" * 200] * 20) + "/" + marker()  # 4 kB, missing: ENOENT
    too_long = str(work) + "/" + "x" * 5000  # longer than PATH_MAX: ENAMETOOLONG
    seen: dict[str, int] = {}
    child = in_child(errno_of(chdir_and_open(work, rel)))

    def run() -> None:
        seen.update(child())
        with pytest.raises(OSError) as info:
            os.open(too_long, os.O_RDONLY)
        assert info.value.errno == errno.ENAMETOOLONG

    rows = trace(run, {"full-path": "true"})
    (event,) = of(rows, rel)
    assert (event["pid"], event["err"]) == (seen["pid"], errno.ENOENT)
    assert len(f"{work}/{rel}") > 4095  # the full path is cut, the path is not
    assert event["fullPath"] == f"{work}/{rel}"[:4095]
    (cut,) = [r for r in rows if r["path"] == too_long[:4095]]
    assert (cut["err"], cut["fullPath"]) == (errno.ENAMETOOLONG, too_long[:4095])


def test_full_path_of_an_absolute_path_is_the_path(work: Path) -> None:
    path = work / "absolute"

    def run() -> None:
        with pytest.raises(FileNotFoundError):
            os.open(path, os.O_RDONLY)

    (event,) = of(trace(run, {"full-path": "true"}), path)
    assert event["fullPath"] == str(path)


def test_full_path_uses_the_directory_of_openat_dirfd(work: Path) -> None:
    (work / "dir").mkdir()
    (work / "dir" / "inside").write_text("")
    seen: dict[str, int] = {}

    def run() -> None:
        dfd = os.open(work / "dir", os.O_RDONLY | os.O_DIRECTORY)
        try:
            fd = os.open("inside", os.O_RDONLY, dir_fd=dfd)
            seen["fd"] = fd
            os.close(fd)
            with pytest.raises(FileNotFoundError):
                os.open("not-inside", os.O_RDONLY, dir_fd=dfd)
        finally:
            os.close(dfd)

    rows = trace(run, {"full-path": "true"})
    (event,) = [r for r in rows if r["path"] == "inside" and r["pid"] == os.getpid()]
    assert event["fullPath"] == f"{work}/dir/inside"
    assert event["fd"] == seen["fd"]
    (missing,) = [r for r in rows if r["path"] == "not-inside" and r["pid"] == os.getpid()]
    assert missing["fullPath"] == f"{work}/dir/not-inside"
    assert missing["err"] == errno.ENOENT


def test_full_path_of_a_bad_dirfd_is_left_as_passed(work: Path) -> None:
    name = marker()

    def run() -> None:
        with pytest.raises(OSError) as info:
            os.open(name, os.O_RDONLY, dir_fd=999_999)
        assert info.value.errno == errno.EBADF

    (event,) = of(trace(run, {"full-path": "true"}), name)
    assert (event["err"], event["fullPath"]) == (errno.EBADF, name)


@pytest.fixture
def tmpfs(work: Path) -> Iterator[Path]:
    """A tmpfs mounted inside the test folder: a path that crosses a mount."""
    point = work / "mnt"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "igrun-test", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


def test_full_path_crosses_mount_points(tmpfs: Path) -> None:
    (tmpfs / "a" / "b").mkdir(parents=True)
    (tmpfs / "a" / "b" / "c").write_text("")
    seen: dict[str, int] = {}
    child = in_child(chdir_and_open(tmpfs / "a" / "b", "c"))

    rows = trace(lambda: seen.update(child()), {"full-path": "true"})
    (event,) = [r for r in rows if r["pid"] == seen["pid"] and r["path"] == "c"]
    assert event["fullPath"] == f"{tmpfs}/a/b/c"
    assert (event["fd"], event["err"]) == (seen["value"], 0)


def test_full_path_at_a_mount_root(tmpfs: Path) -> None:
    (tmpfs / "top").write_text("")
    seen: dict[str, int] = {}
    child = in_child(chdir_and_open(tmpfs, "top"))

    rows = trace(lambda: seen.update(child()), {"full-path": "true"})
    (event,) = [r for r in rows if r["pid"] == seen["pid"] and r["path"] == "top"]
    assert event["fullPath"] == f"{tmpfs}/top"


def test_full_path_of_the_root_directory(work: Path) -> None:
    name = marker()
    child = in_child(errno_of(chdir_and_open("/", name)))
    seen: dict[str, int] = {}

    (event,) = of(trace(lambda: seen.update(child()), {"full-path": "true"}), name)
    assert event["pid"] == seen["pid"]
    assert event["fullPath"] == f"/{name}"


def test_full_path_in_a_chroot_is_seen_from_its_root(work: Path) -> None:
    """As d_path does: a process in a chroot (or a container) sees its own paths."""
    (work / "sub").mkdir()
    (work / "sub" / "file").write_text("")
    seen: dict[str, int] = {}

    def body() -> int:
        os.chroot(work)
        return chdir_and_open("/sub", "file")()

    rows = trace(lambda: seen.update(in_child(body)()), {"full-path": "true"})
    (event,) = [r for r in rows if r["pid"] == seen["pid"] and r["path"] == "file"]
    assert event["fullPath"] == "/sub/file"


def test_full_path_of_a_deep_directory(work: Path) -> None:
    """More components than an unrolled loop could walk: 300 of them, 1.5 kB of path."""
    deep = work.joinpath(*["d1234"] * 300)
    deep.mkdir(parents=True)
    (deep / "leaf").write_text("")
    seen: dict[str, int] = {}
    child = in_child(chdir_and_open(deep, "leaf"))

    rows = trace(lambda: seen.update(child()), {"full-path": "true"})
    (event,) = [r for r in rows if r["pid"] == seen["pid"] and r["path"] == "leaf"]
    assert event["fullPath"] == f"{deep}/leaf"


def test_default_columns_are_igs() -> None:
    """fullPath joins them with --full-path (see test_cli_default_columns)."""
    assert [f.name for f in TraceOpen.schema.default_columns()] == [
        "pid",
        "tid",
        "comm",
        "fd",
        "err",
        "path",
    ]


# -- --prefixes


def test_prefixes_keep_only_matching_paths(work: Path) -> None:
    keep, also, drop = work / "keep", work / "also", work / "drop"
    for folder in (keep, also, drop):
        folder.mkdir()
        (folder / "file").write_text("")

    def run() -> None:
        for folder in (keep, also, drop):
            os.close(os.open(folder / "file", os.O_RDONLY))
        with pytest.raises(FileNotFoundError):
            os.open(keep / "missing", os.O_RDONLY)

    rows = trace(run, {"prefixes": f"{keep}/,{also}"})
    assert [r["path"] for r in rows if r["path"].startswith(str(work))] == [
        f"{keep}/file",
        f"{also}/file",
        f"{keep}/missing",
    ]
    assert all(r["path"].startswith((f"{keep}/", str(also))) for r in rows)


def test_prefix_is_matched_against_the_path_as_passed(work: Path) -> None:
    (work / "rel").write_text("")
    child = in_child(chdir_and_open(work, "rel"))
    seen: dict[str, int] = {}

    def run() -> None:
        seen.update(child())
        os.close(os.open(work / "rel", os.O_RDONLY))

    rows = trace(run, {"prefixes": str(work)})
    assert [r for r in rows if r["pid"] == seen["pid"]] == []
    assert len(of(rows, work / "rel")) == 1


def test_prefix_is_matched_against_the_full_path_with_full_path(work: Path) -> None:
    (work / "rel").write_text("")
    child = in_child(chdir_and_open(work, "rel"))
    seen: dict[str, int] = {}

    rows = trace(lambda: seen.update(child()), {"prefixes": str(work), "full-path": "true"})
    (event,) = [r for r in rows if r["pid"] == seen["pid"]]
    assert (event["path"], event["fullPath"]) == ("rel", f"{work}/rel")
    assert all(r["fullPath"].startswith(str(work)) for r in rows)


def test_prefixes_beyond_what_the_kernel_holds_are_refused() -> None:
    with pytest.raises(ParamError, match="longer than 255 bytes"):
        trace(lambda: None, {"prefixes": "/" + "x" * 255})
    with pytest.raises(ParamError, match="64 prefixes at most"):
        trace(lambda: None, {"prefixes": ",".join(f"/p{i}" for i in range(65))})


def test_prefix_of_255_bytes_matches(work: Path) -> None:
    prefix = (str(work) + "/" + "p" * 300)[:255]
    path = prefix + "tail"

    def run() -> None:
        with pytest.raises(FileNotFoundError):
            os.open(path, os.O_RDONLY)

    (event,) = of(trace(run, {"prefixes": prefix}), path)
    assert event["err"] == errno.ENOENT


# -- containers


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces(work: Path) -> None:
    """With only the host's mount-ns in the filter map, an open in a fresh one is dropped."""
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    inside, outside = work / "inside", work / "outside"
    inside.write_text("")
    outside.write_text("")
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))

    def run() -> None:
        subprocess.run(["unshare", "-m", "cat", str(inside)], check=True, capture_output=True)
        subprocess.run(["cat", str(outside)], check=True, capture_output=True)

    try:
        rows = trace(run, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
    assert of(rows, inside) == []
    (event,) = of(rows, outside)
    assert event["mountnsid"] == host_ns
    assert event["comm"] == "cat"


# -- decoding


def test_flag_names_follow_ig() -> None:
    assert decode_flags(0) == ["O_RDONLY"]
    assert decode_flags(os.O_RDWR | os.O_NONBLOCK | os.O_DIRECTORY) == [
        "O_RDWR",
        "O_NONBLOCK",
        "O_DIRECTORY",
    ]
    assert decode_flags(3 | os.O_SYNC) == ["O_DSYNC", "__O_SYNC"]  # access mode 3: no name
    assert decode_flags(os.O_PATH | os.O_CLOEXEC) == ["O_RDONLY", "O_CLOEXEC", "O_PATH"]
    assert decode_flags(-1)[:2] == ["O_CREAT", "O_EXCL"]


def test_mode_looks_like_go_file_mode() -> None:
    assert format_mode(0) == "----------"
    assert format_mode(0o755) == "-rwxr-xr-x"
    assert format_mode(0o7777) == "-rwxrwxrwx"


# -- the command


def test_cli_prints_the_open_as_json(igrun_cli: IgrunCli, work: Path) -> None:
    path = work / "via-cli"
    proc = igrun_cli.start("trace", "open", "--host", "-o", "json", "-t", "2s", "--full-path")
    child = subprocess.run(["cat", str(path)], capture_output=True)
    assert child.returncode == 1
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    (event,) = [e for e in igrun_cli.events(out) if e.get("path") == str(path)]
    assert event["comm"] == "cat"
    assert (event["err"], event["ret"]) == (errno.ENOENT, -errno.ENOENT)
    assert "fd" not in event  # 0: left out, as ig leaves it out (omitempty)
    assert event["fullPath"] == str(path)
    assert event["flags"] == ["O_RDONLY"]
    assert "Traceback" not in err
    assert igrun_cli.pin_dirs_of(proc.pid) == []
    proc.assert_released()


@pytest.mark.parametrize(
    ("flags", "header"),
    [
        ((), ["PID", "TID", "COMM", "FD", "ERR", "PATH"]),
        (("--full-path",), ["PID", "TID", "COMM", "FD", "ERR", "PATH", "FULLPATH"]),
    ],
)
def test_cli_default_columns(
    igrun_cli: IgrunCli, flags: tuple[str, ...], header: list[str]
) -> None:
    proc = igrun_cli.run("trace", "open", "--host", "-t", "300ms", *flags)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split() == ["RUNTIME.CONTAINERNAME", *header]


def test_cli_help_lists_params_and_fields(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.run("trace", "open", "--help")
    assert proc.returncode == 0, proc.stderr
    for word in ("--full-path", "--prefixes", "--failed", "fullPath", "flagsRaw", "modeRaw"):
        assert word in proc.stdout
