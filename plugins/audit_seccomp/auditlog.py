"""The kernel's audit stream's seccomp records, read from the socket
:func:`~igrun.plugins.audit_seccomp.stream.open_stream` opens. A record is one
netlink message whose payload is text: ``audit(1796623649.270:1): ... pid=26156
comm="sh" exe="/bin/busybox" sig=0 arch=c000003e syscall=110 compat=0 ip=0x462137
code=0x7ffc0000``.
"""

from __future__ import annotations

import errno
import re
import socket
import struct
from dataclasses import dataclass

AUDIT_SECCOMP = 1326
NLMSG_HDR = struct.Struct("=IHHII")
RECV_BYTES = 1 << 16

_STAMP = re.compile(rb"audit\((\d+)\.(\d+):\d+\):")
_PAIR = re.compile(rb'(\w+)=("[^"]*"|\S+)')


@dataclass(frozen=True)
class SeccompRecord:
    """One ``AUDIT_SECCOMP`` record: which process made which syscall, and what the filter
    said (``code``, the ``SECCOMP_RET_*`` value)."""

    wall_ns: int
    pid: int
    comm: str
    syscall: int
    code: int
    compat: bool
    signal: int


def untrusted(value: bytes) -> str:
    """An audit string: quoted as it is, or hex when it holds a quote, a space or a control
    character (``audit_log_untrustedstring``)."""
    if value.startswith(b'"'):
        return value.strip(b'"').decode("utf-8", "replace")
    try:
        return bytes.fromhex(value.decode()).decode("utf-8", "replace")
    except ValueError:
        return value.decode("utf-8", "replace")


def parse_seccomp(text: bytes) -> SeccompRecord | None:
    """The record in ``text`` (a payload of type AUDIT_SECCOMP), or None when malformed."""
    stamp = _STAMP.match(text)
    if stamp is None:
        return None
    pairs = dict(_PAIR.findall(text[stamp.end() :]))
    try:
        millis = stamp.group(2).ljust(3, b"0")[:3]
        return SeccompRecord(
            wall_ns=int(stamp.group(1)) * 1_000_000_000 + int(millis) * 1_000_000,
            pid=int(pairs[b"pid"]),
            comm=untrusted(pairs.get(b"comm", b'""')),
            syscall=int(pairs[b"syscall"]),
            code=int(pairs[b"code"], 16),
            compat=pairs.get(b"compat", b"0") == b"1",
            signal=int(pairs.get(b"sig", b"0")),
        )
    except (KeyError, ValueError):
        return None


def messages(data: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    out = []
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _port = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            break
        out.append((kind, data[offset + NLMSG_HDR.size : offset + length].rstrip(b"\0")))
        offset += (length + 3) & ~3
    return out


def read_records(sock: socket.socket) -> tuple[list[SeccompRecord], bool]:
    """Every seccomp record waiting on ``sock`` (other record types are skipped), and
    whether the socket's buffer overflowed since the last read (records were lost)."""
    out: list[SeccompRecord] = []
    overflowed = False
    while True:
        try:
            data = sock.recv(RECV_BYTES)
        except BlockingIOError:
            return out, overflowed
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise
            overflowed = True
            continue
        for kind, payload in messages(data):
            if kind == AUDIT_SECCOMP:
                record = parse_seccomp(payload)
                if record is not None:
                    out.append(record)
