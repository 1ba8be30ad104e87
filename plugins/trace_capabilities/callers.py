"""Where the kernel functions that decide a capability check's options are: the ``callers``
constant of ``trace capabilities``' object, read from ``/proc/kallsyms`` once per boot.

Kept apart from the gadget's module, with the standard library (and numpy only when kallsyms
must be read): the launcher's head start (:mod:`igrun.core.run.headstart`) takes this boot's
table from the cache through :func:`head_start_constants` while it is still importing, so
that the object loads with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

KALLSYMS = Path("/proc/kallsyms")
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
CACHE_DIR = Path("/run/igrun")
"""Where the caller ranges of this boot are kept (a tmpfs: gone with the boot whose kernel
addresses they are)."""

# What a kernel function means when it is on the stack of a check (enum caller_kind in
# capabilities.h).
CALLER_CAP_CAPABLE = 1
CALLER_PASS = 2
CALLER_NOAUDIT = 3
CALLER_INSETID = 4
MAX_CALLERS = 32

CALLERS: dict[str, int] = {
    # The check itself: the frames above it on the stack are who asked.
    "cap_capable": CALLER_CAP_CAPABLE,
    # Pass their caller's options through.
    "security_capable": CALLER_PASS,
    "ns_capable_common": CALLER_PASS,
    # Ask with CAP_OPT_NOAUDIT.
    "ns_capable_noaudit": CALLER_NOAUDIT,
    "has_ns_capability_noaudit": CALLER_NOAUDIT,
    "has_capability_noaudit": CALLER_NOAUDIT,
    "kallsyms_show_value": CALLER_NOAUDIT,
    "cap_vm_enough_memory": CALLER_NOAUDIT,
    "security_vm_enough_memory_mm": CALLER_NOAUDIT,
    # Asks with CAP_OPT_INSETID (setuid, setgid ... checks).
    "ns_capable_setid": CALLER_INSETID,
}
"""Kernel functions that decide a check's options, by name (``.cold``/``.isra`` parts too)."""

_RANGE_LAYOUT = [("start", "=u8"), ("end", "=u8"), ("kind", "=u4"), ("pad", "=u4")]
_RANGE_SIZE = 24
"""One caller range in the ``callers`` global: start, end, kind, padding."""


def caller_ranges(kallsyms: Path = KALLSYMS) -> bytes:
    """The ``callers`` global: where each function of :data:`CALLERS` is in kernel text.

    A function ends where the next text symbol starts. Without readable addresses (not root, or
    ``kptr_restrict``) the table stays empty and every check is reported as audited.
    """
    starts: list[int] = []
    found: list[tuple[int, int]] = []
    with kallsyms.open() as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3 or parts[1] not in ("t", "T", "w", "W"):
                continue  # data, or a module's symbol (4th column)
            addr = int(parts[0], 16)
            if not addr:
                continue
            starts.append(addr)
            kind = CALLERS.get(parts[2].partition(".")[0])
            if kind:
                found.append((kind, addr))
    table = np.zeros(MAX_CALLERS, dtype=np.dtype(_RANGE_LAYOUT))
    if not found:
        return table.tobytes()
    addrs = np.unique(np.array(starts, dtype=np.uint64))
    found.sort()  # the check and the pass-through functions first, should the table be full
    found = found[:MAX_CALLERS]
    begin = np.array([a for _, a in found], dtype=np.uint64)
    after = np.searchsorted(addrs, begin, side="right")
    ends = np.where(after < len(addrs), addrs[np.minimum(after, len(addrs) - 1)], begin + 4096)
    n = len(found)
    table["start"][:n] = begin
    table["end"][:n] = ends
    table["kind"][:n] = [k for k, _ in found]
    return table.tobytes()


def _cache_file(cache_dir: Path) -> Path | None:
    """The cache of this boot's caller ranges, named after the boot and the table it holds,
    or ``None`` when the boot cannot be told (no boot id)."""
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        return None
    table = hashlib.sha256(repr((sorted(CALLERS.items()), MAX_CALLERS)).encode()).hexdigest()
    return cache_dir / f"capabilities-callers-{boot}-{table[:16]}.bin"


def _trusted(folder: Path) -> bool:
    """Only a folder of root's that no one else may write to holds ranges the BPF program
    trusts."""
    try:
        st = folder.stat()
    except OSError:
        return False
    return st.st_uid == 0 and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def cached_caller_ranges(cache_dir: Path = CACHE_DIR, kallsyms: Path = KALLSYMS) -> bytes:
    """:func:`caller_ranges`, read from ``/proc/kallsyms`` once per boot.

    Reading and parsing the 120,000 lines of kallsyms takes about half a second, which
    would stand between launch and attach at every start; kernel text addresses only
    change at boot, so the first run of a boot keeps the table for the ones after it.
    """
    size = MAX_CALLERS * _RANGE_SIZE
    cache = _cache_file(cache_dir) if os.geteuid() == 0 else None
    if cache is not None and _trusted(cache_dir):
        with contextlib.suppress(OSError):
            data = cache.read_bytes()
            if len(data) == size:
                return data
    table = caller_ranges(kallsyms)
    if cache is not None and any(table):
        with contextlib.suppress(OSError):
            cache_dir.mkdir(mode=0o700, exist_ok=True)
            if _trusted(cache_dir):
                partial = cache.with_suffix(f".{os.getpid()}")
                partial.write_bytes(table)
                partial.replace(cache)
    return table


HEAD_START_FLAGS: dict[str, str] = {}
"""The gadget's flags the head start reads: none (``--audit-only`` and ``--unique`` rule it
out)."""


def head_start_constants(
    values: Mapping[str, str], cache_dir: Path = CACHE_DIR
) -> dict[str, bytes] | None:
    """The constants the head start loads the object with: this boot's table when the cache
    has it, else ``None`` (no head start: the run reads kallsyms and keeps the table for the
    next one). ``values`` (the gadget's flags) is empty."""
    cache = _cache_file(cache_dir) if os.geteuid() == 0 else None
    if cache is None or not _trusted(cache_dir):
        return None
    try:
        data = cache.read_bytes()
    except OSError:
        return None
    return {"callers": data} if len(data) == MAX_CALLERS * _RANGE_SIZE and any(data) else None
