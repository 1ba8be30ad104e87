"""The agent (``igrun serve``) and its clients, with real agents in processes of their own.

Each agent sees this same host, so a process the test runs is seen once by each of them:
through the fan-out client it comes back once per agent, tagged with that agent's node.
TCP agents use mutual TLS with certificates the test makes with ``openssl``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from igrun.core.remote import RemoteError, Tls, run_remote
from igrun.core.remote.client import channel
from igrun.core.remote.protocol import LIST
from igrun.testing import CliRun, IgrunCli, pins_of, without_ready

pytestmark = pytest.mark.bpf
grpc = pytest.importorskip("grpc")

TRACE = ["trace", "exec", "--host", "-o", "json"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _signed(folder: Path, name: str, ca: str, san: str | None = None) -> None:
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder,
    )  # fmt: skip
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "extendedKeyUsage=clientAuth\n")
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile", ext.name, cwd=folder,
    )  # fmt: skip


def _ca(folder: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1", "-subj", f"/CN={name}",
        cwd=folder,
    )  # fmt: skip


@dataclass
class Certs:
    folder: Path

    def tls(self, side: str, ca: str = "ca") -> Tls:
        return Tls(
            self.folder / f"{side}.pem", self.folder / f"{side}.key", self.folder / f"{ca}.pem"
        )

    def flags(self, side: str) -> list[str]:
        t = self.tls(side)
        return ["--tls-cert", str(t.cert), "--tls-key", str(t.key), "--tls-ca", str(t.ca)]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA signing the agents' and the client's certificates, and a rogue CA signing a
    client certificate the agents must refuse."""
    folder = tmp_path_factory.mktemp("tls")
    _ca(folder, "ca")
    _ca(folder, "rogue-ca")
    _signed(folder, "server", "ca", "IP:127.0.0.1,DNS:localhost")
    _signed(folder, "client", "ca")
    _signed(folder, "rogue", "rogue-ca")
    return Certs(folder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AgentProc:
    run: CliRun
    address: str
    node: str


Start = Callable[..., AgentProc]


@pytest.fixture
def agents(igrun_cli: IgrunCli, tmp_path: Path, certs: Certs) -> Iterator[Start]:
    """Starts agents (``tcp=True``: on a TCP port with mutual TLS, else a unix socket);
    each is stopped, and must have left nothing pinned, at the end of the test."""
    started: list[AgentProc] = []

    def start(tcp: bool = False) -> AgentProc:
        node = f"node-{uuid.uuid4().hex[:6]}"
        if tcp:
            address = f"127.0.0.1:{_free_port()}"
            args = ["--listen", address, *certs.flags("server")]
        else:
            address = f"unix://{tmp_path / node}.sock"
            args = ["--listen", address]
        run = igrun_cli.start("serve", "--node-name", node, *args)
        started.append(AgentProc(run, address, node))
        return started[-1]

    yield start
    for a in started:
        assert a.run.poll() is None, f"agent {a.node} died:\n{a.run.stderr_so_far}"
        _, err = a.run.stop()
        assert a.run.returncode == 0, err
        assert pins_of(a.run.pid) == []


def _calls(agent: AgentProc, certs: Certs) -> list[dict[str, Any]]:
    tls = certs.tls("client") if not agent.address.startswith("unix:") else None
    ch = channel(agent.address, tls)
    try:
        return list(json.loads(ch.unary_unary(LIST)(b"{}", timeout=10)))
    finally:
        ch.close()


def _settle(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not after {timeout}s: {what}")
        time.sleep(0.05)


def _exec_marked(n: int) -> tuple[str, list[int]]:
    marker = f"agent-{uuid.uuid4().hex[:10]}"
    pids = []
    for _ in range(n):
        proc = subprocess.Popen(["/bin/true", marker])
        proc.wait()
        pids.append(proc.pid)
    return marker, pids


def _marked(stdout: str, marker: str) -> list[dict[str, Any]]:
    return [e for e in IgrunCli.events(stdout) if e.get("args") == ["/bin/true", marker]]


def test_fan_out_to_three_agents_tags_every_event_once_per_node(
    igrun_cli: IgrunCli, agents: Start, certs: Certs
) -> None:
    nodes = [agents(), agents(tcp=True), agents(tcp=True)]
    addresses = ",".join(a.address for a in nodes)
    client = igrun_cli.start("--remote", addresses, *certs.flags("client"), *TRACE)
    for a in nodes:
        _settle(lambda a=a: len(_calls(a, certs)) == 1, f"one run on {a.node}")
        assert len(pins_of(a.run.pid)) == 1
    marker, pids = _exec_marked(3)
    time.sleep(0.5)  # the rings are read every 100 ms: let the last events through
    out, err = client.stop(signal.SIGINT)
    assert client.returncode == 0, err
    assert without_ready(err) == ""
    events = _marked(out, marker)
    by_node = {
        a.node: sorted(e["pid"] for e in events if e["k8s"]["node"] == a.node) for a in nodes
    }
    assert by_node == {a.node: sorted(pids) for a in nodes}  # none lost, none twice
    assert len(events) == 9
    for a in nodes:  # Ctrl-C of the client ended the run of every agent
        _settle(lambda a=a: pins_of(a.run.pid) == [], f"nothing pinned by {a.node}")
        assert _calls(a, certs) == []


def test_start_stream_stop_through_the_python_api(agents: Start) -> None:
    agent = agents()
    with run_remote(agent.address, "trace exec", {"operator.containers.host": True}) as run:
        chunks: list[bytes] = []
        import threading

        reader = threading.Thread(target=lambda: chunks.extend(run.output()))
        reader.start()
        run.wait_ready()
        assert run.node == agent.node
        marker, pids = _exec_marked(2)
        time.sleep(0.3)
        assert run.stop()  # the last events still come, then the stream ends
        reader.join(15)
        assert not reader.is_alive()
    events = _marked(b"".join(chunks).decode(), marker)
    assert sorted(e["pid"] for e in events) == sorted(pids)
    assert {e["k8s"]["node"] for e in events} == {agent.node}
    assert run.lost == 0 and run.summary is None
    _settle(lambda: pins_of(agent.run.pid) == [], "the run's pins removed")


def test_two_clients_and_one_killed_mid_stream(
    igrun_cli: IgrunCli, agents: Start, certs: Certs
) -> None:
    agent = agents()
    first = igrun_cli.start("--remote", agent.address, *TRACE)
    second = igrun_cli.start("--remote", agent.address, *TRACE)
    _settle(lambda: len(_calls(agent, certs)) == 2, "two runs")
    assert len(pins_of(agent.run.pid)) == 2
    marker, pids = _exec_marked(1)
    time.sleep(0.5)
    first.kill()  # SIGKILL: its connection closes, nothing said
    first.wait()
    _settle(lambda: len(_calls(agent, certs)) == 1, "the killed client's run stopped")
    _settle(lambda: len(pins_of(agent.run.pid)) == 1, "the killed client's pins removed")
    later, later_pids = _exec_marked(1)
    time.sleep(0.5)
    out, err = second.stop()
    assert second.returncode == 0, err
    assert [e["pid"] for e in _marked(out, marker)] == pids
    assert [e["pid"] for e in _marked(out, later)] == later_pids  # the agent kept serving
    _settle(lambda: pins_of(agent.run.pid) == [], "nothing pinned")


@pytest.mark.parametrize(
    "args",
    [
        ["trace", "nope"],
        ["trace", "exec", "-o", "bogus"],
        ["trace", "exec", "--filter", "nosuchcolumn:1"],
    ],
)
def test_a_bad_request_gets_the_cli_s_one_line(
    igrun_cli: IgrunCli, agents: Start, args: list[str]
) -> None:
    agent = agents()
    local = igrun_cli.run(*args)
    remote = igrun_cli.run("--remote", agent.address, *args)
    assert local.returncode == 2
    assert (remote.returncode, remote.stderr, remote.stdout) == (2, local.stderr, "")
    assert local.stderr.startswith("igrun: error: ") and local.stderr.count("\n") == 1


def test_the_api_refuses_a_bad_request_and_keeps_serving(agents: Start) -> None:
    agent = agents()
    for gadget, params, line in [
        ("trace nope", {}, 'unknown gadget "trace nope" (did you mean "trace open"?)'),
        ("trace exec", {"runtime.timeout": "soon"}, None),
    ]:
        with run_remote(agent.address, gadget, params) as run, pytest.raises(RemoteError) as exc:
            list(run.output())
        assert exc.value.exit_code == 2
        if line is not None:
            assert str(exc.value) == line
    ch = grpc.insecure_channel(agent.address)
    with pytest.raises(grpc.RpcError) as raw:
        list(ch.unary_stream("/igrun.Agent/Run")(b"not json"))
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ch.close()
    with run_remote(
        agent.address, "trace exec", {"operator.containers.host": True, "runtime.timeout": "1s"}
    ) as run:
        assert b"".join(run.output()) is not None  # still serving; the run ends by its timeout
    assert run.id is not None and run.node == agent.node


def test_mutual_tls_refuses_a_client_without_a_valid_certificate(
    igrun_cli: IgrunCli, agents: Start, certs: Certs
) -> None:
    agent = agents(tcp=True)
    rogue = certs.tls("rogue", ca="ca")  # signed by a CA the agent does not trust
    for tls in (rogue,):
        with run_remote(agent.address, "trace exec", tls=tls) as run:
            with pytest.raises(RemoteError) as exc:
                list(run.output())
            assert exc.value.exit_code == 1
    anonymous = grpc.secure_channel(  # trusts the agent, shows no certificate
        agent.address,
        grpc.ssl_channel_credentials(root_certificates=certs.tls("client").ca.read_bytes()),
    )
    with pytest.raises(grpc.RpcError):
        anonymous.unary_unary(LIST)(b"{}", timeout=5)
    anonymous.close()
    plain = grpc.insecure_channel(agent.address)  # no TLS at all
    with pytest.raises(grpc.RpcError):
        plain.unary_unary(LIST)(b"{}", timeout=5)
    plain.close()
    cli = igrun_cli.run(
        "--remote", agent.address, "--tls-cert", str(rogue.cert), "--tls-key", str(rogue.key),
        "--tls-ca", str(rogue.ca), *TRACE,
    )  # fmt: skip
    assert cli.returncode == 1
    assert cli.stderr.startswith(f"igrun: error: {agent.address}: ") and cli.stderr.count("\n") == 1
    assert _calls(agent, certs) == []  # a trusted client is still served


def test_tcp_without_tls_is_refused(igrun_cli: IgrunCli) -> None:
    result = igrun_cli.run("serve", "--listen", "127.0.0.1:1")
    assert result.returncode == 2
    assert result.stderr == (
        "igrun: error: TCP address '127.0.0.1:1' needs mutual TLS "
        "(--tls-cert, --tls-key, --tls-ca)\n"
    )


# ---- kubectl igrun: the agents found through a (fake) Kubernetes API server -------------------
# No cluster runs here: a small HTTP server stands in for the API server, answering the pod
# list the plugin asks for, as the real one does (the same path, selector and bearer token).

TOKEN = "t0ken"


def _pod(name: str, node: str, ip: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "igrun"},
        "spec": {"nodeName": node},
        "status": {"phase": phase, "podIP": ip},
    }


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[Path, list[dict[str, Any]], list[str]]]:
    """A fake API server; yields its kubeconfig, the pods it lists, and the paths asked."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pods: list[dict[str, Any]] = []
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            wanted = "/api/v1/namespaces/igrun/pods?labelSelector=app.kubernetes.io%2Fname%3Digrun"
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"kind": "PodList", "items": pods if self.path == wanted else []})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "kubeconfig"
    write_kubeconfig(config, server.server_port, TOKEN)
    yield config, pods, asked
    server.shutdown()


def write_kubeconfig(path: Path, port: int, token: str) -> None:
    """A kubeconfig whose current context is the API server on 127.0.0.1:``port``."""
    path.write_text(
        f"""apiVersion: v1
kind: Config
current-context: test
contexts: [{{name: test, context: {{cluster: fake, user: me}}}}]
clusters: [{{name: fake, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: me, user: {{token: {token}}}}}]
"""
    )


KUBECTL_IGRUN = (sys.executable, "-c", "from igrun.core.remote.kube import main; exit(main())")


def test_kubectl_igrun_finds_the_running_agent_pods(
    api_server: tuple[Path, list[dict[str, Any]], list[str]],
) -> None:
    config, pods, asked = api_server
    pods += [
        _pod("igrun-b", "node-b", "10.0.0.2"),
        _pod("igrun-a", "node-a", "10.0.0.1"),
        _pod("igrun-c", "node-c", "fd00::3"),
        _pod("igrun-d", "node-d", "", phase="Pending"),
    ]
    cli = IgrunCli(command=KUBECTL_IGRUN)
    found = cli.run("--kubeconfig", str(config), "agents")
    assert (found.returncode, found.stderr) == (0, "")
    assert found.stdout == (
        "node-a\tigrun-a\t10.0.0.1:7443\nnode-b\tigrun-b\t10.0.0.2:7443\n"
        "node-c\tigrun-c\t[fd00::3]:7443\n"
    )
    assert asked == ["/api/v1/namespaces/igrun/pods?labelSelector=app.kubernetes.io%2Fname%3Digrun"]
    one = cli.run("--kubeconfig", str(config), "--node", "node-b", "--agent-port", "9", "agents")
    assert one.stdout == "node-b\tigrun-b\t10.0.0.2:9\n"
    missing = cli.run("--kubeconfig", str(config), "--node", "node-d", "agents")
    assert (missing.returncode, missing.stderr) == (
        2,
        "kubectl igrun: error: no running agent on node node-d\n",
    )
    config.write_text(config.read_text().replace(TOKEN, "wrong"))
    refused = cli.run("--kubeconfig", str(config), "agents")
    assert refused.returncode == 1
    assert refused.stderr.startswith("kubectl igrun: error: the API server refused /api/v1/")
    assert refused.stderr.endswith(": 401 Unauthorized\n")


def test_kubectl_igrun_runs_the_gadget_on_the_agents_it_found(
    api_server: tuple[Path, list[dict[str, Any]], list[str]], agents: Start, certs: Certs
) -> None:
    config, pods, _ = api_server
    agent = agents(tcp=True)
    port = agent.address.rpartition(":")[2]
    pods.append(_pod("igrun-x", agent.node, "127.0.0.1"))
    cli = IgrunCli(command=KUBECTL_IGRUN)
    run = cli.start(
        "--kubeconfig", str(config), "--agent-port", port, *certs.flags("client"), *TRACE
    )
    marker, pids = _exec_marked(2)
    time.sleep(0.5)
    out, err = run.stop()
    assert run.returncode == 0, err
    events = _marked(out, marker)
    assert sorted(e["pid"] for e in events) == sorted(pids)
    assert {e["k8s"]["node"] for e in events} == {agent.node}
    _settle(lambda: pins_of(agent.run.pid) == [], "nothing pinned")


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["--remote", "unix:///nonexistent/igrun.sock"], 2,
         "igrun: error: --remote runs one gadget: igrun --remote ADDR trace exec [flags]\n"),
        (["--remote", "10.0.0.1:7443", "trace", "exec"], 2,
         "igrun: error: TCP address '10.0.0.1:7443' needs mutual TLS "
         "(--tls-cert, --tls-key, --tls-ca)\n"),
        (["--tls-ca", "ca.pem", "trace", "exec"], 2,
         "igrun: error: --tls-ca is for --remote runs\n"),
        (["--remote", "unix:///nonexistent/igrun.sock", "trace", "exec"], 1, None),
    ],
)  # fmt: skip
def test_remote_usage_mistakes_get_one_line(
    igrun_cli: IgrunCli, args: list[str], code: int, line: str | None
) -> None:
    result = igrun_cli.run(*args)
    assert (result.returncode, result.stdout) == (code, "")
    if line is not None:
        assert result.stderr == line
    else:
        assert result.stderr.startswith(
            "igrun: error: unix:///nonexistent/igrun.sock: cannot reach the agent ("
        )
        assert result.stderr.count("\n") == 1


def test_a_run_that_fails_on_the_agent_ends_its_call_only(
    igrun_cli: IgrunCli, agents: Start, certs: Certs, tmp_path: Path
) -> None:
    """The metrics port is taken: the run fails once started, on the agent as locally."""
    agent = agents()
    metrics = tmp_path / "metrics.toml"
    metrics.write_text('[[counters]]\nname = "t_events_total"\nlabels = ["comm"]\n')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [*TRACE, "--metrics-config", str(metrics)]
        args += ["--metrics-listen-address", f"127.0.0.1:{port}", "-t", "2s"]
        local = igrun_cli.run(*args)
        remote = igrun_cli.run("--remote", agent.address, *args)
    assert local.returncode == 1
    assert (
        local.stderr
        == f"igrun: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use\n"
    )
    assert (remote.returncode, remote.stderr) == (1, local.stderr)
    assert agent.run.poll() is None
    assert _calls(agent, certs) == [] and pins_of(agent.run.pid) == []
    client = igrun_cli.start("--remote", agent.address, *TRACE)  # the agent still serves
    marker, pids = _exec_marked(1)
    time.sleep(0.5)
    out, err = client.stop()
    assert [e["pid"] for e in _marked(out, marker)] == pids, err


def test_an_agent_that_stops_ends_its_runs_and_tells_their_clients(
    igrun_cli: IgrunCli, tmp_path: Path
) -> None:
    address = f"unix://{tmp_path}/stopping.sock"
    agent = igrun_cli.start("serve", "--listen", address, "--node-name", "stopping")
    client = igrun_cli.start("--remote", address, *TRACE)
    marker, pids = _exec_marked(1)
    time.sleep(0.5)
    _, agent_err = agent.stop(signal.SIGTERM)
    assert agent.returncode == 0, agent_err
    assert pins_of(agent.pid) == [] and not (tmp_path / "stopping.sock").exists()
    out, err = client.communicate(15)
    assert client.returncode == 0
    assert [e["pid"] for e in _marked(out, marker)] == pids  # its last events came
    lines = without_ready(err).splitlines()
    assert len(lines) == 1 and lines[0].endswith(
        "[warning] the agent stopped: this run ended node=stopping"
    ), err


def test_a_config_file_s_run_goes_to_the_agent(
    igrun_cli: IgrunCli, agents: Start, tmp_path: Path
) -> None:
    """The file's params and chain, with the command line's flags, as a local run takes them."""
    agent = agents()
    config = tmp_path / "exec.toml"
    config.write_text(
        '[[run]]\ngadget = "trace exec"\n[[run.operators]]\nname = "filter"\n'
        'with = { filter = "comm:true" }\n'
    )
    client = igrun_cli.start("--config", str(config), "--remote", agent.address, *TRACE)
    marker, pids = _exec_marked(1)
    subprocess.run(["/bin/sh", "-c", f"exec /bin/echo {marker}"], capture_output=True)
    time.sleep(0.5)
    out, err = client.stop()
    assert [e["pid"] for e in _marked(out, marker)] == pids, err
    assert {e["comm"] for e in IgrunCli.events(out)} == {"true"}  # echo filtered out there


def test_columns_of_several_agents_add_their_node(igrun_cli: IgrunCli, agents: Start) -> None:
    nodes = [agents(), agents()]
    client = igrun_cli.start(
        "--remote", ",".join(a.address for a in nodes), "trace", "exec", "--host"
    )
    marker, pids = _exec_marked(1)
    time.sleep(0.5)
    out, err = client.stop()
    assert client.returncode == 0, err
    lines = out.splitlines()
    headers = [line for line in lines if line.startswith("RUNTIME.CONTAINERNAME")]
    assert len(headers) == 2 and all(h.split()[-2:] == ["ARGS", "K8S.NODE"] for h in headers)
    rows = sorted(line.split()[-1] for line in lines if f"/bin/true {marker}" in line)
    assert rows == sorted(a.node for a in nodes)
    assert all(f"{pids[0]} " in line for line in lines if f"/bin/true {marker}" in line)
