"""The agent's gRPC API: one service, generic methods, JSON requests, framed bytes back.

No generated code: every method takes and returns bytes (``grpc.method_handlers_generic_handler``
on the agent, ``channel.unary_stream(..., None, None)`` on the client).

- ``/igrun.Agent/Run`` (one request, a stream back): the request is JSON
  ``{"gadget": "trace exec", "params": {"host": "true", "operator.output.output": "json"},
  "operators": null}`` (``params`` is the flat map of config files, ``operators`` the chain
  or null for the default one). Each message back is one frame: its first byte says what it
  is, the rest is its content (:data:`OUTPUT` ... :data:`END`). A request the agent refuses
  ends the call with ``INVALID_ARGUMENT`` (exit code 2) and the CLI's one-line error as its
  details; a run that fails ends it with ``FAILED_PRECONDITION`` (exit code 1).
- ``/igrun.Agent/List``: ``{}`` -> JSON ``[{"id", "gadget", "peer", "node"}...]``, the runs now.
- ``/igrun.Agent/Stop``: ``{"id": ID}`` -> ``{"stopped": true|false}``: ends a run (its last
  events still reach its client, which then sees :data:`END`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE = "igrun.Agent"
RUN = f"/{SERVICE}/Run"
LIST = f"/{SERVICE}/List"
STOP = f"/{SERVICE}/Stop"
DEFAULT_ADDRESS = "unix:///run/igrun.sock"

OUTPUT = b"o"
"""Bytes the run writes to its stdout: what ``igrun`` would print (``-o json`` lines...)."""
READY = b"r"
"""JSON ``{"id", "node"}``: every program is attached."""
WARN = b"w"
"""A warning of the run as text (``lost 12 events``), logged on the client's stderr."""
END = b"e"
"""JSON ``{"lost": N|null, "summary": "lost N events (buffer full): try ..."|null,
"agent_stopped": bool}``: the run has ended and drained (``agent_stopped``: because the agent
is stopping); nothing follows."""

INVALID_EXIT = 2
"""The exit code of a refused request, as the CLI's for bad input."""


def frame(kind: bytes, body: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(body, dict):
        body = json.dumps(body, separators=(",", ":"))
    if isinstance(body, str):
        body = body.encode()
    return kind + body


@dataclass(frozen=True)
class Tls:
    """Mutual TLS: this side's certificate and key, and the CA that signs the other side's
    certificate (PEM files). The agent requires a client certificate signed by ``ca``."""

    cert: Path
    key: Path
    ca: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        from igrun.core.errors import UsageError

        try:
            return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read a TLS file: {exc.filename}: {exc.strerror}") from None

    @classmethod
    def from_flags(cls, cert: str | None, key: str | None, ca: str | None) -> Tls | None:
        """Every one of the three, or none (plain unix socket)."""
        from igrun.core.errors import UsageError

        given = [v for v in (cert, key, ca) if v]
        if not given:
            return None
        if len(given) != 3:
            raise UsageError("TLS needs all of --tls-cert, --tls-key and --tls-ca")
        assert cert and key and ca
        return cls(Path(cert), Path(key), Path(ca))


def check_address(address: str, tls: Tls | None) -> str:
    """``unix:///path`` or ``HOST:PORT`` (TCP, only with TLS): the address as gRPC takes it."""
    from igrun.core.errors import UsageError

    if address.startswith("unix:"):
        if not address.startswith("unix:///") and not address.startswith("unix:/"):
            raise UsageError(f"invalid address {address!r}: use unix:///path/to.sock")
        return address
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise UsageError(f"invalid address {address!r}: use unix:///path or HOST:PORT")
    if tls is None:
        raise UsageError(
            f"TCP address {address!r} needs mutual TLS (--tls-cert, --tls-key, --tls-ca)"
        )
    return address
