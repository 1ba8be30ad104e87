"""This run's folder under the bpffs pin path, and the removal of folders left by dead runs.

Every run pins its maps under ``/sys/fs/bpf/gadget/<run-id>/`` (mode 0700), where
``<run-id>`` is ``<pid>-<process start time>`` so that a folder can be told apart from one of a
later process that got the same pid. The folder is removed on every exit path; one left by a
run that was killed is removed by the next run that starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from igrun.core.errors import EnvironmentProblem

PIN_ROOT = Path("/sys/fs/bpf/gadget")
BPFFS = Path("/sys/fs/bpf")


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after its closing ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def run_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid)}"


def owner_alive(name: str) -> bool:
    """Whether the process that made run folder ``name`` is still running."""
    pid, _, start = name.partition("-")
    if not pid.isdigit() or not start:
        return True  # not one of ours: leave it alone
    return _start_time(int(pid)) == start


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


def remove_stale(root: Path = PIN_ROOT) -> list[str]:
    """Remove run folders whose owner process is gone; return their names."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for entry in root.iterdir():
        if entry.is_dir() and not owner_alive(entry.name):
            remove_tree(entry)
            removed.append(entry.name)
    return removed


class PinDir:
    """The pin folder of one run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, root: Path = PIN_ROOT, name: str | None = None) -> PinDir:
        """Check bpffs, clean up after dead runs and make this run's folder (``name``
        defaults to the process's run id; several runs of one process name theirs)."""
        if fs_type(BPFFS) != "bpf" and root.is_relative_to(BPFFS):
            raise EnvironmentProblem(
                f"bpffs is not mounted at {BPFFS}: mount it with 'mount -t bpf bpf {BPFFS}'"
            )
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        remove_stale(root)
        path = root / (name or run_id())
        remove_tree(path)
        path.mkdir(mode=0o700)
        return cls(path)

    def sub(self, name: str) -> Path:
        """A folder for one gadget's pins inside this run's folder."""
        sub = self.path / name
        sub.mkdir(mode=0o700, exist_ok=True)
        return sub

    def cleanup(self) -> None:
        remove_tree(self.path)
