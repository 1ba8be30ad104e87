"""Sockets inside another network namespace (a container's), for per-namespace BPF programs.

A socket belongs to the network namespace it was created in, whatever its owner does later:
a raw ``AF_PACKET`` socket made inside a container's namespace sees that namespace's traffic,
and a socket filter attached to it runs on every packet of it. The socket is made by a
short-lived thread that enters the namespace (``setns`` changes only the calling thread), so
no thread of the caller ever leaves its own namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import socket
import threading

from igrun.core.errors import IgrunError

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(
    pid: int, family: int = socket.AF_PACKET, type: int = socket.SOCK_RAW, proto: int = -1
) -> socket.socket:
    """A socket made in the network namespace of process ``pid`` (a container's init).

    The default is a raw packet socket for every protocol (``ETH_P_ALL``): what a socket
    filter needs to see all of the namespace's packets. Raises :class:`IgrunError` when the
    namespace cannot be entered (the process is gone, or igrun is not root).
    """
    if proto == -1:
        proto = socket.htons(ETH_P_ALL) if family == socket.AF_PACKET else 0
    made: list[socket.socket] = []
    failed: list[OSError] = []

    def work() -> None:
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(target)
            finally:
                os.close(target)
            made.append(socket.socket(family, type, proto))
        except OSError as exc:
            failed.append(exc)
        # The thread ends here, and its namespace with it.

    thread = threading.Thread(target=work, name=f"igrun-netns-{pid}")
    thread.start()
    thread.join()
    if failed:
        raise IgrunError(f"cannot open a socket in the network namespace of pid {pid}: "
                         f"{failed[0].strerror or failed[0]}")  # fmt: skip
    return made[0]
