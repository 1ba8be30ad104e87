"""HTTP over a Unix socket (Docker's API), with the standard library's client.

A module of its own so that ``http.client`` (and the ``email`` and ``ssl`` modules it pulls in,
about 30 ms) is imported only when a Docker socket is actually there to talk to.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path

HTTPException = http.client.HTTPException


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self.path))
        self.sock = sock
