"""HTTP over a Unix socket (Docker's API), with the standard library's client.

A module of its own so that ``http.client`` (and the ``email`` and ``ssl`` modules it pulls in,
about 30 ms) is imported only when a Docker socket is actually there to talk to.

Every connection has a deadline for all it does: a per-read timeout alone would let a server
that trickles a byte a second hold igrun for as long as it likes.
"""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path
from typing import Any

HTTPException = http.client.HTTPException


class DeadlineSocket(socket.socket):
    """A socket whose every connect, send and receive ends by one deadline (``time.monotonic``
    seconds), raising ``TimeoutError`` past it."""

    deadline = 0.0

    def _left(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.settimeout(left)

    def connect(self, address: Any) -> None:
        self._left()
        super().connect(address)

    def sendall(self, data: Any, flags: int = 0) -> None:
        self._left()
        super().sendall(data, flags)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._left()
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._left()
        return super().recv_into(buffer, nbytes, flags)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, deadline: float) -> None:
        super().__init__("localhost")
        self.path = path
        self.deadline = deadline

    def connect(self) -> None:
        sock = DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.deadline = self.deadline
        try:
            sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock
