"""The HTTP endpoint of the prometheus operator: one small threaded WSGI server on the
``--metrics-listen-address``, answering only at ``--metrics-path``. Its own module so that a
run without ``--metrics-config`` never imports an HTTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from igrun.core.errors import IgrunError, ParamError

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not news: no line per request."""


def parse_listen_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:2223``, ``[::1]:2223`` or ``:2223`` (every interface) -> host, port."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ParamError(
            f'--metrics-listen-address: "{text}" is not host:port (e.g. 127.0.0.1:2223)'
        )
    return host.strip("[]") or "0.0.0.0", int(port)


def routed(path: str, app: WsgiApp) -> WsgiApp:
    """``app`` at ``path`` only; anything else is a 404 that says where the metrics are."""
    wanted = path.rstrip("/") or "/"

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (environ.get("PATH_INFO", "").rstrip("/") or "/") == wanted:
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found: the metrics are at {path}\n".encode()]

    return route


class MetricsServer:
    """An HTTP server bound at once (a port in use fails before any BPF loads) that answers
    only from :meth:`start` on: once it answers, the gadget is attached."""

    def __init__(self, address: str, app: WsgiApp) -> None:
        host, port = parse_listen_address(address)
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        except OSError as exc:
            raise ParamError(f"--metrics-listen-address {address}: {exc.strerror}") from None
        server_class = _Server6 if family == socket.AF_INET6 else _Server
        self.server = server_class((host, port), _QuietHandler, bind_and_activate=False)
        try:
            self.server.server_bind()
        except OSError as exc:
            self.server.server_close()
            raise IgrunError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from None
        self.server.set_app(app)
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.server.server_activate()
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="igrun-metrics",
            daemon=True,
        )
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join()
            self.thread = None
        self.server.server_close()
