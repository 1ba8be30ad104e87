"""The HTTP endpoint of the prometheus operator: one small threaded WSGI server on the
``--metrics-listen-address``, answering only at its metrics paths. Its own module so that a
run without ``--metrics-config`` never imports an HTTP server.

The runs of one process (a config file's) that name one address share one server
(:class:`Endpoints`): a second bind of the same port would fail with ``EADDRINUSE``.
Each path is one registry, so runs that name the same path are scraped together."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from igrun.core.errors import IgrunError, ParamError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

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


def _wanted(path: str) -> str:
    return path.rstrip("/") or "/"


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


class Endpoint:
    """One server shared by the runs that name its address: a registry per metrics path,
    started by the first run that is attached, closed when the last run lets it go."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.registries: dict[str, CollectorRegistry] = {}
        self.paths: dict[str, str] = {}
        """The path each registry was asked for, as given (for the 404 text)."""
        self.users = 0
        self.extras: dict[str, Any] = {}
        """What users of one path share besides the registry (by path)."""
        self.lock = threading.Lock()
        self.server = MetricsServer(address, self._route)

    def _route(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        from prometheus_client import make_wsgi_app

        with self.lock:
            registry = self.registries.get(_wanted(environ.get("PATH_INFO", "")))
            paths = ", ".join(sorted(self.paths.values()))
        if registry is not None:
            return make_wsgi_app(registry)(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found: the metrics are at {paths}\n".encode()]

    def registry(self, path: str) -> CollectorRegistry:
        """The registry served at ``path`` (made on first use)."""
        from prometheus_client import CollectorRegistry

        with self.lock:
            key = _wanted(path)
            if key not in self.registries:
                self.registries[key] = CollectorRegistry()
                self.paths[key] = path
            return self.registries[key]

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        """Answer from now on (the first attached run calls it; later calls do nothing)."""
        with self.lock:
            if self.server.thread is None:
                self.server.start()


class Endpoints:
    """The metrics servers of a process, by address: what the runs of a config file share
    (a process resource), so two runs that name one address use one server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_address: dict[tuple[str, int], Endpoint] = {}

    def acquire(self, address: str) -> Endpoint:
        """The endpoint at ``address``, bound now if it is the first run to name it."""
        key = parse_listen_address(address)
        with self.lock:
            endpoint = self.by_address.get(key)
            if endpoint is None or key[1] == 0:  # port 0: a port of its own each time
                endpoint = Endpoint(address)
                self.by_address[key] = endpoint
            endpoint.users += 1
            return endpoint

    def release(self, endpoint: Endpoint) -> None:
        """A run is done with ``endpoint``: the last one closes it (the port is free)."""
        with self.lock:
            endpoint.users -= 1
            if endpoint.users > 0:
                return
            key = parse_listen_address(endpoint.address)
            if self.by_address.get(key) is endpoint:
                del self.by_address[key]
        endpoint.server.stop()
