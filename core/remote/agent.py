"""The agent (``igrun serve``): runs gadgets on request, for as many clients as come.

Each ``Run`` call is one :class:`~igrun.core.run.gadgetrun.GadgetRun` in a thread of its
own, with the output operator writing into the call instead of stdout: the client gets the
bytes ``igrun`` would print, written by the same C encoder, never re-encoded per event. A
call that ends for any reason (its client cancelled, disconnected or was killed; the agent
stops) cancels its run; a run that fails ends its own call only. The agent keeps a table of
its runs (``List``), each stoppable by id (``Stop``).
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from igrun.core.errors import IgrunError, UsageError
from igrun.core.gadget import GadgetContext
from igrun.core.log import get_logger
from igrun.core.operator import Operator
from igrun.core.params import Params
from igrun.core.remote import protocol as p
from igrun.core.run.gadgetrun import GadgetRun

POLL = 0.1
"""How often a call with nothing to send looks whether its client is still there."""
MAX_CALLS = 256


class _Sink:
    """The stdout of one run: each write is one :data:`~protocol.OUTPUT` frame."""

    def __init__(self, put: Callable[[bytes], None]) -> None:
        self.put = put
        self.buffer = self

    def write(self, data: str | bytes | memoryview) -> int:
        if isinstance(data, str):
            data = data.encode()
        if len(data):
            self.put(p.OUTPUT + bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class _CallOutput:
    """Mixed into the installed ``output`` operator (core imports no operator: it is found
    through the registry), writing into its call: one class per run, as ``collect`` is."""

    put: ClassVar[Callable[[bytes], None]]

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Any:
        return cls(ctx, params, stream=_Sink(cls.put))  # type: ignore[call-arg]

    def warn(self, message: str) -> None:
        type(self).put(p.frame(p.WARN, message))
        super().warn(message)  # type: ignore[misc]


def _call_output(put: Callable[[bytes], None]) -> type[Operator]:
    """The ``output`` operator of this installation, writing a run's bytes into its call."""
    from igrun.core.plugins import registry

    (base,) = [op for op in registry().operators() if op.name == "output"]
    made: type[Operator] = type("output", (_CallOutput, base), {"put": put})
    return made


@dataclass
class Call:
    """One run on behalf of one client."""

    gadget: str
    peer: str
    run: GadgetRun | None = None
    frames: queue.SimpleQueue[bytes] = field(default_factory=queue.SimpleQueue)
    started: float = field(default_factory=time.time)


def parse_request(body: bytes) -> tuple[str, dict[str, str], list[str] | None]:
    """``Run``'s JSON: the gadget, its flat params (as text) and the chain (or None)."""
    try:
        request = json.loads(body)
    except ValueError as exc:
        raise UsageError(f"invalid request: not JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("gadget"), str):
        raise UsageError('invalid request: {"gadget": NAME, "params": {...}} expected')
    params = request.get("params") or {}
    operators = request.get("operators")
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise UsageError("invalid request: params must map names to values")
    if operators is not None and (
        not isinstance(operators, list) or not all(isinstance(o, str) for o in operators)
    ):
        raise UsageError("invalid request: operators must be a list of names")
    flat = {k: _text(v) for k, v in params.items()}
    return request["gadget"], flat, operators


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


class Agent:
    """The runs of this process, and the gRPC methods that start, list and stop them."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.calls: dict[int, Call] = {}
        self.lock = threading.Lock()
        self.log = get_logger(node=node)
        self._ids = iter(range(1, 1 << 62))
        self.stopping = False

    # -- Run

    def run(self, body: bytes, context: Any) -> Iterator[bytes]:
        import grpc

        call = Call(gadget="?", peer=context.peer())
        try:
            gadget_name, params, operators = parse_request(body)
            call.gadget = gadget_name
            call.run = self._start(call, gadget_name, params, operators)
        except IgrunError as exc:
            self.log.warning("refused", peer=call.peer, error=str(exc))
            code = grpc.StatusCode.INVALID_ARGUMENT
            if exc.exit_code != p.INVALID_EXIT:
                code = grpc.StatusCode.FAILED_PRECONDITION
            context.abort(code, str(exc))
        run = call.run
        assert run is not None
        with self.lock:
            key = next(self._ids)
            self.calls[key] = call
        context.add_callback(run.cancel)  # the call ended: a gone client, a cancel, a stop
        self.log.info("run_started", gadget=call.gadget, peer=call.peer, call=key)
        error: IgrunError | None = None
        try:
            yield from self._stream(call, context)
        except IgrunError as exc:
            error = exc
        finally:
            with self.lock:
                self.calls.pop(key, None)
            error = self._close(run, error)
            self.log.info("run_ended", gadget=call.gadget, call=key, error=str(error or ""))
        if not context.is_active():
            return
        yield from _drain(call.frames)
        if error is not None:
            code = grpc.StatusCode.FAILED_PRECONDITION
            if error.exit_code == p.INVALID_EXIT:
                code = grpc.StatusCode.INVALID_ARGUMENT
            context.abort(code, str(error))
        yield p.frame(p.END, {**_end_record(run), "agent_stopped": self.stopping})

    def _start(
        self, call: Call, gadget: str, params: dict[str, str], operators: list[str] | None
    ) -> GadgetRun:
        from igrun.core.run.gadgetrun import resolve

        if gadget.endswith(".o"):
            raise UsageError("the agent runs installed gadgets only, not object files")
        cls = resolve(gadget)
        out = _call_output(call.frames.put)
        chain = None if operators is None else _chain(operators)
        run = GadgetRun(
            cls, params, chain, collect=False, sinks=(out,), on_ready=self._ready_frame(call)
        )
        return run.start()

    def _ready_frame(self, call: Call) -> Callable[[GadgetRun], None]:
        def ready(run: GadgetRun) -> None:
            ctx = run.context
            call.frames.put(p.frame(p.READY, {"id": ctx.id if ctx else "", "node": self.node}))

        return ready

    def _stream(self, call: Call, context: Any) -> Iterator[bytes]:
        run = call.run
        assert run is not None
        while True:
            try:
                yield call.frames.get(timeout=POLL)
                continue
            except queue.Empty:
                pass
            if not context.is_active():
                run.cancel()
                return
            if run.wait(0):  # raises the run's error
                return

    @staticmethod
    def _close(run: GadgetRun, error: IgrunError | None) -> IgrunError | None:
        """End the run and release everything it holds (its last lines go to its frames)."""
        try:
            run.close()
        except IgrunError as exc:
            error = error or exc
        except Exception as exc:  # a gadget's bug: its call fails, the agent goes on
            error = error or IgrunError(f"{type(exc).__name__}: {exc}")
        return error

    def stop_all(self) -> None:
        """The agent is stopping: end every run (each call then ends with :data:`END`)."""
        self.stopping = True
        with self.lock:
            runs = [c.run for c in self.calls.values() if c.run is not None]
        for run in runs:
            run.cancel()

    # -- List, Stop

    def list(self, body: bytes, context: Any) -> bytes:
        with self.lock:
            calls = list(self.calls.values())
        rows = [
            {
                "id": c.run.context.id if c.run and c.run.context else "",
                "gadget": c.gadget,
                "peer": c.peer,
                "node": self.node,
                "started": c.started,
            }
            for c in calls
        ]
        return json.dumps(rows).encode()

    def stop(self, body: bytes, context: Any) -> bytes:
        import grpc

        try:
            ident = json.loads(body)["id"]
        except (ValueError, KeyError, TypeError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, 'invalid request: {"id": ID} expected')
        with self.lock:
            runs = [c.run for c in self.calls.values() if c.run and c.run.context]
        hits = [r for r in runs if r.context is not None and r.context.id == ident]
        for run in hits:
            run.cancel()
        return json.dumps({"stopped": bool(hits)}).encode()

    def handler(self) -> Any:
        import grpc

        return grpc.method_handlers_generic_handler(
            p.SERVICE,
            {
                "Run": grpc.unary_stream_rpc_method_handler(self.run),
                "List": grpc.unary_unary_rpc_method_handler(self.list),
                "Stop": grpc.unary_unary_rpc_method_handler(self.stop),
            },
        )


def _chain(names: list[str]) -> list[str]:
    """A chain as the local runtime runs it: the operators that are always on first, and
    those after the output's priority (metrics), around the named ones; the output is the
    call's own."""
    from igrun.core.operator import PRIORITY_OUTPUT
    from igrun.core.plugins import registry

    installed = registry().operators()
    first = [op.name for op in installed if op.always and op.name not in names]
    last = [op.name for op in installed if op.priority >= PRIORITY_OUTPUT and op.name != "output"]
    named = [n for n in names if n != "output" and n not in last]
    return first + named + last


def _drain(frames: queue.SimpleQueue[bytes]) -> Iterator[bytes]:
    while True:
        try:
            yield frames.get_nowait()
        except queue.Empty:
            return


def _end_record(run: GadgetRun) -> dict[str, Any]:
    from igrun.core.run.local import lost_summary

    ctx = run.context
    return {"lost": run.lost, "summary": lost_summary(ctx) if ctx is not None else None}


def serve(addresses: Sequence[str], node: str, tls: p.Tls | None, grace: float = 5.0) -> int:
    """Serve until SIGINT, SIGTERM or SIGHUP; then end every run (their clients see their
    calls cancelled) and remove the unix sockets."""
    import signal

    grpc = _grpc()
    from igrun.core.run.local import check_host, on_stop_signals

    targets = [p.check_address(a, tls) for a in addresses]
    check_host()
    os.environ["NODE_NAME"] = node  # k8s.node of every event (the containers operator)
    agent = Agent(node)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=MAX_CALLS, thread_name_prefix="igrun-call"),
        handlers=(agent.handler(),),
        maximum_concurrent_rpcs=MAX_CALLS,
    )
    sockets: list[Path] = []
    for target in targets:
        if target.startswith("unix:"):
            path = Path("/" + target.removeprefix("unix:").lstrip("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_socket():
                path.unlink()  # a stale socket of a previous agent
            bound = server.add_insecure_port(target)
            sockets.append(path)
        else:
            assert tls is not None
            cert, key, ca = tls.read()
            creds = grpc.ssl_server_credentials(
                [(key, cert)], root_certificates=ca, require_client_auth=True
            )
            bound = server.add_secure_port(target, creds)
        if not bound:
            raise IgrunError(f"cannot listen on {target}")
    server.start()
    for path in sockets:
        os.chmod(path, 0o600)  # root's only: whoever connects runs BPF programs
    stop = threading.Event()
    previous = on_stop_signals(lambda signum, frame: stop.set())
    agent.log.info("ready", listen=",".join(addresses), pid=os.getpid())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        agent.stop_all()  # every run ends with its last events, its client sees it end
        deadline = time.monotonic() + grace
        while agent.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        server.stop(grace).wait()
        for path in sockets:
            path.unlink(missing_ok=True)
        agent.log.info("stopped")
    return 0


def _grpc() -> Any:
    try:
        import grpc
    except ImportError:
        raise IgrunError("the agent needs grpcio: pip install 'igrun[agent]'") from None
    return grpc
