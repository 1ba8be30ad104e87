"""This run's folder under the bpffs pin path, and the removal of folders left by dead runs.

Every run pins its maps under ``/sys/fs/bpf/gadget/<pid>-<process start time>/`` (mode 0700;
``IGRUN_PIN_ROOT`` names another root on bpffs). The folder is removed on every exit path;
one left by a run that was killed is removed by the next run that starts.

Whether a folder's run is alive is not read from its name: a pid means nothing in another pid
namespace, and a folder may have been renamed. Each run holds an exclusive ``flock`` on its
folder for as long as it lives; the kernel drops it when the process ends, however it ends,
and the lock follows the folder through a rename. Another run that can take the lock knows
the owner is gone, whatever pid namespace either runs in, and whatever the folder is called.
A folder named ``<pid>-<start>`` after a process that still runs in this pid namespace is
left alone even unlocked (a run of an igrun that did not lock yet).

The root itself must be root's and closed to others (mode 0700): bpffs is often mounted
world-writable (mode 1777), and whoever owns the root can rename or replace what igrun pins
there. igrun creates it that way and refuses one that is not.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
from pathlib import Path

from igrun.core.errors import EnvironmentProblem

PIN_ROOT = Path(os.environ.get("IGRUN_PIN_ROOT") or "/sys/fs/bpf/gadget")
BPFFS = Path("/sys/fs/bpf")
CREATE_TRIES = 20
"""How often a run makes its folder anew when another run's cleanup took it first."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after its closing ')'.
    return stat_line.rsplit(")", 1)[1].split()[19]


def run_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid)}"


def named_after_live_process(name: str) -> bool:
    """Whether ``name`` is ``<pid>-<start>`` of a process running in this pid namespace."""
    pid, _, start = name.partition("-")
    return pid.isdigit() and bool(start) and _start_time(int(pid)) == start


def fs_type(path: Path) -> str | None:
    """The type of the filesystem mounted at exactly ``path`` (None when nothing is)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and parts[1] == str(path):
            found = parts[2]  # the last mount on a path is the visible one
    return found


def remove_tree(path: Path) -> None:
    """Remove a pin folder: unlinking a pin releases the kernel object it held."""
    shutil.rmtree(path, ignore_errors=True)


def check_root(root: Path) -> None:
    """Make ``root`` (root's, mode 0700) if it is missing; refuse it, with one line that says
    how to fix it, if anyone else could change what is in it."""
    root.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    uid = os.geteuid()
    for parent in root.parents:  # whoever may rename a folder above could swap the root
        st = os.stat(parent)
        if st.st_uid not in (0, uid) or (st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX):
            raise EnvironmentProblem(
                f"pin folder {root} is inside {parent}, which others can change (owner uid "
                f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}): choose a pin root whose "
                "folders are root's and closed to others, or sticky like /sys/fs/bpf"
            )
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o700)  # never follows a symlink, never takes an existing folder
    st = os.lstat(root)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a folder"
        raise EnvironmentProblem(
            f"pin folder {root} is {what}: remove it ('rm {root}') and run igrun again"
        )
    if st.st_uid != uid:
        raise EnvironmentProblem(
            f"pin folder {root} belongs to uid {st.st_uid}, not {uid}: make it yours and "
            f"closed to others ('chown {uid}:{os.getegid()} {root} && chmod 700 {root}') or "
            f"remove it ('rm -r {root}')"
        )
    if st.st_mode & 0o077:
        raise EnvironmentProblem(
            f"pin folder {root} has mode {stat.S_IMODE(st.st_mode):o}, open to others: "
            f"close it ('chmod 700 {root}')"
        )


def _lock(fd: int, wait: bool = False) -> bool:
    """Take the exclusive lock of the folder open at ``fd``; False when someone holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _open_folder(path: Path) -> int | None:
    """An fd on the folder ``path`` (not following a symlink), or None."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def remove_stale(root: Path = PIN_ROOT) -> list[str]:
    """Remove the folders in ``root`` whose run is gone, whatever their name; return the
    names removed. A folder is a dead run's when its lock is free (see the module)."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False) or named_after_live_process(entry.name):
            continue
        fd = _open_folder(Path(entry.path))
        if fd is None:
            continue
        try:
            if _lock(fd):  # held while removing: a run that opens it now finds it unlinked
                remove_tree(Path(entry.path))
                removed.append(entry.name)
        finally:
            os.close(fd)
    return removed


class PinDir:
    """The pin folder of one run; ``fd`` holds its lock (None for a folder inside another
    run's, which that run's lock covers)."""

    def __init__(self, path: Path, fd: int | None = None) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def create(cls, root: Path = PIN_ROOT) -> PinDir:
        """Check bpffs and the root, clean up after dead runs and make this run's folder,
        locked."""
        if fs_type(BPFFS) != "bpf" and root.is_relative_to(BPFFS):
            raise EnvironmentProblem(
                f"bpffs is not mounted at {BPFFS}: mount it with 'mount -t bpf bpf {BPFFS}'"
            )
        check_root(root)
        remove_stale(root)
        base = run_id()
        for attempt in range(CREATE_TRIES):
            path = root / (base if attempt == 0 else f"{base}-{attempt}")  # bpffs takes no dots
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                continue  # another run of this process, or a live run elsewhere: never taken
            fd = _open_folder(path)
            if fd is None:
                continue  # removed at once by another run's cleanup
            # Locked before anything is pinned; still linked at this path once locked, or
            # another run's cleanup took it between mkdir and the lock.
            if _lock(fd, wait=True) and _same_folder(fd, path):
                return cls(path, fd)
            os.close(fd)
        raise EnvironmentProblem(f"cannot make a pin folder in {root}: every name was taken")

    @classmethod
    def inside(cls, parent: Path, name: str) -> PinDir:
        """A folder for one of several runs of a process, in the process's locked folder."""
        path = parent / name
        path.mkdir(mode=0o700)
        return cls(path)

    def sub(self, name: str) -> Path:
        """A folder for one gadget's pins inside this run's folder."""
        sub = self.path / name
        sub.mkdir(mode=0o700, exist_ok=True)
        return sub

    def cleanup(self) -> None:
        """Remove the folder, then let go of its lock."""
        remove_tree(self.path)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _same_folder(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the folder open at ``fd``."""
    try:
        here, there = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return here.st_nlink > 0 and (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
