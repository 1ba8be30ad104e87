"""When a process started, to the microsecond: the kernel's taskstats, over generic netlink.

``/proc/<pid>/stat`` gives a process's start in clock ticks (10 ms here). That is too coarse
where one mount-ns id passes from a container that just ended to the next one: the boundary
between their events is the new container's start, and a tick-rounded start gives the old
container's last events of that tick to the new one. Taskstats (``CONFIG_TASKSTATS``, root)
says how long ago the process started (``ac_etime``, in microseconds, measured by the kernel
when it answers), which places the start within the time the question takes.

Only the standard library: one socket per question, no state kept.
"""

from __future__ import annotations

import os
import socket
import struct
import time

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
TASKSTATS_CMD_GET = 1
TASKSTATS_CMD_ATTR_PID = 1
TASKSTATS_TYPE_PID = 1
TASKSTATS_TYPE_STATS = 3
TASKSTATS_TYPE_AGGR_PID = 4
NLM_F_REQUEST = 1
NLMSG_ERROR = 2

NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port
GENL = struct.Struct("=BBH")  # command, version, reserved
ATTR = struct.Struct("=HH")  # length, type
AC_PID = struct.Struct("=I")  # struct taskstats: ac_pid at 128, ac_etime at 144 (since v1)
AC_ETIME = struct.Struct("=Q")
AC_PID_OFFSET, AC_ETIME_OFFSET = 128, 144
TIMEOUT_S = 0.5
REPLY_BYTES = 4096  # struct taskstats is under 512 bytes


def _attr(kind: int, payload: bytes) -> bytes:
    size = ATTR.size + len(payload)
    return ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    """Netlink attributes, by type (nested ones stay packed). Sizes come from the kernel and
    are checked against what is there."""
    out: dict[int, bytes] = {}
    at = 0
    while at + ATTR.size <= len(data):
        size, kind = ATTR.unpack_from(data, at)
        if size < ATTR.size or at + size > len(data):
            break
        out[kind & 0x3FFF] = data[at + ATTR.size : at + size]  # without the nesting flags
        at += (size + 3) & ~3
    return out


def _ask(sock: socket.socket, kind: int, command: int, attrs: bytes) -> dict[int, bytes]:
    """One request and its reply's attributes; OSError with the kernel's errno on an error."""
    body = GENL.pack(command, 1, 0) + attrs
    sock.send(NLMSG.pack(NLMSG.size + len(body), kind, NLM_F_REQUEST, 1, 0) + body)
    reply = sock.recv(REPLY_BYTES)
    if len(reply) < NLMSG.size:
        raise OSError(0, "short netlink reply")
    size, reply_kind, _, _, _ = NLMSG.unpack_from(reply)
    if reply_kind == NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", reply, NLMSG.size)
        raise OSError(-err, os.strerror(-err))
    return _attrs(reply[NLMSG.size + GENL.size : min(size, len(reply))])


def start_boot_ns(pid: int) -> int | None:
    """When ``pid`` started, in boot-time nanoseconds, to within the time the question took
    (an early bound: never after the start); None when taskstats cannot tell (no such
    process, not root, a kernel without it, or a network namespace that does not offer it).

    The kernel measures the age on the monotonic clock; the result is on the boot-time clock,
    which is the same but for time spent suspended since (none on a server)."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as sock:
            sock.settimeout(TIMEOUT_S)
            family = _ask(sock, GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                          _attr(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"))  # fmt: skip
            family_id = family.get(CTRL_ATTR_FAMILY_ID, b"")
            if len(family_id) < 2:
                return None
            before = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            reply = _ask(sock, struct.unpack_from("=H", family_id)[0], TASKSTATS_CMD_GET,
                         _attr(TASKSTATS_CMD_ATTR_PID, struct.pack("=I", pid)))  # fmt: skip
    except OSError:
        return None
    stats = _attrs(reply.get(TASKSTATS_TYPE_AGGR_PID, b"")).get(TASKSTATS_TYPE_STATS, b"")
    if len(stats) < AC_ETIME_OFFSET + AC_ETIME.size:
        return None
    if AC_PID.unpack_from(stats, AC_PID_OFFSET)[0] != pid:
        return None
    age_us: int = AC_ETIME.unpack_from(stats, AC_ETIME_OFFSET)[0]
    # The kernel took the age after ``before`` and rounded it down to the microsecond.
    return before - (age_us + 1) * 1000
