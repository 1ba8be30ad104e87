"""trace tcp in the real kernel: connects, accepts and closes on loopback and across a veth
pair, each naming the process that owns the socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest
from tcplab import blackhole_netns

from igrun.plugins.trace_tcp import TraceTcp

if TYPE_CHECKING:
    from conftest import NetnsPair

NO_POD = {"namespace": "", "podname": "", "kind": ""}
"""An endpoint of no known pod, as the Python API gives it (JSON leaves its keys out)."""


pytestmark = pytest.mark.bpf

COMM = Path(sys.executable).name[:15]


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def child(code: str, *prefix: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def connect_code(host: str, port: int, from_port: int, family: str = "AF_INET") -> str:
    return f"""
        import socket
        s = socket.socket(socket.{family})
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(({host!r}, {from_port}))
        try:
            s.connect(({host!r}, {port}))
        except OSError as e:
            print(e.errno)
        s.close()
    """


def trace(action: Any, values: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return gadgetlab.trace(TraceTcp, action, values)


def mine(rows: list[dict[str, Any]], pid: int) -> list[tuple[str, dict[str, Any]]]:
    return [(r["operation"], r) for r in rows if r["pid"] == pid]


@pytest.mark.parametrize(
    ("family", "host", "version"),
    [(socket.AF_INET, "127.0.0.1", 4), (socket.AF_INET6, "::1", 6)],
)
def test_connect_and_close_name_the_client(family: int, host: str, version: int) -> None:
    listener = socket.socket(family)
    listener.bind((host, 0))
    listener.listen()
    port = listener.getsockname()[1]
    from_port = free_port(family, host)
    pids: list[int] = []

    def run() -> None:
        proc = child(connect_code(host, port, from_port, family.name))
        pids.append(proc.pid)
        conn, _ = listener.accept()
        proc.wait(timeout=10)
        conn.close()

    try:
        rows = trace(run)
    finally:
        listener.close()
    events = mine(rows, pids[0])
    assert [op for op, _ in events] == ["connect", "close"]
    connect = events[0][1]
    assert connect["comm"] == COMM
    assert connect["tid"] == pids[0]
    assert connect["ipversion"] == version
    assert connect["src"] == {"addr": host, "version": version, "port": from_port, **NO_POD}
    assert connect["dst"] == {"addr": host, "version": version, "port": port, **NO_POD}
    assert connect["error"] == ""
    assert events[1][1]["src"] == connect["src"]


def test_accept_names_the_server() -> None:
    port = free_port()
    code = f"""
        import socket
        l = socket.socket()
        l.bind(("127.0.0.1", {port}))
        l.listen()
        print("ready", flush=True)
        c, _ = l.accept()
        c.close()
    """
    pids: list[int] = []
    peer: list[int] = []

    def run() -> None:
        proc = child(code)
        pids.append(proc.pid)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        with socket.create_connection(("127.0.0.1", port)) as s:
            peer.append(s.getsockname()[1])
            s.recv(1)  # the server closes
        proc.wait(timeout=10)

    events = mine(trace(run), pids[0])
    assert [op for op, _ in events] == ["accept", "close"]
    accept = events[0][1]
    assert accept["comm"] == COMM
    assert accept["src"] == {"addr": "127.0.0.1", "version": 4, "port": port, **NO_POD}
    assert accept["dst"] == {"addr": "127.0.0.1", "version": 4, "port": peer[0], **NO_POD}


def test_refused_connect_carries_the_errno() -> None:
    port, from_port = free_port(), free_port()
    pids: list[int] = []

    def run() -> None:
        proc = child(connect_code("127.0.0.1", port, from_port))
        pids.append(proc.pid)
        out, _ = proc.communicate(timeout=10)
        assert out.strip() == "111"  # ECONNREFUSED, as the client saw it

    rows = trace(run, {"failure-only": "true"})
    ((op, event),) = mine(rows, pids[0])
    assert op == "connect"
    assert event["error"] == "ECONNREFUSED"
    assert event["dst"]["port"] == port
    assert event["src"]["port"] == from_port
    assert all(r["error"] for r in rows)  # --failure-only: nothing that succeeded


def test_timed_out_and_aborted_connects_carry_their_errno() -> None:
    """SYNs dropped by a firewall: a blocking connect fails with ETIMEDOUT after the SYN
    retries; a non-blocking one closed before any answer leaves no errno on the socket and is
    reported as ECONNABORTED, never as success."""
    with blackhole_netns() as blackhole:
        timed_port, aborted_port = 41000 + os.getpid() % 10000, 42000 + os.getpid() % 10000
        aborted = f"""
            import errno, socket
            s = socket.socket()
            s.bind(({blackhole.addr!r}, {aborted_port}))
            s.setblocking(False)
            assert s.connect_ex(({blackhole.addr!r}, {blackhole.port})) == errno.EINPROGRESS
            s.close()
        """
        pids: dict[str, int] = {}

        def run() -> None:
            procs = {
                "timed": child(
                    connect_code(blackhole.addr, blackhole.port, timed_port), *blackhole.run()
                ),
                "aborted": child(aborted, *blackhole.run()),
            }
            for name, proc in procs.items():
                pids[name] = proc.pid
                out, err = proc.communicate(timeout=20)
                assert proc.returncode == 0, err
                assert out.strip() == ("110" if name == "timed" else "")  # ETIMEDOUT

        rows = trace(run, {"failure-only": "true"})
        for name, port, error in (
            ("timed", timed_port, "ETIMEDOUT"),
            ("aborted", aborted_port, "ECONNABORTED"),
        ):
            ((op, event),) = mine(rows, pids[name])
            assert (op, event["error"], event["comm"]) == ("connect", error, COMM)
            assert event["src"] == {"addr": blackhole.addr, "version": 4, "port": port, **NO_POD}
            assert event["dst"] == {
                "addr": blackhole.addr,
                "version": 4,
                "port": blackhole.port,
                **NO_POD,
            }


def test_only_flags_select_operations() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def run() -> None:
        def serve() -> None:
            conn, _ = listener.accept()
            conn.close()

        server = threading.Thread(target=serve)
        server.start()
        proc = child(connect_code("127.0.0.1", port, free_port()))
        proc.wait(timeout=10)
        server.join(timeout=10)

    try:
        connects = trace(run, {"connect-only": "true"})
        accepts = trace(run, {"accept-only": "true"})
    finally:
        listener.close()
    assert {r["operation"] for r in connects} == {"connect"}
    assert {r["operation"] for r in accepts} == {"accept"}
    assert [r["dst"]["port"] for r in connects if r["dst"]["port"] == port] == [port]
    assert [r["src"]["port"] for r in accepts if r["src"]["port"] == port] == [port]


def test_connect_across_a_veth_pair(netns_pair: NetnsPair) -> None:
    port = 8080
    server = f"""
        import socket
        l = socket.socket()
        l.bind(("{netns_pair.addr_b}", {port}))
        l.listen()
        print("ready", flush=True)
        c, _ = l.accept()
        c.close()
    """
    client = connect_code(netns_pair.addr_b, port, 0).replace(
        f"s.bind(({netns_pair.addr_b!r}, 0))", ""
    )
    pids: dict[str, int] = {}

    def run() -> None:
        srv = child(server, *netns_pair.run(netns_pair.b))
        assert srv.stdout is not None and srv.stdout.readline() == "ready\n"
        cli = child(client, *netns_pair.run(netns_pair.a))
        pids["server"], pids["client"] = srv.pid, cli.pid
        cli.wait(timeout=10)
        srv.wait(timeout=10)

    rows = trace(run)
    (connect,) = [r for op, r in mine(rows, pids["client"]) if op == "connect"]
    (accept,) = [r for op, r in mine(rows, pids["server"]) if op == "accept"]
    assert connect["src"]["addr"] == netns_pair.addr_a
    assert connect["dst"] == {"addr": netns_pair.addr_b, "version": 4, "port": port, **NO_POD}
    assert accept["src"] == connect["dst"]
    assert accept["dst"] == connect["src"]


SERVER = """
    import socket
    l = socket.socket(socket.{family})
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(({host!r}, {port}))
    l.listen()
    print("ready", flush=True)
    c, _ = l.accept()
    c.recv(1)  # until the client closes
    c.close()
"""

CLIENT = """
    import socket
    s = socket.socket(socket.{family})
    s.bind(({host!r}, {from_port}))
    s.connect(({server!r}, {port}))
    s.close()
"""


def whole_conversation(
    server: str,
    client: str,
    server_prefix: tuple[str, ...] = (),
    client_prefix: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A server child accepts one connection from a client child bound to a known port; the
    client closes, then the server. Every event trace tcp saw, and who was who."""
    family = "AF_INET6" if ":" in server else "AF_INET"
    seen: dict[str, Any] = {"server_addr": server, "client_addr": client}
    seen["port"] = 40000 + os.getpid() % 10000
    seen["from_port"] = 50000 + os.getpid() % 10000

    def run() -> None:
        srv = child(SERVER.format(family=family, host=server, port=seen["port"]), *server_prefix)
        assert srv.stdout is not None and srv.stdout.readline() == "ready\n"
        code = CLIENT.format(
            family=family, host=client, from_port=seen["from_port"], server=server,
            port=seen["port"],
        )  # fmt: skip
        cli = child(code, *client_prefix)
        seen["server"], seen["client"] = srv.pid, cli.pid
        _, err = cli.communicate(timeout=10)
        assert cli.returncode == 0, err
        srv.wait(timeout=10)
        assert srv.returncode == 0

    return trace(run), seen


def assert_whole_endpoints(rows: list[dict[str, Any]], seen: dict[str, Any]) -> None:
    """connect and close of the client, accept and close of the server: each with exactly
    the two endpoints, seen from its own side."""
    version = 6 if ":" in seen["server_addr"] else 4
    client = {"addr": seen["client_addr"], "version": version, "port": seen["from_port"], **NO_POD}
    server = {"addr": seen["server_addr"], "version": version, "port": seen["port"], **NO_POD}
    by_client = mine(rows, seen["client"])
    by_server = mine(rows, seen["server"])
    assert [op for op, _ in by_client] == ["connect", "close"]
    assert [op for op, _ in by_server] == ["accept", "close"]
    for _, event in by_client + by_server:
        assert event["ipversion"] == version
        assert event["error"] == ""
    for _, event in by_client:
        assert (event["src"], event["dst"]) == (client, server)
    for _, event in by_server:
        assert (event["src"], event["dst"]) == (server, client)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_every_event_carries_whole_addresses_on_loopback(host: str) -> None:
    rows, seen = whole_conversation(host, host)
    assert_whole_endpoints(rows, seen)


def test_every_event_carries_whole_ipv6_addresses_across_a_veth_pair(
    netns_pair: NetnsPair,
) -> None:
    """Global IPv6 addresses, where no byte is zero by chance: a one-byte read would show."""
    addr_a, addr_b = "fd00:231:4567:89ab::a1", "fd00:231:4567:89ab::b2"
    for ns, addr in ((netns_pair.a, addr_a), (netns_pair.b, addr_b)):
        links = subprocess.run(
            ["ip", "-n", ns, "-o", "link", "show", "type", "veth"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        veth = links.split(":")[1].strip().split("@")[0]
        subprocess.run(
            ["ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", veth, "nodad"],
            check=True, capture_output=True,
        )  # fmt: skip
    rows, seen = whole_conversation(
        addr_b, addr_a, netns_pair.run(netns_pair.b), netns_pair.run(netns_pair.a)
    )
    assert_whole_endpoints(rows, seen)
