"""top tcp in the real kernel: loopback connections that move a known number of bytes each
way, read back per process and connection from ``igrun top tcp``, with exact counts."""

from __future__ import annotations

import importlib.resources
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import unique
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)
from test_top import run_top

from igrun.core.output.columns import bytes_text
from igrun.core.run.local import Run
from igrun.plugins.top_tcp import TopTcp

if TYPE_CHECKING:
    from igrun.testing import IgrunCli

pytestmark = pytest.mark.bpf

COMM = Path(sys.executable).name[:15]

SERVER = """
    import socket, sys
    family, host = getattr(socket, sys.argv[1]), sys.argv[2]
    n, m = int(sys.argv[3]), int(sys.argv[4])
    listener = socket.socket(family)
    listener.bind((host, 0))
    listener.listen()
    print(listener.getsockname()[1], flush=True)
    conn, _ = listener.accept()
    got = 0
    while got < n:
        data = conn.recv(min(65536, n - got))
        if not data:
            break
        got += len(data)
    conn.sendall(b"y" * m)
    conn.recv(1)  # the client's close
    print(got, flush=True)
"""

CLIENT = """
    import socket, sys
    family, host, port = getattr(socket, sys.argv[1]), sys.argv[2], int(sys.argv[3])
    n, m = int(sys.argv[4]), int(sys.argv[5])
    s = socket.socket(family)
    s.connect((host, port))
    print(s.getsockname()[1], flush=True)
    sys.stdin.readline()
    s.sendall(b"x" * n)
    got = 0
    while got < m:
        data = s.recv(m - got)
        if not data:
            break
        got += len(data)
    s.close()
    print(got, flush=True)
"""


def python(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@dataclass
class Exchange:
    """A connected client and server on loopback; :meth:`go` makes the client send ``n``
    bytes and the server answer with ``m``."""

    client: subprocess.Popen[str]
    server: subprocess.Popen[str]
    client_port: int
    server_port: int
    n: int
    m: int

    def go(self) -> None:
        assert self.client.stdin is not None and self.client.stdout is not None
        assert self.server.stdout is not None
        self.client.stdin.write("go\n")
        self.client.stdin.flush()
        assert int(self.client.stdout.readline()) == self.m
        assert int(self.server.stdout.readline()) == self.n
        assert self.client.wait(10) == 0 and self.server.wait(10) == 0


@pytest.fixture
def connect() -> Iterator[Any]:
    procs: list[subprocess.Popen[str]] = []

    def make(n: int, m: int, family: str = "AF_INET", host: str = "127.0.0.1") -> Exchange:
        server = python(SERVER, family, host, n, m)
        procs.append(server)
        assert server.stdout is not None
        port = int(server.stdout.readline())
        client = python(CLIENT, family, host, port, n, m)
        procs.append(client)
        assert client.stdout is not None
        return Exchange(client, server, int(client.stdout.readline()), port, n, m)

    yield make
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run(
    cli: IgrunCli, action: Any, *flags: str, interval: float = 0.5
) -> list[list[dict[str, Any]]]:
    """``igrun top tcp -o json --interval 500ms FLAGS`` while ``action`` runs, ended after the
    interval that holds the action: its windows, each one JSON array."""
    proc = cli.start("top", "tcp", "-o", "json", "--interval", f"{interval}s", *flags)
    try:
        action()
        time.sleep(interval + 0.7)  # the action's interval ends and is written
    finally:
        out, err = proc.stop()
    assert proc.returncode == 0, err
    windows = [json.loads(line) for line in out.splitlines() if line]
    assert windows and all(isinstance(w, list) for w in windows), out
    proc.assert_released()
    return windows


def rows(windows: list[list[dict[str, Any]]], src: int, dst: int) -> list[dict[str, Any]]:
    return [r for w in windows for r in w if r["src"]["port"] == src and r["dst"]["port"] == dst]


def totals(found: list[dict[str, Any]]) -> tuple[int, int]:
    """Bytes sent and received over all the rows (an exchange may straddle two 500 ms
    intervals)."""
    return sum(r.get("sent", 0) for r in found), sum(r.get("received", 0) for r in found)


def test_loopback_bytes_per_process_and_connection(igrun_cli: IgrunCli, connect: Any) -> None:
    """The exchange (well under a second, right after start) falls in the first 3-second
    interval: one row for each end, with exact counts."""
    ex = connect(100_000, 7_777)
    windows = run(igrun_cli, ex.go, "--host", interval=3)
    client = rows(windows, ex.client_port, ex.server_port)
    server = rows(windows, ex.server_port, ex.client_port)
    assert len(client) == len(server) == 1, windows
    assert (client[0]["sent"], client[0]["received"]) == (100_000, 7_777)
    assert (server[0]["sent"], server[0]["received"]) == (7_777, 100_000)
    assert any(client[0] in w and server[0] in w for w in windows)
    assert {r["pid"] for r in client} == {ex.client.pid}
    assert {r["pid"] for r in server} == {ex.server.pid}
    for r in client + server:
        assert r["comm"] == COMM and r["ipversion"] == 4
        assert r["src"]["addr"] == r["dst"]["addr"] == "127.0.0.1"
        assert r["src"]["version"] == r["dst"]["version"] == 4
        assert r["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino


def test_rows_sorted_by_sent_then_received_and_limited(igrun_cli: IgrunCli, connect: Any) -> None:
    """``ig``'s default sort (``-sent,-recv``), and ``-m`` cutting each interval."""
    exchanges = [connect(1_000 * (i + 1), 10) for i in range(3)]

    def action() -> None:
        for ex in exchanges:
            ex.go()

    windows = run(igrun_cli, action, "--host", "--pid", "0")
    for w in windows:
        keys = [(r.get("sent", 0), r.get("received", 0)) for r in w]
        assert keys == sorted(keys, reverse=True)
    limited = run(igrun_cli, lambda: [connect(500, 5).go() for _ in range(3)], "--host", "-m", "2")
    assert max(len(w) for w in limited) == 2


def test_pid_keeps_only_that_process(igrun_cli: IgrunCli, connect: Any) -> None:
    ex = connect(4_096, 123)
    windows = run(igrun_cli, ex.go, "--host", "--pid", str(ex.client.pid))
    assert totals(rows(windows, ex.client_port, ex.server_port)) == (4_096, 123)
    assert {r["pid"] for w in windows for r in w} == {ex.client.pid}


def test_family_6_keeps_ipv6_connections(igrun_cli: IgrunCli, connect: Any) -> None:
    v6 = connect(2_048, 99, "AF_INET6", "::1")
    v4 = connect(2_048, 99)

    def action() -> None:
        v6.go()
        v4.go()

    windows = run(igrun_cli, action, "--host", "--family", "6")
    client = rows(windows, v6.client_port, v6.server_port)
    assert totals(client) == (2_048, 99)
    assert totals(rows(windows, v6.server_port, v6.client_port)) == (99, 2_048)
    assert client[0]["src"] == {"addr": "::1", "version": 6, "port": v6.client_port}
    assert client[0]["dst"] == {"addr": "::1", "version": 6, "port": v6.server_port}
    assert client[0]["ipversion"] == 6 and client[0]["pid"] == v6.client.pid
    assert not rows(windows, v4.client_port, v4.server_port)
    assert {r["ipversion"] for w in windows for r in w} == {6}


def test_family_4_and_an_ipv4_mapped_peer(igrun_cli: IgrunCli, connect: Any) -> None:
    """A dual-stack IPv6 socket talking to an IPv4 peer is an IPv6 row (``-f 4`` leaves it
    out), its addresses written as Go's netip writes them."""
    mapped = connect(1_500, 15, "AF_INET6", "::ffff:127.0.0.1")
    windows = run(igrun_cli, mapped.go, "--host")
    (first, *_) = rows(windows, mapped.client_port, mapped.server_port)
    assert first["src"]["addr"] == "::ffff:127.0.0.1" and first["ipversion"] == 6
    again = connect(1_500, 15, "AF_INET6", "::ffff:127.0.0.1")
    windows = run(igrun_cli, again.go, "--host", "-f", "4")
    assert not rows(windows, again.client_port, again.server_port)


def test_columns_show_ig_sizes(igrun_cli: IgrunCli, connect: Any) -> None:
    ex = connect(100_000, 7_777)
    proc = igrun_cli.start("top", "tcp", "--host", "--pid", "0", "-o", "columns")
    ex_pid = str(ex.client.pid)
    try:
        ex.go()
        time.sleep(1.5)  # the default interval: 1s
    finally:
        out, err = proc.stop()
    assert proc.returncode == 0, err
    header = next(line for line in out.splitlines() if " PID " in line)
    assert header.split() == [
        "RUNTIME.CONTAINERNAME", "PID", "COMM", "IP", "SRC", "DST", "SENT", "RECV",
    ]  # fmt: skip
    mine = [
        line.split()
        for line in out.splitlines()
        if line.split()[:1] == [ex_pid] and line.split()[3] == f"127.0.0.1:{ex.client_port}"
    ]
    assert mine, out
    assert mine[0][-2:] == [bytes_text(100_000), bytes_text(7_777)] == ["97.66KiB", "7.595KiB"]


def test_ig_flags_and_defaults() -> None:
    params = {p.key: p for p in TopTcp.params}
    assert params["pid"].default == "0"
    assert (params["family"].alias, params["family"].default) == ("f", "all")
    assert params["family"].possible_values == ("all", "4", "6")
    assert TopTcp.param_defaults == {"interval": "1s", "max-rows": "50"}
    assert TopTcp.sort_by_default() == ["-sent", "-recv"]
    assert TopTcp.full_name() == "top tcp"


def test_bad_family_is_one_line(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("top", "tcp", "--host", "--family", "5")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--family" in done.stderr


MANY = """
    import socket, sys
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    pairs = []
    for _ in range(int(sys.argv[1])):
        client = socket.create_connection(listener.getsockname())
        pairs.append((client, listener.accept()[0]))
    print("ready", flush=True)
    sys.stdin.readline()
    for client, server in pairs:
        client.sendall(b"x" * 100)
        assert server.recv(100) == b"x" * 100
    print("done", flush=True)
    sys.stdin.readline()
"""


class SmallTopTcp(TopTcp):
    stats_entries = 4

    def object_path(self) -> Any:
        return importlib.resources.files(TopTcp.__module__) / TopTcp.bpf_object


def test_rows_that_do_not_fit_the_map_are_reported_lost() -> None:
    """Five connections of one process are ten rows (each end): four fit, the rest is lost,
    and said so."""
    child = python(MANY, 5)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"

        def go() -> None:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "done\n"

        values = {"runtime.timeout": "1.5s", "runtime.interval": "1s", "pid": str(child.pid)}
        windows, ctx = run_top(go, values, gadget=SmallTopTcp)
    finally:
        child.kill()
        child.wait()
    run = ctx.resources.get(Run)
    assert run is not None
    mine = [r for w in windows for r in w if r["pid"] == child.pid]
    assert len(mine) == 4
    assert run.lost_total >= 6  # one per send or receive that found no room


# ---- in a container ------------------------------------------------------------------------


def test_container_rows_carry_its_name_and_exact_counts(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    connect: Any,
) -> None:
    box = podman.run(unique("igrun-toptcp"))
    host = connect(3_000, 500)  # the same counts on the host: left out by -c

    def action() -> None:
        podman(
            "exec", "-d", box.name, "nc", "-l", "-p", "9000", "-e", "sh", "-c",
            "head -c 3000 >/dev/null; head -c 500 /dev/zero",
        )  # fmt: skip
        for _ in range(50):  # until the listener is up: refused connects move no bytes
            got = podman(
                "exec", box.name, "sh", "-c",
                "head -c 3000 /dev/zero | nc 127.0.0.1 9000 | wc -c",
                check=False,
            )  # fmt: skip
            if got == "500":
                break
            time.sleep(0.1)
        assert got == "500"
        host.go()

    windows = run(igrun_cli, action, "-c", box.name)
    found = [r for w in windows for r in w]
    assert found and {r["runtime"]["containerName"] for r in found} == {box.name}
    assert {r["mountnsid"] for r in found} == {box.mntns}
    client = [r for r in found if r["dst"]["port"] == 9000]
    server = [r for r in found if r["src"]["port"] == 9000]
    assert totals(client) == (3_000, 500) and {r["comm"] for r in client} == {"nc"}
    assert totals(server) == (500, 3_000) and {r["comm"] for r in server} == {"head"}
    assert {(r["src"]["addr"], r["ipversion"]) for r in client} == {("127.0.0.1", 4)}
    # busybox nc listens on a dual-stack IPv6 socket: the server's rows are IPv6.
    assert {(r["src"]["addr"], r["ipversion"]) for r in server} == {("::ffff:127.0.0.1", 6)}
    assert not rows(windows, host.client_port, host.server_port)
