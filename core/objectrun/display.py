"""How a member of a bare object's event shows, as its C says (``igrun/display.h``).

A typedef names what a number means (``gadget_errno``, ``gadget_file_mode``,
``gadget_duration``, ``gadget_signal``, ``gadget_syscall``): :data:`DISPLAY_TYPES` says how
each becomes text.
Annotations after a member's name are BTF declaration tags (``igrun:flags``,
``igrun:width=N``, ``igrun:hidden``): :class:`Annotations` reads them and applies them to a
field's column. Each text is made once per distinct value of a batch
(:func:`igrun.core.events.fields.per_distinct`), never once per event.
"""

from __future__ import annotations

import grp
import pwd
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace

from igrun.core.errors import UsageError
from igrun.core.events.fields import errno_name
from igrun.core.events.schema import Field
from igrun.core.events.syscalls import syscall_name

TAG_PREFIX = "igrun:"


# ---- how a value shows ----------------------------------------------------------------------


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; the number when no signal has it; empty for 0."""
    if number == 0:
        return ""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def user_name(uid: int) -> str:
    """The host's name for ``uid`` (its passwd database), or the number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int) -> str:
    """The host's name for ``gid`` (its group database), or the number."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def file_mode(mode: int) -> str:
    """A mode in octal as ``chmod`` takes it: ``0640``, ``0100644`` with the type bits."""
    return f"0{mode:03o}"


_UNITS = ((1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "µs"))


def duration(ns: int) -> str:
    """Nanoseconds as Go prints a ``time.Duration`` below a minute: ``1.5ms``, ``2s``."""
    for scale, unit in _UNITS:
        if ns >= scale:
            return f"{ns / scale:.9f}".rstrip("0").rstrip(".") + unit
    return f"{ns}ns"


def flag_names(bits: dict[int, str], value: int) -> str:
    """``O_CREAT|O_TRUNC``: each named bit that is set, in bit order, and what no name
    covers in hex (``O_CREAT|0x40000000``); the zero enumerator's name (or ``""``) for 0."""
    if value == 0:
        return bits.get(0, "")
    names, left = [], value
    for bit in sorted(b for b in bits if b):
        if value & bit == bit:
            names.append(bits[bit])
            left &= ~bit
    if left:
        names.append(hex(left))
    return "|".join(names)


@dataclass(frozen=True)
class Display:
    """A typedef that shows as text: the text field and its hidden ``_raw`` number."""

    text: Callable[[int], str]
    width: int
    signed: bool = False
    """Read the member as signed first (an errno stored as ``-ENOENT``)."""
    raw_only: bool = False
    """Only a member named ``x_raw`` shows as text ``x`` (``user_raw``: ``user``, the name); a
    member ``uid`` stays a number."""


DISPLAY_TYPES = {
    "gadget_errno": Display(errno_name, 8, signed=True),
    "gadget_signal": Display(signal_name, 8),
    "gadget_file_mode": Display(file_mode, 7),
    "gadget_duration": Display(duration, 10),
    "gadget_syscall": Display(syscall_name, 16),
    "gadget_uid": Display(user_name, 16, raw_only=True),
    "gadget_gid": Display(group_name, 16, raw_only=True),
}
"""Typedef names of ``igrun/display.h`` and how each shows."""


# ---- annotations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Annotations:
    """What ``GADGET_FLAGS``, ``GADGET_WIDTH(n)`` and ``GADGET_HIDDEN`` said of one member."""

    flags: bool = False
    width: int = 0
    hidden: bool = False

    @classmethod
    def parse(cls, tags: list[str], where: str) -> Annotations:
        out = cls()
        for tag in tags:
            if not tag.startswith(TAG_PREFIX):
                continue  # another tool's annotation
            key, _, value = tag.removeprefix(TAG_PREFIX).partition("=")
            if key == "flags" and not value:
                out = replace(out, flags=True)
            elif key == "hidden" and not value:
                out = replace(out, hidden=True)
            elif key == "width" and value.isdigit() and 0 < int(value) <= 1024:
                out = replace(out, width=int(value))
            else:
                raise UsageError(f"{where}: unknown annotation {tag!r} (igrun/display.h)")
        return out

    def apply(self, f: Field) -> Field:
        column = f.column
        if self.width:
            column = replace(column, width=self.width)
        if self.hidden:
            column = replace(column, hidden=True)
        return f if column is f.column else replace(f, column=column)
