"""``snapshot socket``: the real tcp and udp iterators against ``ss -tuna``, for sockets the
test makes on the host and for a podman container's own network namespace."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import IMAGE, needs, unique
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core import socket_in_netns

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

SS_STATES = {
    "ESTAB": "ESTABLISHED",
    "SYN-SENT": "SYN_SENT",
    "SYN-RECV": "SYN_RECV",
    "FIN-WAIT-1": "FIN_WAIT1",
    "FIN-WAIT-2": "FIN_WAIT2",
    "TIME-WAIT": "TIME_WAIT",
    "CLOSE-WAIT": "CLOSE_WAIT",
    "LAST-ACK": "LAST_ACK",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}
"""ss's TCP state names, and ig's."""
SS_UDP_STATES = {"ESTAB": "ACTIVE", "UNCONN": "INACTIVE"}

Row = tuple[str, str, str, int, str, int, int]
"""(protocol, status, local address, local port, remote address, remote port, inode)."""


def _endpoint(text: str) -> tuple[str, int]:
    """``127.0.0.1:80``, ``[::1]:80``, ``0.0.0.0:*``, ``127.0.0.53%lo:53``, ``*:80``."""
    host, _, port = text.rpartition(":")
    host = host.split("%")[0].strip("[]")
    if host == "*":
        host = "::"
    return host, 0 if port == "*" else int(port)


def ss(*prefix: str) -> set[Row]:
    """``ss -tuna`` (with ``-e`` for inodes, ``-H`` without its header), run after
    ``prefix`` (e.g. ``nsenter`` into a namespace)."""
    out = subprocess.run([*prefix, "ss", "-tunaeH"], capture_output=True, text=True, check=True)
    rows = set()
    for line in out.stdout.splitlines():
        netid, state, _, _, local, peer, *rest = line.split()
        inode = re.search(r"\bino:(\d+)", " ".join(rest))
        proto = netid.upper()
        status = (SS_UDP_STATES if proto == "UDP" else SS_STATES)[state]
        src, dst = _endpoint(local), _endpoint(peer)
        rows.add((proto, status, *src, *dst, int(inode.group(1)) if inode else 0))
    return rows


def rows_of(events: list[dict[str, Any]]) -> set[Row]:
    out = set()
    for e in events:
        src, dst = e["src"], e["dst"]
        out.add((e["protocol"], e["status"], src["addr"], src["port"], dst["addr"], dst["port"],
                 e["inodeNumber"]))  # fmt: skip
    return out


def inode(sock: socket.socket) -> int:
    """The socket's inode, as ``/proc/self/fd`` names it (``socket:[N]``)."""
    link = os.readlink(f"/proc/self/fd/{sock.fileno()}")
    match = re.fullmatch(r"socket:\[(\d+)\]", link)
    assert match, link
    return int(match.group(1))


def snapshot(cli: IgrunCli, *flags: str) -> list[dict[str, Any]]:
    done = cli.run("snapshot", "socket", "-o", "json", *flags)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return cli.events(done.stdout)


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    """A TCP listener, an established loopback connection (both ends), a bound UDP socket
    and a connected one, on IPv4 and IPv6 loopback."""
    made: dict[str, socket.socket] = {}
    try:
        listener = made["listener"] = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = made["client"] = socket.create_connection(listener.getsockname())
        made["server"] = listener.accept()[0]
        v6 = made["v6"] = socket.socket(socket.AF_INET6)
        v6.bind(("::1", 0))
        v6.listen()
        udp = made["udp"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        peer = made["udp_peer"] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.connect(udp.getsockname())
        _ = client
        yield made
    finally:
        for s in made.values():
            s.close()


def test_host_sockets_agree_with_ss(igrun_cli: IgrunCli, sockets: dict[str, socket.socket]) -> None:
    ports = {s.getsockname()[1] for s in sockets.values()}
    events = snapshot(igrun_cli, "--host", "-m", "0")  # every row: ig's default is 50
    ours = {r for r in rows_of(events) if r[3] in ports}
    theirs = {r for r in ss() if r[3] in ports}
    lst, cli, srv = sockets["listener"], sockets["client"], sockets["server"]
    lport, cport = lst.getsockname()[1], cli.getsockname()[1]
    expected = {
        ("TCP", "LISTEN", "127.0.0.1", lport, "0.0.0.0", 0, inode(lst)),
        ("TCP", "ESTABLISHED", "127.0.0.1", cport, "127.0.0.1", lport, inode(cli)),
        ("TCP", "ESTABLISHED", "127.0.0.1", lport, "127.0.0.1", cport, inode(srv)),
        ("TCP", "LISTEN", "::1", sockets["v6"].getsockname()[1], "::", 0, inode(sockets["v6"])),
        ("UDP", "INACTIVE", "127.0.0.1", sockets["udp"].getsockname()[1], "0.0.0.0", 0,
         inode(sockets["udp"])),
        ("UDP", "ACTIVE", "127.0.0.1", sockets["udp_peer"].getsockname()[1], "127.0.0.1",
         sockets["udp"].getsockname()[1], inode(sockets["udp_peer"])),
    }  # fmt: skip
    assert ours == theirs == expected
    mine = [e for e in events if e["src"]["port"] == lport and e["status"] == "LISTEN"]
    host_netns = os.stat("/proc/self/ns/net").st_ino
    assert mine[0]["netnsid"] == host_netns and mine[0]["runtime"] == {}
    assert mine[0]["src"] == {"addr": "127.0.0.1", "version": 4, "port": lport}
    # The default sort: protocol, status, then src.
    keys = [(e["protocol"], e["status"]) for e in events]
    assert keys == sorted(keys)


def test_closing_connections_agree_with_ss(igrun_cli: IgrunCli) -> None:
    """Sockets the kernel keeps after close: a client that closed first waits in FIN_WAIT2
    (as a timewait socket, without a file) while its peer sits in CLOSE_WAIT; a client whose
    peer closed too waits in TIME_WAIT. As /proc/net/tcp, their inode is 0."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        lport = listener.getsockname()[1]
        half = socket.create_connection(("127.0.0.1", lport))
        half_port = half.getsockname()[1]
        waiting = stack.enter_context(listener.accept()[0])
        half.close()  # the peer is told, and never closes: CLOSE_WAIT, and FIN_WAIT2 here
        done = socket.create_connection(("127.0.0.1", lport))
        done_port = done.getsockname()[1]
        peer = listener.accept()[0]
        done.close()
        assert peer.recv(1) == b""  # the FIN arrived
        peer.close()  # and now the other way: TIME_WAIT for the first to close
        expected = {
            ("TCP", "LISTEN", "127.0.0.1", lport, "0.0.0.0", 0, inode(listener)),
            ("TCP", "CLOSE_WAIT", "127.0.0.1", lport, "127.0.0.1", half_port, inode(waiting)),
            ("TCP", "FIN_WAIT2", "127.0.0.1", half_port, "127.0.0.1", lport, 0),
            ("TCP", "TIME_WAIT", "127.0.0.1", done_port, "127.0.0.1", lport, 0),
        }
        # By both ends: a socket of an earlier test may still wait (TIME_WAIT) on one of
        # these port numbers, with another peer.
        ends = {(r[3], r[5]) for r in expected}
        deadline = time.monotonic() + 10
        while {r for r in ss() if (r[3], r[5]) in ends} != expected:  # the last ACKs: on the way
            assert time.monotonic() < deadline, sorted(r for r in ss() if r[3] in dict(ends))
            time.sleep(0.02)
        events = snapshot(igrun_cli, "--host", "--proto", "tcp", "-m", "0")
        assert {r for r in rows_of(events) if (r[3], r[5]) in ends} == expected


def test_proto_reads_only_that_protocol(
    igrun_cli: IgrunCli, sockets: dict[str, socket.socket]
) -> None:
    udp_port = sockets["udp"].getsockname()[1]
    tcp = snapshot(igrun_cli, "--host", "--proto", "tcp", "-m", "0")
    udp = snapshot(igrun_cli, "--host", "--proto", "udp", "-m", "0")
    assert tcp and {e["protocol"] for e in tcp} == {"TCP"}
    assert {e["protocol"] for e in udp} == {"UDP"}
    assert udp_port in {e["src"]["port"] for e in udp}


def test_a_containers_network_namespace_agrees_with_ss(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    """A container with its own namespace: busybox's nc listening on 8080 and connected on
    8081, and two UDP sockets the test makes in that namespace. Its snapshot is exactly what
    ss sees in that namespace, every row names the container, and nothing of the host's
    namespace comes."""
    needs("nsenter")
    name = unique("igrun-sock")
    podman.names.append(name)
    script = ("nc -l -p 8080 </dev/null & sleep 1000 | nc -l -p 8081 & sleep 0.3; "
              "sleep 1000 | nc 127.0.0.1 8081 & wait")  # fmt: skip
    podman("run", "-d", "--pull=never", "--network", "none", "--name", name, IMAGE,
           "sh", "-c", script)  # fmt: skip
    pid = int(podman("inspect", "-f", "{{.State.Pid}}", name))
    netns = os.stat(f"/proc/{pid}/ns/net").st_ino
    assert netns != os.stat("/proc/self/ns/net").st_ino
    enter = ("nsenter", "-t", str(pid), "-n")
    with contextlib.ExitStack() as stack:
        udp = stack.enter_context(socket_in_netns(pid, socket.AF_INET, socket.SOCK_DGRAM))
        udp.bind(("0.0.0.0", 9090))
        peer = stack.enter_context(socket_in_netns(pid, socket.AF_INET, socket.SOCK_DGRAM))
        peer.connect(("127.0.0.1", 9090))
        deadline = time.monotonic() + 10
        while sum(r[1] == "ESTABLISHED" for r in ss(*enter)) < 2:
            assert time.monotonic() < deadline, ss(*enter)
            time.sleep(0.05)
        theirs = ss(*enter)
        events = snapshot(igrun_cli, "-c", name, "-m", "0")
        assert rows_of(events) == theirs
        # --host: the host's namespace too, each row named by the namespace it came from.
        both = snapshot(igrun_cli, "--host", "-m", "0")
        inside = [e for e in both if e["netnsid"] == netns]
        assert rows_of(inside) == theirs
        assert {e["runtime"].get("containerName") for e in inside} == {name}
        host = [e for e in both if e["netnsid"] == os.stat("/proc/self/ns/net").st_ino]
        assert host and all(e["runtime"] == {} for e in host)
        assert ("UDP", "INACTIVE", "0.0.0.0", 9090, "0.0.0.0", 0, inode(udp)) in theirs
        pport = peer.getsockname()[1]
        assert ("UDP", "ACTIVE", "127.0.0.1", pport, "127.0.0.1", 9090, inode(peer)) in theirs
    # busybox's nc listens on IPv6's any address (dual stack); its client is IPv4.
    assert ("TCP", "LISTEN", "::", 8080, "::", 0) in {r[:6] for r in theirs}
    established = sorted(r[2:6] for r in theirs if r[1] == "ESTABLISHED")
    (client,) = [r for r in established if r[3] == 8081]
    assert established == sorted([client, ("::ffff:127.0.0.1", 8081, "::ffff:127.0.0.1",
                                           client[1])])  # fmt: skip
    assert all(r[6] > 0 for r in theirs)  # every socket there has a file
    assert {e["runtime"]["containerName"] for e in events} == {name}
    assert {e["netnsid"] for e in events} == {netns}


def test_bad_proto_is_one_line(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("snapshot", "socket", "--proto", "bogus")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "igrun: error: --proto: 'bogus' is not one of all, tcp, udp"
    ], done.stderr
    assert done.stdout == ""
