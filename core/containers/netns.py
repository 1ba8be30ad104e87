"""Sockets inside another network namespace (a container's), for per-namespace BPF programs.

A socket belongs to the network namespace it was created in, whatever its owner does later:
a raw ``AF_PACKET`` socket made inside a container's namespace sees that namespace's traffic,
and a socket filter attached to it runs on every packet of it. The socket is made by a
short-lived thread that enters the namespace (``setns`` changes only the calling thread), so
no thread of the caller ever leaves its own namespace.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from igrun.core.errors import IgrunError

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
"""The C library, through the interpreter's own symbols (no ``ctypes.util`` search, which
imports ``subprocess`` and more: the head start makes its first socket here)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetnsGone(IgrunError):
    """The namespace cannot be entered: its process is gone (or is no longer in it)."""

    def __init__(self, pid: int, reason: str) -> None:
        super().__init__(f"cannot enter the network namespace of pid {pid}: {reason}")
        self.reason = reason


def run_in_netns(pid: int, netns: int, work: Callable[[], T]) -> T:
    """``work()``, called in a short-lived thread inside the network namespace of process
    ``pid`` (in the caller's thread when that is already in it), and what it returned (or
    raised). ``netns`` (its id, the inode number) guards
    against a pid reused by a process in another namespace; 0 takes whatever ``pid`` is in.

    What ``work`` makes there stays in that namespace: a socket, or a BPF iterator's seq file
    (the ``tcp`` and ``udp`` iterators walk the namespace they are opened in). Raises
    :class:`NetnsGone` when the namespace cannot be entered.
    """
    try:
        here = os.stat("/proc/thread-self/ns/net").st_ino
        if os.stat(f"/proc/{pid}/ns/net").st_ino == here and netns in (0, here):
            return work()  # already there (the host's, for the host's processes)
    except OSError:
        pass  # said below, from the thread that tries to enter it
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            failed.append(NetnsGone(pid, exc.strerror or str(exc)))
            return
        try:
            if netns and os.fstat(target).st_ino != netns:
                failed.append(NetnsGone(pid, f"it is no longer in namespace {netns}"))
                return
            _setns(target)
        except OSError as exc:
            failed.append(NetnsGone(pid, exc.strerror or str(exc)))
            return
        finally:
            os.close(target)
        try:
            done.append(work())
        except BaseException as exc:
            failed.append(exc)
        # The thread ends here, and its namespace with it.

    thread = threading.Thread(target=run, name=f"igrun-netns-{pid}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def socket_in_netns(
    pid: int,
    family: int = socket.AF_PACKET,
    type: int = socket.SOCK_RAW,
    proto: int = -1,
    netns: int = 0,
) -> socket.socket:
    """A socket made in the network namespace of process ``pid`` (a container's init); with
    ``netns``, only if that is the namespace's inode (a reused pid may be in another).

    The default is a raw packet socket for every protocol (``ETH_P_ALL``): what a socket
    filter needs to see all of the namespace's packets. Raises :class:`IgrunError` when the
    namespace cannot be entered (the process is gone, or igrun is not root).
    """
    if proto == -1:
        proto = socket.htons(ETH_P_ALL) if family == socket.AF_PACKET else 0
    try:
        return run_in_netns(pid, netns, lambda: socket.socket(family, type, proto))
    except (NetnsGone, OSError) as exc:
        reason = exc.reason if isinstance(exc, NetnsGone) else exc.strerror or str(exc)
        raise IgrunError(f"cannot open a socket in the network namespace of pid {pid}: "
                         f"{reason}") from None  # fmt: skip
