"""Small conversions gadgets need, after Inspektor Gadget's ``pkg/gadgets`` helpers.

Byte order, IP addresses, protocol names, C strings and time. Where a gadget converts a whole
batch, the vectorised numpy form is the one to use.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
else:
    from igrun.core.lazy import numpy as np

_PROTOCOLS = {
    0: "IP",
    1: "ICMP",
    2: "IGMP",
    4: "IPIP",
    6: "TCP",
    17: "UDP",
    41: "IPv6",
    47: "GRE",
    50: "ESP",
    51: "AH",
    58: "ICMPv6",
    132: "SCTP",
    136: "UDPLite",
    255: "RAW",
}


def htonl(value: int) -> int:
    """Host to network byte order, 32 bits."""
    return socket.htonl(value)


def htons(value: int) -> int:
    """Host to network byte order, 16 bits."""
    return socket.htons(value)


def ip_version_from_af(af: int) -> int:
    """4 for AF_INET, 6 for AF_INET6, 0 otherwise."""
    versions: dict[int, int] = {int(socket.AF_INET): 4, int(socket.AF_INET6): 6}
    return versions.get(af, 0)


def ip_string_from_bytes(addr: bytes, version: int) -> str:
    """A 16-byte address buffer as text; IPv4 uses the first four bytes. An IPv4-mapped IPv6
    address reads ``::ffff:127.0.0.1``, as Go's ``netip`` (and so ``ig``) prints it."""
    if version == 4:
        return str(ipaddress.IPv4Address(bytes(addr[:4])))
    if version == 6:
        if bytes(addr[:12]) == _V4_MAPPED:
            return "::ffff:" + str(ipaddress.IPv4Address(bytes(addr[12:16])))
        return str(ipaddress.IPv6Address(bytes(addr[:16])))
    return ""


_V4_MAPPED = bytes(10) + b"\xff\xff"


def ip_string_to_bytes(text: str) -> bytes:
    """An address as the 16-byte buffer BPF programs use (IPv4 in the first four bytes)."""
    packed = ipaddress.ip_address(text).packed
    return packed.ljust(16, b"\0")


def ip_string_to_uint32(text: str) -> int:
    """An IPv4 address as the uint32 whose memory holds it in network order."""
    return int.from_bytes(ipaddress.IPv4Address(text).packed, sys.byteorder)


def proto_string(proto: int) -> str:
    """``TCP``, ``UDP`` …, or ``proto<N>`` for numbers without a name."""
    return _PROTOCOLS.get(proto, f"proto{proto}")


def from_cstring(data: bytes) -> str:
    """A NUL-terminated C string (or one filling its buffer) as text."""
    return data.partition(b"\0")[0].decode("utf-8", "replace")


def from_cstring_n(data: bytes, length: int) -> str:
    """The first ``length`` bytes of a C string buffer as text, stopping at a NUL."""
    return from_cstring(data[:length])


def boot_to_wall_offset() -> int:
    """Nanoseconds to add to ``CLOCK_BOOTTIME`` (``bpf_ktime_get_boot_ns``) for wall time."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def wall_time_from_boot_time(ts: int) -> int:
    """Wall time (ns since the epoch) of a boot timestamp; 0 (no timestamp) means now."""
    if ts == 0:
        return time.time_ns()
    return ts + boot_to_wall_offset()


def wall_times_from_boot_times(ts: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """:func:`wall_time_from_boot_time` for a whole array at once."""
    out = ts.astype(np.int64) + boot_to_wall_offset()
    missing = ts == 0
    if missing.any():
        out[missing] = time.time_ns()
    return out


def format_rfc3339_ns(ns: int) -> str:
    """``2024-01-02T15:04:05.123456789+01:00`` in local time, nanoseconds kept."""
    seconds, frac = divmod(int(ns), 1_000_000_000)
    stamp = _dt.datetime.fromtimestamp(seconds).astimezone()
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    offset = stamp.strftime("%z")
    return f"{text}.{frac:09d}{offset[:3]}:{offset[3:]}"


def has_bpf_ktime_get_boot_ns() -> bool:
    """Whether BPF programs can call ``bpf_ktime_get_boot_ns`` (Linux 5.7+)."""
    from igrun.core.bpf.objects import has_ktime_get_boot_ns

    return has_ktime_get_boot_ns()


def ipv4_strings(addrs: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """IPv4 addresses held as network-order uint32 in memory, as text, for a whole batch."""
    raw = np.ascontiguousarray(addrs, dtype="<u4").view(np.uint8).reshape(-1, 4)
    out = np.empty(len(raw), dtype=object)
    out[:] = [f"{a}.{b}.{c}.{d}" for a, b, c, d in raw.tolist()]
    return out


def ip_strings(addrs: npt.NDArray[Any], versions: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """16-byte address buffers (an ``(n, 16)`` uint8 array or ``S16``/``V16`` records) as text.

    IPv4 addresses sit in the first 4 bytes. A batch holds few distinct addresses, so each
    distinct (address, version) pair is formatted once.
    """
    raw = np.ascontiguousarray(addrs).view(np.uint8).reshape(-1, 16)
    keys = np.concatenate([raw, np.asarray(versions, dtype=np.uint8).reshape(-1, 1)], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    texts = np.empty(len(unique), dtype=object)
    texts[:] = [ip_string_from_bytes(bytes(row[:16]), int(row[16])) for row in unique.tolist()]
    return texts[inverse.reshape(-1)] if len(raw) else np.empty(0, dtype=object)
