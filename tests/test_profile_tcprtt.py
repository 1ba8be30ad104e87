"""``profile tcprtt`` end to end: real TCP round trips (a client sends, a server echoes) over
loopback and over a veth pair between two network namespaces; the histograms are grouped by
the right addresses, the port and address filters keep only the test connection's samples, and
the RTTs are in the range of the link."""

from __future__ import annotations

import json
import random
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from igrun.testing import IgrunCli

pytestmark = pytest.mark.bpf

ROUND_TRIPS = 200
ECHO = r"""
import socket, sys
role = sys.argv[1]
if role == "server":
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[2] else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[2], int(sys.argv[3])))
    s.listen(1)
    print("listening", flush=True)
    c, _ = s.accept()
    while True:
        data = c.recv(4096)
        if not data:
            break
        c.sendall(data)
    c.close()
else:
    server, port, local, n = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    c = socket.create_connection((server, port), source_address=(local, 0))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(n):
        c.sendall(b"x" * 64)
        got = b""
        while len(got) < 64:
            got += c.recv(64 - len(got))
    c.close()
"""
"""A server that echoes one connection, and a client doing N round trips of 64 bytes: each
message and each echo is one segment that an established socket receives (TCP_NODELAY)."""


@dataclass(frozen=True)
class Link:
    server: str
    client: str
    port: int
    server_ns: Sequence[str] = ()
    client_ns: Sequence[str] = ()
    """``ip netns exec NS`` to run that side in another network namespace."""


def transfer(link: Link, round_trips: int = ROUND_TRIPS) -> None:
    """One connection from the client to the echo server, ``round_trips`` times there and back."""
    server = subprocess.Popen(
        [*link.server_ns, sys.executable, "-c", ECHO, "server", link.server, str(link.port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        subprocess.run(
            [*link.client_ns, sys.executable, "-c", ECHO, "client", link.server,
             str(link.port), link.client, str(round_trips)],
            check=True,
            timeout=60,
        )  # fmt: skip
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def free_port(addr: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET) as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def loopback() -> Link:
    """Addresses of 127/8 of this test's own: other traffic on the host uses none of them."""
    a, b = random.randrange(1, 250), random.randrange(1, 250)
    server, client = f"127.88.{a}.{b}", f"127.77.{a}.{b}"
    return Link(server, client, free_port(server))


def histograms(out: str) -> list[dict[str, Any]]:
    [line] = out.splitlines()
    result: list[dict[str, Any]] = json.loads(line).get("histograms", [])
    return result


def total(h: dict[str, Any]) -> int:
    return sum(i["count"] for i in h["intervals"])


def plausible_loopback(h: dict[str, Any]) -> None:
    """Loopback RTTs are microseconds: every sample below 16 ms, the mean below 2 ms."""
    assert h["unit"] == "µs"
    assert all(i["end"] < 16384 for i in h["intervals"] if i["count"])
    assert 0 < h.get("average", 0) < 2000 or h["intervals"][0]["count"] == total(h)


def test_loopback_by_local_address(igrun_cli: IgrunCli, loopback: Link) -> None:
    run = igrun_cli.start("profile", "tcprtt", "--byladdr", "-o", "json")
    transfer(loopback)
    out, err = run.stop()
    assert run.returncode == 0, err
    by_addr = {h["address"]: h for h in histograms(out)}
    for addr in (loopback.server, loopback.client):  # each side's socket has samples
        h = by_addr[addr]
        assert h["addressType"] == "Local"
        assert total(h) > 0
        plausible_loopback(h)
    run.assert_released()


def test_port_filters_keep_only_the_connection(igrun_cli: IgrunCli, loopback: Link) -> None:
    """The server's side (local port) and the client's (remote port) in two runs at once,
    each grouped by the address at the other end: only the test connection's addresses."""
    port = str(loopback.port)
    server_side = igrun_cli.start("profile", "tcprtt", "-B", "--lport", port, "-o", "json")
    client_side = igrun_cli.start("profile", "tcprtt", "-b", "--rport", port, "-o", "json")
    transfer(loopback)
    out_server, _ = server_side.stop()
    out_client, _ = client_side.stop()
    [h] = histograms(out_server)
    assert (h["address"], h["addressType"], h["localPort"]) == (
        loopback.client,
        "Remote",
        loopback.port,
    )
    assert list(h) == ["unit", "intervals", "address", "addressType", "average", "localPort"]
    assert ROUND_TRIPS <= total(h) <= ROUND_TRIPS + 3  # each message, then the close's segments
    plausible_loopback(h)
    [h] = histograms(out_client)
    assert (h["address"], h["addressType"], h["remotePort"]) == (
        loopback.client,
        "Local",
        loopback.port,
    )
    assert ROUND_TRIPS <= total(h) <= ROUND_TRIPS + 3  # each echo, then the close's segments
    plausible_loopback(h)


def test_address_filter_and_report(igrun_cli: IgrunCli, loopback: Link) -> None:
    """``--raddr`` keeps the client's side only; the report is ``ig``'s: a title with the
    average, then the histogram."""
    run = igrun_cli.start(
        "profile", "tcprtt", "--raddr", loopback.server, "--rport", str(loopback.port)
    )
    transfer(loopback)
    out, err = run.stop()
    assert run.returncode == 0, err
    lines = out.splitlines()
    title = re.fullmatch(
        rf"All Addresses = \*\*\*\*\*\* Remote port = {loopback.port} \[AVG (\d+\.\d{{6}})\]",
        lines[0],
    )
    assert title, lines[0]
    assert 0 < float(title[1]) < 2000
    assert lines[1] == f"{'':8}{'µs':<16} : count    distribution"
    bars = [
        re.fullmatch(r"\s+(\d+) -> (\d+)\s+: (\d+)\s+\|[* ]{40}\|", line) for line in lines[2:-1]
    ]
    assert all(bars) and lines[-1] == ""
    assert sum(int(b[3]) for b in bars if b) > 0


def test_ipv6_filter_and_grouping(igrun_cli: IgrunCli) -> None:
    """``--raddrv6`` keeps the IPv6 client's side (no IPv4 sample passes), grouped by local
    address: ``::1``."""
    link = Link("::1", "::1", free_port("::1"))
    run = igrun_cli.start(
        "profile", "tcprtt", "-b", "--raddrv6", "::1", "--rport", str(link.port), "-o", "json"
    )
    transfer(link)
    out, err = run.stop()
    assert run.returncode == 0, err
    [h] = histograms(out)
    assert (h["address"], h["addressType"], h["remotePort"]) == ("::1", "Local", link.port)
    assert total(h) > 0
    plausible_loopback(h)


def test_milliseconds(igrun_cli: IgrunCli, loopback: Link) -> None:
    run = igrun_cli.start("profile", "tcprtt", "-m", "--lport", str(loopback.port), "-o", "json")
    transfer(loopback)
    out, _ = run.stop()
    [h] = histograms(out)
    assert h["unit"] == "ms"
    assert h["intervals"] == [{"count": total(h), "start": 0, "end": 1}]  # loopback: < 2 ms


@contextmanager
def veth_pair() -> Iterator[Link]:
    """Two network namespaces joined by a veth pair, 10.201.X.1 (client) and .2 (server)."""
    tag = uuid.uuid4().hex[:6]
    client_ns, server_ns = f"igrun-rc{tag}", f"igrun-rs{tag}"
    net = random.randrange(1, 250)
    client, server = f"10.201.{net}.1", f"10.201.{net}.2"
    made: list[str] = []
    try:
        for ns in (client_ns, server_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            made.append(ns)
        a, b = f"igr{tag}a", f"igr{tag}b"
        for argv in (
            [
                "ip",
                "link",
                "add",
                a,
                "netns",
                client_ns,
                "type",
                "veth",
                "peer",
                b,
                "netns",
                server_ns,
            ],
            ["ip", "-n", client_ns, "addr", "add", f"{client}/24", "dev", a],
            ["ip", "-n", server_ns, "addr", "add", f"{server}/24", "dev", b],
            ["ip", "-n", client_ns, "link", "set", a, "up"],
            ["ip", "-n", server_ns, "link", "set", b, "up"],
        ):
            subprocess.run(argv, check=True, capture_output=True)
        yield Link(
            server,
            client,
            7007,
            server_ns=("ip", "netns", "exec", server_ns),
            client_ns=("ip", "netns", "exec", client_ns),
        )
    finally:
        for ns in made:  # deleting a namespace deletes its end of the pair, and so both
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_veth_pair_between_namespaces(igrun_cli: IgrunCli) -> None:
    """The client's side, grouped by remote address (the server's, in the other namespace).
    ``tc netem`` would add a known delay; kernels without sch_netem (this test checks) can only
    show that a veth round trip is microseconds."""
    with veth_pair() as link:
        run = igrun_cli.start("profile", "tcprtt", "-B", "--raddr", link.server, "-o", "json")
        transfer(link)
        out, err = run.stop()
    assert run.returncode == 0, err
    [h] = histograms(out)
    assert (h["address"], h["addressType"]) == (link.server, "Remote")
    assert total(h) > 0
    plausible_loopback(h)


DELAY_LINE = r"""
import ctypes, fcntl, heapq, os, select, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
TUNSETIFF, IFF_TUN, IFF_NO_PI, CLONE_NEWNET = 0x400454CA, 0x0001, 0x1000, 0x40000000

def open_tun(ns, name):
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET):
        raise OSError(ctypes.get_errno(), f"setns {ns}")
    os.close(fd)
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return tun

a, b = open_tun(sys.argv[1], sys.argv[2]), open_tun(sys.argv[3], sys.argv[4])
delay, other, queue, seq = float(sys.argv[5]), {a: b, b: a}, [], 0
print("ready", flush=True)
while True:
    timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
    readable, _, _ = select.select([a, b], [], [], timeout)
    for fd in readable:
        heapq.heappush(queue, (time.monotonic() + delay, seq, other[fd], os.read(fd, 65536)))
        seq += 1
    while queue and queue[0][0] <= time.monotonic():
        _, _, fd, packet = heapq.heappop(queue)
        os.write(fd, packet)
"""
"""A delay line between two namespaces: every IP packet that leaves one through its TUN device
enters the other through its own after ``delay`` seconds (``tc netem delay``, in user space)."""


@contextmanager
def delayed_link(one_way: float) -> Iterator[Link]:
    """Two network namespaces joined by TUN devices and a delay line: a round trip takes
    ``2 * one_way`` seconds more than on loopback. Kernels without sch_netem (this one has
    none: ``tc qdisc add ... netem`` fails) cannot delay packets in the kernel."""
    tag = uuid.uuid4().hex[:6]
    client_ns, server_ns = f"igrun-dc{tag}", f"igrun-ds{tag}"
    tun_c, tun_s = f"igr{tag}c", f"igr{tag}s"
    net = random.randrange(1, 250)
    client, server = f"10.202.{net}.1", f"10.202.{net}.2"
    made: list[str] = []
    line: subprocess.Popen[str] | None = None
    try:
        for ns in (client_ns, server_ns):
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            made.append(ns)
        for ns, tun, here, there in (
            (client_ns, tun_c, client, server),
            (server_ns, tun_s, server, client),
        ):
            for argv in (
                ["ip", "-n", ns, "tuntap", "add", "dev", tun, "mode", "tun"],
                ["ip", "-n", ns, "addr", "add", here, "peer", there, "dev", tun],
                ["ip", "-n", ns, "link", "set", tun, "up"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
            ):
                subprocess.run(argv, check=True, capture_output=True)
        line = subprocess.Popen(
            [sys.executable, "-c", DELAY_LINE, client_ns, tun_c, server_ns, tun_s, str(one_way)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert line.stdout is not None and line.stdout.readline() == "ready\n"
        yield Link(
            server,
            client,
            7008,
            server_ns=("ip", "netns", "exec", server_ns),
            client_ns=("ip", "netns", "exec", client_ns),
        )
    finally:
        if line is not None:
            line.kill()
            line.wait()
        for ns in made:  # its TUN device goes with it
            subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_20ms_round_trip_lands_in_its_bucket(igrun_cli: IgrunCli) -> None:
    """10 ms each way: no smoothed RTT of the client's side is below 16384 µs (the delay is a
    floor), most are in 16384 -> 32767 µs, and their mean is near 20 ms. What lies above comes
    from the scheduling of the delay line (a Python process on a busy host), so the ceiling
    is looser than the floor."""
    with delayed_link(0.010) as link:
        run = igrun_cli.start("profile", "tcprtt", "-B", "--raddr", link.server, "-o", "json")
        transfer(link, round_trips=50)
        out, err = run.stop()
    assert run.returncode == 0, err
    [h] = histograms(out)
    assert (h["address"], h["addressType"]) == (link.server, "Remote")
    counts = {i["start"]: i["count"] for i in h["intervals"] if i["count"]}
    assert min(counts) == 16384, counts
    assert counts[16384] * 3 >= 2 * total(h), counts
    assert max(counts) <= 65536, counts
    assert 20_000 <= h["average"] < 40_000, (counts, h["average"])


def test_bad_flags_are_one_line_before_anything_loads(igrun_cli: IgrunCli) -> None:
    cases = {
        ("-b", "-B"): "local and remote address histograms cannot be enabled at the same time",
        ("--laddr", "nope"): "--laddr: 'nope' is not an IPv4 address",
        ("--raddrv6", "1.2.3.4"): "--raddrv6: '1.2.3.4' is not an IPv6 address",
        (
            "--laddr",
            "1.2.3.4",
            "--raddrv6",
            "::1",
        ): "filtering by any IPv4 and IPv6 address is not permitted",
        ("--lport", "70000"): "--lport: 70000 is not a port (0 to 65535)",
        ("--buffer-size", "4M"): "--buffer-size: profile tcprtt has no events buffer "
        "(its histograms are a BPF map, read once)",
    }
    for flags, message in cases.items():
        done = igrun_cli.run("profile", "tcprtt", *flags)
        assert done.returncode == 2, flags
        assert done.stderr.splitlines() == [f"igrun: error: {message}"], flags
