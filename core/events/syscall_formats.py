"""Each syscall's arguments, as the running kernel declares them.

The kernel describes the arguments of every syscall in the format of its ``sys_enter_<name>``
tracepoint (``/sys/kernel/tracing/events/syscalls/sys_enter_openat/format``: ``const char *
filename``, ``int flags``...), for the architecture it runs on. :func:`syscall_formats`
reads them all once; :func:`syscall_numbers` pairs each with its number on this machine
(:mod:`igrun.core.events.syscalls`). Inspektor Gadget's traceloop reads the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from igrun.core.events.syscalls import syscall_table

TRACEFS_ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

_FIELD = re.compile(r"^\s*field:(?P<type>.*?)\s*(?P<name>[A-Za-z_0-9]+);\s*offset:")

RENAMED = {
    "newfstat": "fstat",
    "newlstat": "lstat",
    "newstat": "stat",
    "newuname": "uname",
    "sendfile64": "sendfile",
    "sysctl": "_sysctl",
    "umount": "umount2",
}
"""Tracepoints named after the kernel's function rather than the syscall (``sys_enter_newstat``
is ``stat``), as Inspektor Gadget's traceloop maps them."""


@dataclass(frozen=True)
class Arg:
    """One argument: its C type as the format writes it, and its name."""

    type: str
    name: str

    @property
    def pointer(self) -> bool:
        return "*" in self.type

    @property
    def signed(self) -> bool:
        """Whether the value is a signed integer (``int``, ``long``, ``pid_t``, ``off_t``),
        not an unsigned one (``unsigned int``, ``size_t``, ``u32``, ``uid_t``) or a pointer."""
        t = self.type.replace("const ", "").strip()
        return not (self.pointer or t.startswith(_UNSIGNED))


_UNSIGNED = ("unsigned", "u", "__u", "size_t", "gid_t", "qid_t", "aio_context_t")


def tracefs_syscalls() -> Path | None:
    """The folder of the syscall tracepoints, where tracefs is mounted."""
    for root in TRACEFS_ROOTS:
        folder = root / "events" / "syscalls"
        if folder.is_dir():
            return folder
    return None


def parse_format(text: str) -> list[Arg]:
    """The arguments in one ``sys_enter_*`` format: the fields after the common ones and
    ``__syscall_nr``."""
    args = []
    common_done = False
    for line in text.splitlines():
        if not line.strip():
            common_done = True
            continue
        m = _FIELD.match(line)
        if m is None or not common_done or m["name"] == "__syscall_nr":
            continue
        args.append(Arg(m["type"].strip(), m["name"]))
    return args


@cache
def syscall_formats(folder: Path | None = None) -> dict[str, list[Arg]]:
    """Syscall name (``openat``) to its arguments, for every syscall tracepoint the kernel
    has; empty when tracefs cannot be read."""
    folder = folder or tracefs_syscalls()
    out: dict[str, list[Arg]] = {}
    if folder is None:
        return out
    for entry in sorted(folder.glob("sys_enter_*")):
        try:
            text = (entry / "format").read_text()
        except OSError:
            continue
        name = entry.name.removeprefix("sys_enter_")
        out[RENAMED.get(name, name)] = parse_format(text)
    return out


def syscall_numbers(machine: str | None = None) -> dict[str, int]:
    """Syscall name to number on ``machine`` (this one by default)."""
    return {name: nr for nr, name in syscall_table(machine).items()}
