"""The kernel's audit stream: a socket on its netlink multicast group.

Every audit record the kernel emits is also multicast on ``NETLINK_AUDIT`` to the group
``AUDIT_NLGRP_READLOG`` (needs ``CAP_AUDIT_READ``), whether or not an audit daemon runs and
without taking its place: reading it changes nothing for anyone else. Records are queued on
the socket from its bind on.

Standard library only, and kept apart from the gadget's module: the launcher's head start
(:mod:`igrun.core.run.headstart`) opens the stream first thing (:func:`head_start_open`),
so that records of the first moments wait on it while igrun is still importing.
"""

from __future__ import annotations

import socket

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1


def open_stream() -> socket.socket:
    """A socket on the audit multicast group, non-blocking."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
    try:
        sock.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def head_start_open() -> socket.socket:
    """The stream, opened by the launcher for the run to take (``HeadStart.opened``)."""
    return open_stream()
