"""Fields most gadgets have, described once, so that every gadget shows them the same way.

A gadget's event struct keeps ``gadget_timestamp timestamp`` (``bpf_ktime_get_boot_ns``) and
embeds ``struct gadget_process proc`` (``igrun/process.h``): who did it. :func:`timestamp`
and :func:`process_fields` describe them (the mount namespace hidden and ``mountnsid`` in
JSON, as ``ig`` writes it, tagged so the containers operator finds it). The other helpers
describe what many events carry in their own way: flags as names and as a number
(:func:`flag_fields`), an errno (:func:`errno_field`), file permissions (:func:`mode_fields`),
a duration (:func:`duration_field`), user and group ids, IP addresses and TCP/UDP
connections (:func:`connection_fields`).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.events.endpoints import l4_endpoint
from igrun.core.events.helpers import ip_strings, wall_times_from_boot_times
from igrun.core.events.schema import Array, Batch, Column, Decoder, Field, Kind


@dataclass(frozen=True)
class WallTime:
    """Decoder: wall time from a boot-time member (``bpf_ktime_get_boot_ns``; 0 means now).
    A writer that recognises it reads the member in place and does the same sum itself."""

    member: str = "timestamp"

    def __call__(self, batch: Batch) -> Array:
        return wall_times_from_boot_times(batch.member(self.member))


def timestamp(description: str = "when it happened", member: str = "timestamp") -> Field:
    """Wall time of the event, from a boot-time member (``timestamp`` by default)."""
    return Field(
        "timestamp",
        Kind.TIME,
        description,
        member=None if member == "timestamp" else member,
        decode=WallTime(member),
        omit_empty=True,
        tags=("boot_time",),
        column=Column(hidden=True),
    )


def mntns(description: str = "mount namespace id", member: str = "mntns_id") -> Field:
    """The ``mntns_id`` member: how the containers operator finds the event's container."""
    return Field(
        "mntns",
        Kind.UINT,
        description,
        member=member,
        json="mountnsid",
        omit_empty=True,
        tags=("mntns",),
        column=Column(width=12, hidden=True, align="right"),
    )


def per_distinct(values: Array, text: Callable[[int], str]) -> Array:
    """``text(v)`` for every value, computed once per distinct value: a batch holds many
    events but few distinct flags, errnos or states."""
    unique, inverse = np.unique(np.asarray(values), return_inverse=True)
    table = np.array([text(v) for v in unique.tolist()] + [""], dtype=object)
    return table[inverse.reshape(-1)] if len(unique) else table[:0]


def errno_name(code: int) -> str:
    """``ECONNREFUSED`` for 111 (either sign); empty for 0."""
    code = abs(int(code))
    return "" if code == 0 else errno.errorcode.get(code, str(code))


# ---- who: struct gadget_process ------------------------------------------------------------

PROCESS_MEMBER = "proc"
"""The member name ``igrun/process.h`` suggests for ``struct gadget_process`` in an event."""

_RIGHT = Column(align="right")
_HIDDEN_ID = Column(min_width=8, hidden=True, align="right")
_ERROR_COLUMN = Column(width=12, hidden=True)
_DURATION_COLUMN = Column(width=10, align="right")
_IP_COLUMN = Column(width=2, align="right")
_ADDRESS_COLUMN = Column(width=16, min_width=15, max_width=45)


def uid_field(
    name: str = "uid",
    description: str = "user id",
    member: str | None = None,
    column: Column = _HIDDEN_ID,
) -> Field:
    """A user id: a number, right-aligned, hidden by default (as ``ig``'s ``uid`` column)."""
    return Field(name, Kind.UINT, description, member=member, column=column)


def gid_field(
    name: str = "gid",
    description: str = "group id",
    member: str | None = None,
    column: Column = _HIDDEN_ID,
) -> Field:
    """A group id, shown as :func:`uid_field` shows a user id."""
    return Field(name, Kind.UINT, description, member=member, column=column)


def _process_field(name: str, field_name: str, member: str, about: str) -> Field:
    """One member of ``struct gadget_process`` as every gadget shows it by default."""
    of = f" {about}" if about else ""
    if name == "mntns":
        return mntns(f"mount namespace id{of}", member=f"{member}.mntns_id")
    if name == "uid":
        return uid_field(field_name, f"user id{of}", f"{member}.uid")
    if name == "gid":
        return gid_field(field_name, f"group id{of}", f"{member}.gid")
    kind, text, column = _PROCESS_DEFAULTS[name]
    return Field(
        field_name, kind, text + of, member=f"{member}.{name}", column=column, omit_empty=True
    )


_PROCESS_DEFAULTS: dict[str, tuple[Kind, str, Column]] = {
    "pid": (Kind.UINT, "process id", Column(min_width=7, align="right")),
    "tid": (Kind.UINT, "thread id", Column(hidden=True, align="right")),
    "ppid": (Kind.UINT, "parent process id", _RIGHT),
    "comm": (Kind.STR, "command name", Column(max_width=16)),
}
PROCESS_NAMES = ("mntns", "pid", "tid", "ppid", "uid", "gid", "comm")
"""The members of ``struct gadget_process`` that :func:`process_fields` describes."""


def process_fields(
    *names: str,
    member: str = PROCESS_MEMBER,
    prefix: str = "",
    about: str = "",
    **changes: Mapping[str, Any],
) -> list[Field]:
    """The fields of a ``struct gadget_process`` member of the event, in the order ``names``
    gives (``"pid tid comm"``; all of :data:`PROCESS_NAMES` by default): ``pid``, ``comm``
    ... read from ``proc.pid``, ``proc.comm`` ..., and ``mntns`` tagged for the containers
    operator.

    ``prefix`` goes before each field's name but ``mntns``'s (``tpid``, ``tcomm`` for the
    task that triggered something), ``about`` after each description (``"of the sender"``),
    and a keyword named after a member changes that field's attributes, e.g.
    ``comm={"column": Column()}`` or ``tid={"description": "thread id that called exec"}``.

    In JSON, as ``ig`` writes them: ``pid``, ``tid``, ``ppid``, ``comm`` and ``mountnsid``
    are left out when empty (``omitempty``), ``uid`` and ``gid`` always written.
    """
    chosen = tuple(n for arg in names for n in arg.split()) or PROCESS_NAMES
    unknown = sorted(set(chosen).union(changes) - set(PROCESS_NAMES))
    if unknown:
        raise ValueError(f"struct gadget_process has no member {', '.join(unknown)}")
    out = []
    for name in chosen:
        field_name = name if name == "mntns" else prefix + name
        field = _process_field(name, field_name, member, about)
        out.append(replace(field, **changes[name]) if name in changes else field)
    return out


# ---- how: flags, errno, file modes, durations, addresses -----------------------------------


class _PerDistinct:
    """Decoder: ``decode(v)`` of a member's values, computed once per distinct value and
    placed one by one (numpy would make a 2-D array of lists of equal length)."""

    def __init__(self, member: str, decode: Callable[[int], Any]) -> None:
        self.member = member
        self.decode = decode

    def __call__(self, batch: Batch) -> Array:
        distinct, index = np.unique(batch.member(self.member), return_inverse=True)
        decoded = np.empty(len(distinct), dtype=object)
        for i, value in enumerate(distinct.tolist()):
            decoded[i] = self.decode(value)
        return decoded[index.reshape(-1)]


class _Joined:
    """Decoder: the lists of another field joined into one string per event."""

    def __init__(self, lists: str, separator: str) -> None:
        self.lists = lists
        self.separator = separator

    def __call__(self, batch: Batch) -> Array:
        lists = batch[self.lists]
        out = np.empty(len(lists), dtype=object)
        out[:] = [self.separator.join(names) for names in lists]
        return out


def flag_fields(
    member: str,
    description: str,
    names: Callable[[int], list[str]] | None = None,
    decode: Decoder | None = None,
    separator: str = "|",
    raw_name: str = "flagsRaw",
    raw_kind: Kind = Kind.INT,
    raw_description: str = "flags as passed",
) -> list[Field]:
    """Flags of a call, the way ``ig`` shows them, as three fields: ``flags``, the names
    joined by ``separator`` for the columns; ``flagnames``, the list of names (``flags`` in
    JSON); and the number as passed (``raw_name``, ``flagsRaw`` in JSON). All hidden.

    ``names`` turns one value of ``member`` into its names (computed once per distinct
    value); a gadget whose names depend on more than the value passes ``decode`` instead,
    a decoder of the whole batch that returns a list of names per event.
    """
    if (names is None) == (decode is None):
        raise ValueError("flag_fields needs names or decode, not both")
    lists = decode if decode is not None else _PerDistinct(member, names)  # type: ignore[arg-type]
    if names is not None:
        text: Decoder = _PerDistinct(member, lambda v: separator.join(names(v)))
    else:
        text = _Joined("flagnames", separator)
    wide = Column(width=24, hidden=True)
    return [
        Field("flags", Kind.STR, f"flag names, joined by {separator!r}", json="-",
              decode=text, column=wide),
        Field("flagnames", Kind.LIST, description, json="flags", decode=lists, column=wide,
              omit_empty=True),
        Field(raw_name, raw_kind, raw_description, member=member, json="flagsRaw",
              column=Column(width=10, hidden=True, align="right"), omit_empty=True),
    ]  # fmt: skip


class _ErrnoNames:
    """Decoder: errno names of a member, from a return value (``-errno`` or a result) or from
    a positive errno; empty where there was no error."""

    def __init__(self, member: str, returned: bool) -> None:
        self.member = member
        self.returned = returned

    def __call__(self, batch: Batch) -> Array:
        values = batch.member(self.member)
        if self.returned:
            values = np.minimum(values.astype(np.int64), 0)  # -errno, or 0
        return per_distinct(values, errno_name)


def errno_field(
    description: str,
    member: str = "ret",
    name: str = "error",
    returned: bool = True,
    column: Column = _ERROR_COLUMN,
    omit_empty: bool = False,
) -> Field:
    """An errno shown by name (``EADDRINUSE``), empty when there was none. ``member`` holds a
    syscall's return value (``-errno`` on failure) when ``returned``, else a positive errno.
    ``omit_empty`` leaves an empty name out of JSON (``ig``'s keys are ``omitempty``)."""
    return Field(
        name,
        Kind.STR,
        description,
        decode=_ErrnoNames(member, returned),
        column=column,
        omit_empty=omit_empty,
    )


def format_mode(mode: int) -> str:
    """Permission bits as Go's ``fs.FileMode.String`` prints them (ig's ``mode``): ``-rw-r--r--``;
    a raw 04000 is no Go setuid bit, so setuid, setgid and sticky do not show, as in ig."""
    return "-" + "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))


def mode_fields(
    description: str,
    member: str = "mode",
    name: str = "mode",
    raw_name: str = "modeRaw",
) -> list[Field]:
    """File permissions as ``ig`` shows them (``-rw-r--r--``, :func:`format_mode`) and as a
    number (``raw_name``); both hidden."""
    return [
        Field(name, Kind.STR, description, decode=_PerDistinct(member, format_mode),
              column=Column(width=10, hidden=True), omit_empty=True),
        Field(raw_name, Kind.UINT, "mode as a number", member=member,
              column=Column(width=7, hidden=True, align="right"), omit_empty=True),
    ]  # fmt: skip


_UNITS = {"ns": "nanoseconds", "us": "microseconds", "ms": "milliseconds"}


def duration_field(
    name: str,
    description: str,
    unit: str = "ns",
    member: str | None = None,
    json: str | None = None,
    column: Column = _DURATION_COLUMN,
    omit_empty: bool = True,
) -> Field:
    """A duration kept as an integer number of ``unit`` (``ns``, ``us`` or ``ms``), which the
    description names: ``"time spent in the call"`` reads ``…, in nanoseconds``. Left out of
    JSON when 0 unless ``omit_empty`` is False, as ``ig``'s latencies are."""
    if unit not in _UNITS:
        raise ValueError(f"unit {unit!r} is none of {', '.join(_UNITS)}")
    text = f"{description}, in {_UNITS[unit]}"
    return Field(
        name, Kind.UINT, text, member=member, json=json, column=column, omit_empty=omit_empty
    )


def ip_version_field(
    member: str = "ipversion",
    description: str = "IP version",
    column: Column = _IP_COLUMN,
) -> Field:
    """The IP version (4 or 6) as ``ig`` shows it: column ``ip``, JSON ``ipversion``."""
    return Field(
        "ip",
        Kind.UINT,
        description,
        member=member,
        json="ipversion",
        column=column,
        omit_empty=True,
    )


class _Addresses:
    """Decoder: 16-byte addresses as text, IPv4 or IPv6 after a version member."""

    def __init__(self, member: str, version: str) -> None:
        self.member = member
        self.version = version

    def __call__(self, batch: Batch) -> Array:
        return ip_strings(batch.member(self.member), batch.member(self.version))


def ip_address_field(
    name: str,
    description: str,
    member: str,
    version: str = "ipversion",
    column: Column = _ADDRESS_COLUMN,
) -> Field:
    """An IP address kept as 16 bytes (IPv4 in the first four), shown as text."""
    return Field(
        name,
        Kind.STR,
        description,
        decode=_Addresses(member, version),
        column=column,
        omit_empty=True,
    )


def connection_fields(
    local: str = "local endpoint",
    remote: str = "remote endpoint",
    member: str = "",
    ip: Column = _IP_COLUMN,
    ip_description: str = "IP version",
) -> list[Field]:
    """A TCP or UDP connection: ``ip`` and the ``src`` and ``dst`` endpoints
    (:func:`~igrun.core.events.endpoints.l4_endpoint`), from ``saddr``, ``sport``, ``daddr``,
    ``dport`` and ``ipversion`` (members of ``member`` when given, e.g. a nested struct)."""
    at = f"{member}." if member else ""
    version = f"{at}ipversion"
    return [
        ip_version_field(version, ip_description, ip),
        *l4_endpoint("src", f"{at}saddr", f"{at}sport", version, local),
        *l4_endpoint("dst", f"{at}daddr", f"{at}dport", version, remote),
    ]
