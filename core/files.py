"""Reading the files a user names (config files, metrics configs, BPF objects), bounded.

A path on the command line may be anything: ``/dev/zero`` never ends, a FIFO blocks its
reader until someone writes, a log file may be gigabytes. So a named file must be a regular
file, no larger than a limit that fits what it holds, and it is read with at most the limit
plus one byte asked for: what it is cannot make igrun hang or take the host's memory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

CONFIG_LIMIT = 1 << 20
"""Config and metrics files: 1 MiB (a generous config is a few KiB)."""
OBJECT_LIMIT = 64 << 20
"""Compiled BPF objects: 64 MiB (igrun's largest is under 1 MiB)."""

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class FileRefused(Exception):
    """The file cannot be used; the message says why in a few words (no path: callers
    put it in their own words, e.g. ``config c.toml: <why>``)."""


def size_text(n: int) -> str:
    """``1048576`` -> ``1 MiB``: how limits are named to users."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} bytes"


def read_bytes(path: Path | str, limit: int) -> bytes:
    """The whole of the regular file at ``path``, at most ``limit`` bytes long.

    Opened without blocking (a FIFO would wait for a writer) and checked before reading;
    the size is checked again while reading, since a file may grow (or be a /proc file
    whose size says 0)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileRefused(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise FileRefused(f"not a regular file ({kind})")
        too_big = f"larger than {size_text(limit)}, the limit for this file"
        if info.st_size > limit:
            raise FileRefused(too_big)
        chunks: list[bytes] = []
        total = 0
        while total <= limit:
            try:
                chunk = os.read(fd, limit + 1 - total)
            except OSError as exc:
                raise FileRefused(exc.strerror or str(exc)) from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise FileRefused(too_big)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path | str, limit: int = CONFIG_LIMIT) -> str:
    """:func:`read_bytes` decoded as UTF-8 (what TOML files are)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"not UTF-8 text (byte {exc.start})") from None
