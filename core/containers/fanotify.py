"""fanotify through ctypes: the few calls a permission watcher needs.

Python has no fanotify module, and the calls are two syscalls plus reads and writes of fixed
structures, so a dependency would buy nothing. Only what :mod:`igrun.core.containers.starthold`
uses is
here: a ``FAN_CLASS_CONTENT`` group, inode marks, reading event metadata, and answering
permission events.
"""

from __future__ import annotations

import ctypes
import os
import struct
from dataclasses import dataclass

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_CONTENT = 0x4
FAN_UNLIMITED_QUEUE = 0x10
FAN_UNLIMITED_MARKS = 0x20

FAN_OPEN_EXEC = 0x1000
FAN_OPEN_PERM = 0x10000
FAN_OPEN_EXEC_PERM = 0x40000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000
FAN_Q_OVERFLOW = 0x4000

FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2

FAN_ALLOW = 0x1
FAN_NOFD = -1

_METADATA = struct.Struct("=IBBHQiI")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_RESPONSE = struct.Struct("=iI")
AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_libc.fanotify_mark.restype = ctypes.c_int


@dataclass(frozen=True)
class Event:
    """One event: its mask, the descriptor of the file it concerns, and who caused it."""

    mask: int
    fd: int
    pid: int


def init(flags: int, event_flags: int) -> int:
    """A new fanotify group's descriptor; raises OSError (EPERM without CAP_SYS_ADMIN)."""
    fd = _libc.fanotify_init(flags, event_flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_init: {os.strerror(err)}")
    return int(fd)


def mark(group: int, flags: int, mask: int, path: str) -> None:
    """Add or remove an inode mark on ``path``; raises OSError."""
    if _libc.fanotify_mark(group, flags, mask, AT_FDCWD, os.fsencode(path)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fanotify_mark {path}: {os.strerror(err)}", path)


def read_events(group: int, size: int = 8192) -> list[Event]:
    """The events waiting (empty when none: the group is non-blocking)."""
    try:
        data = os.read(group, size)
    except BlockingIOError:
        return []
    out = []
    offset = 0
    while offset + _METADATA.size <= len(data):
        length, _, _, _, mask, fd, pid = _METADATA.unpack_from(data, offset)
        if length < _METADATA.size:
            break
        out.append(Event(mask, fd, pid))
        offset += length
    return out


def allow(group: int, fd: int) -> None:
    """Let the held operation go on. A group closed (igrun gone) lets every one go."""
    os.write(group, _RESPONSE.pack(fd, FAN_ALLOW))
