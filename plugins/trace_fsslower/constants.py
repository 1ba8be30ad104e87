"""The params of ``trace fsslower`` as its object's constants.

Kept apart from the gadget's module, with nothing but the standard library, so that the
launcher's head start (:mod:`igrun.core.run.headstart`) can load the object with the
constants ``--filesystem`` and ``--min`` give while it is still importing
(:func:`head_start_constants`); the run compares them with its own and loads its own object
when any differs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from igrun.core.errors import ParamError

FS_NAME_LEN = 32
"""Size of the BPF side's file system name buffers (``fsslower.h``), NUL included."""
MIN_LATENCY_DEFAULT_MS = 10
"""Inspektor Gadget's default ``--min``."""
_U64_MAX = 2**64 - 1
_FS_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# A choice that covers two kernel type names: Inspektor Gadget's "nfs" hooks the NFS client's
# functions, which serve NFSv4 mounts (type "nfs4") as well; its "fuse" serves "fuseblk" too.
_ALSO = {"nfs": "nfs4", "fuse": "fuseblk"}


def fs_name_constant(name: str) -> bytes:
    """``name`` as the BPF side's NUL-padded ``char[FS_NAME_LEN]``, checked: the kernel's
    type names are short words (ext4, btrfs, tmpfs …), and one that does not fit would
    silently match its own prefix."""
    raw = name.encode()
    if not _FS_NAME.match(name) or len(raw) >= FS_NAME_LEN:
        raise ParamError(
            f"--filesystem: {name!r} is not a file system type name "
            f"(as in /proc/filesystems, at most {FS_NAME_LEN - 1} characters)"
        )
    return raw.ljust(FS_NAME_LEN, b"\0")


def object_constants(filesystem: str, min_ms: int) -> dict[str, int | bool | bytes]:
    """The latency in ns (capped, so a huge --min means "nothing" rather than an overflow)
    and the file system names, compared in the kernel so that only matching files ever take
    a map entry."""
    return {
        "min_lat_ns": min(min_ms * 1_000_000, _U64_MAX),
        "target_fs": fs_name_constant(filesystem),
        "target_fs_alt": (
            fs_name_constant(_ALSO[filesystem]) if filesystem in _ALSO else bytes(FS_NAME_LEN)
        ),
    }


HEAD_START_FLAGS = {"-f": "filesystem", "--filesystem": "filesystem", "-m": "min", "--min": "min"}
"""The gadget's flags the head start reads (each takes a value), and their params."""


def head_start_constants(values: Mapping[str, str]) -> dict[str, int | bool | bytes] | None:
    """The constants for the params given on the command line (``values``, by param name),
    or ``None`` when one is not valid (the run reports it)."""
    try:
        min_ms = int(values.get("min", MIN_LATENCY_DEFAULT_MS))
        return object_constants(values.get("filesystem", "ext4"), min_ms) if min_ms >= 0 else None
    except (ValueError, ParamError):
        return None
