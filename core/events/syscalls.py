"""Syscall names by number, for the machine igrun runs on.

A ``gadget_syscall`` member (``igrun/display.h``) holds the number the kernel dispatched on;
it is shown by name (``openat``). The tables ship with igrun
(:mod:`igrun.core.events.syscall_tables`, made by ``scripts/gen_syscalls.py`` from the kernel's
headers), so no header is needed where igrun runs: x86_64 and aarch64 have one each. On
another machine, and for a number no table knows, the number is shown.
"""

from __future__ import annotations

import platform
from functools import cache

from igrun.core.events.syscall_tables import AARCH64, COMMON, X86_64

TABLES: dict[str, dict[int, str]] = {
    "x86_64": {**COMMON, **X86_64},
    "aarch64": {**COMMON, **AARCH64},
}
TABLES["arm64"] = TABLES["aarch64"]
"""The table of each machine name (``uname -m``): its headers' calls, and the calls newer
than the headers that have one number everywhere (``COMMON``)."""


@cache
def syscall_table(machine: str | None = None) -> dict[int, str]:
    """Number to name for ``machine`` (this one by default); empty for an unknown machine."""
    return TABLES.get(machine or platform.machine(), {})


def syscall_name(number: int, machine: str | None = None) -> str:
    """``openat`` for 257 on x86_64 (56 on aarch64); the number when no name is known."""
    return syscall_table(machine).get(number, str(number))
