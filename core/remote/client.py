"""Clients of the agent: one run on one agent, or the same run fanned out to several.

::

    from igrun.core.remote import fan_out, run_remote

    host = {"operator.containers.host": True}  # --host
    with run_remote("unix:///run/igrun.sock", "trace exec", host) as run:
        for chunk in run.output():      # the bytes `igrun trace exec --host -o json` prints
            ...

    # every agent, one stream on stdout, each event with its agent's k8s.node; Ctrl-C ends all
    fan_out(["10.0.0.1:7443", "10.0.0.2:7443"], "trace exec", host, tls=tls)

Requests carry the flat param map of config files (:func:`~igrun.core.run.gadgetrun.run_gadget`
takes the same); set ``operator.output.output`` to pick the format (``json`` by default here).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, BinaryIO, Self

from igrun.core.errors import IgrunError, OutputClosed
from igrun.core.log import get_logger
from igrun.core.remote import protocol as p

OUTPUT_KEY = "operator.output.output"


class RemoteError(IgrunError):
    """What an agent refused or what failed there: its one line, and the CLI's exit code
    (2: a bad request, 1: a run that failed or an agent out of reach)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _grpc() -> Any:
    try:
        import grpc
    except ImportError:
        raise IgrunError("the remote client needs grpcio: pip install 'igrun[agent]'") from None
    return grpc


def channel(address: str, tls: p.Tls | None = None) -> Any:
    """A gRPC channel to an agent (``unix:///path``, or ``HOST:PORT`` with mutual TLS)."""
    grpc = _grpc()
    target = p.check_address(address, tls)
    if tls is None or target.startswith("unix:"):
        return grpc.insecure_channel(target)
    cert, key, ca = tls.read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    return grpc.secure_channel(target, creds)


def _as_error(exc: Any, address: str) -> RemoteError:
    """A gRPC failure as one line: the agent's own message for what it refused."""
    grpc = _grpc()
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RemoteError(exc.details(), p.INVALID_EXIT)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return RemoteError(exc.details(), 1)
    if code == grpc.StatusCode.UNAVAILABLE:
        return RemoteError(f"{address}: cannot reach the agent ({exc.details()})", 1)
    if code == grpc.StatusCode.CANCELLED:
        return RemoteError(f"{address}: the call was cancelled", 1)
    return RemoteError(f"{address}: {exc.details() or code.name.lower()}", 1)


@dataclass
class RemoteRun:
    """One run on one agent, started by :meth:`start` (or ``with``), streamed by
    :meth:`output`, ended by its timeout, :meth:`stop` (its last events still come) or
    :meth:`cancel` (at once)."""

    address: str
    gadget: str
    params: Mapping[str, Any] = field(default_factory=dict)
    operators: Sequence[str] | None = None
    tls: p.Tls | None = None
    on_warning: Callable[[RemoteRun, str], None] | None = None
    id: str | None = None
    """The run's id on its agent, once it is ready."""
    node: str | None = None
    """The agent's node, once the run is ready."""
    lost: int | None = None
    summary: str | None = None
    """The agent's line about lost events, when the run lost some."""
    ready: threading.Event = field(default_factory=threading.Event)
    _channel: Any = None
    _call: Any = None
    _cancelled: bool = False

    def start(self) -> Self:
        params = {k: _text(v) for k, v in self.params.items()}
        params.setdefault(OUTPUT_KEY, "json")
        request = {"gadget": self.gadget, "params": params, "operators": self.operators}
        self._channel = channel(self.address, self.tls)
        method = self._channel.unary_stream(p.RUN)
        self._call = method(json.dumps(request).encode())
        return self

    def output(self) -> Iterator[bytes]:
        """What the run prints, as the agent wrote it, until the run ends; then raises
        :class:`RemoteError` if it failed or was refused."""
        grpc = _grpc()
        try:
            for message in self._call:
                kind, body = message[:1], message[1:]
                if kind == p.OUTPUT:
                    yield body
                elif kind == p.READY:
                    info = json.loads(body)
                    self.id, self.node = info["id"], info["node"]
                    self.ready.set()
                elif kind == p.WARN and self.on_warning is not None:
                    self.on_warning(self, body.decode(errors="replace"))
                elif kind == p.END:
                    end = json.loads(body)
                    self.lost, self.summary = end["lost"], end["summary"]
                    if end.get("agent_stopped") and self.on_warning is not None:
                        self.on_warning(self, "the agent stopped: this run ended")
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                return  # ended on purpose
            raise _as_error(exc, self.address) from None
        finally:
            self.ready.set()  # no one waits for a run that has ended

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every program is attached on the agent (read :meth:`output` in
        another thread); raises :class:`RemoteError` if the run ended first."""
        if not self.ready.wait(timeout):
            raise RemoteError(f"{self.address}: not ready after {timeout}s")
        if self.id is None:
            raise RemoteError(f"{self.address}: {self.gadget} ended before it was ready")

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the agent to end the run: its last events still come, then the stream ends.
        Whether the agent found it (False: not ready yet, or over)."""
        if self.id is None or self._channel is None:
            return False
        grpc = _grpc()
        try:
            reply = self._channel.unary_unary(p.STOP)(
                json.dumps({"id": self.id}).encode(), timeout=timeout
            )
        except grpc.RpcError:
            return False
        return bool(json.loads(reply)["stopped"])

    def cancel(self) -> None:
        """End the call at once: the agent stops the run (its last events are not sent)."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    def close(self) -> None:
        self.cancel()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> Self:
        return self.start() if self._call is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def run_remote(
    address: str,
    gadget: str,
    params: Mapping[str, Any] | None = None,
    operators: Sequence[str] | None = None,
    *,
    tls: p.Tls | None = None,
) -> RemoteRun:
    """A run of ``gadget`` on the agent at ``address``, not started yet (use ``with``)."""
    return RemoteRun(address, gadget, dict(params or {}), operators, tls)


def _log_warning(run: RemoteRun, message: str) -> None:
    get_logger(node=run.node or run.address).warning(message)


def fan_out(
    addresses: Sequence[str],
    gadget: str,
    params: Mapping[str, Any] | None = None,
    operators: Sequence[str] | None = None,
    *,
    tls: p.Tls | None = None,
    out: BinaryIO | None = None,
    on_ready: Callable[[list[RemoteRun]], None] | None = None,
) -> list[RemoteRun]:
    """Run ``gadget`` on every agent at once and write their output to ``out`` (stdout's
    bytes by default) as it comes, each write whole (lines of two agents never mix). Events
    carry their agent's node as ``k8s.node``. Returns when every run has ended: its timeout,
    or SIGINT/SIGTERM (the first stops every run, whose last events still come; a second
    cancels them at once). ``on_ready(runs)`` is called once every run is ready. Raises the
    first :class:`RemoteError` (after ending the other runs)."""
    sink = out if out is not None else sys.stdout.buffer
    runs = [
        RemoteRun(a, gadget, dict(params or {}), operators, tls, on_warning=_log_warning)
        for a in addresses
    ]
    lock = threading.Lock()
    errors: list[RemoteError] = []
    closed = threading.Event()
    done = threading.Event()
    left = [len(runs)]

    def pump(run: RemoteRun) -> None:
        try:
            for chunk in run.output():
                with lock:
                    sink.write(chunk)
                    sink.flush()
        except RemoteError as exc:
            errors.append(exc)
            for other in runs:
                other.cancel()
        except OSError:  # our stdout closed (| head): end everything quietly
            closed.set()
            for other in runs:
                other.cancel()
        finally:
            with lock:
                left[0] -= 1
                if not left[0]:
                    done.set()

    stops = [0]

    def on_signal(signum: int, frame: Any) -> None:
        stops[0] += 1
        threading.Thread(target=_end_all, args=(runs, stops[0] > 1), daemon=True).start()

    main = threading.current_thread() is threading.main_thread()
    previous: dict[int, Any] = {}
    if main:
        from igrun.core.run.local import on_stop_signals

        previous = on_stop_signals(on_signal)
    threads = [threading.Thread(target=pump, args=(r,), daemon=True) for r in runs]
    try:
        for run in runs:
            run.start()
        for t in threads:
            t.start()
        if on_ready is not None:
            threading.Thread(target=_when_ready, args=(runs, on_ready, done), daemon=True).start()
        while not done.wait(0.2):
            pass
    finally:
        for r in runs:
            r.close()
        for sig, old in previous.items():
            signal.signal(sig, old)
    if errors:
        raise errors[0]
    if closed.is_set():
        raise OutputClosed("stdout closed")
    return runs


def _when_ready(
    runs: list[RemoteRun], on_ready: Callable[[list[RemoteRun]], None], done: threading.Event
) -> None:
    for run in runs:
        run.ready.wait()
    if not done.is_set() and all(r.id is not None for r in runs):
        on_ready(runs)


def _end_all(runs: list[RemoteRun], now: bool) -> None:
    for run in runs:
        if now or not run.stop():
            run.cancel()
