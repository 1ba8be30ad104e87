"""What ``/proc`` says of the host: a process's namespace inodes, the host's own namespaces and
where the cgroup v2 hierarchy is mounted.

A module of its own, with nothing but ``os`` to import: the head start's thread asks these
while the launcher imports (``igrun.core.run.headstart``), and every millisecond of import on
that path is one before the first event.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def ns_inode(pid: int, kind: str) -> int:
    """The inode of process ``pid``'s namespace of ``kind`` (``mnt``, ``net``...), 0 when it
    cannot be read (gone, or not root)."""
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return 0


def host_namespace(kind: str) -> tuple[int, int]:
    """The host's namespace of ``kind`` (``mnt``, ``net``...): pid 1's, or igrun's own when
    pid 1's cannot be read; its inode (0 when neither can be read) and that pid."""
    for pid in (1, os.getpid()):
        inode = ns_inode(pid, kind)
        if inode:
            return inode, pid
    return 0, 0


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or its ``unified`` part)."""
    from pathlib import Path  # here: pathlib's import is the launcher's, not the thread's

    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "cgroup2":
                    return Path(parts[1])
    except OSError:
        pass
    return None
