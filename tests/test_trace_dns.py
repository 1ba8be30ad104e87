"""``trace dns`` for real: a DNS server (tests/dnslab.py, raw bytes) in one network namespace,
clients in another that a podman container shares, the gadget attached to that container.

Each query and response is checked field by field: id, name, type, rcode, answers and their
addresses, the latency of the response, and the client's own pid and comm on both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import unique
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

if TYPE_CHECKING:
    from conftest import IgrunCli, NetnsPair

pytestmark = pytest.mark.bpf

LAB = Path(__file__).resolve().parent / "dnslab.py"
SERVER6 = "fd00:231::1"
CLIENT6 = "fd00:231::2"
COMM = Path(sys.executable).name[:15]
"""The clients' comm: the name they were run by."""


@pytest.fixture
def dns_server(netns_pair: NetnsPair) -> Iterator[NetnsPair]:
    """The lab's DNS server in namespace ``a`` (IPv4 and IPv6), for clients in ``b``."""
    suffix = netns_pair.a.removeprefix("igrun-a")
    for ns, dev, addr in ((netns_pair.a, f"igva{suffix}", SERVER6),
                          (netns_pair.b, f"igvb{suffix}", CLIENT6)):  # fmt: skip
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad"],
                       check=True)  # fmt: skip
    server = subprocess.Popen(
        netns_pair.run(netns_pair.a, sys.executable, str(LAB), "serve"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == "serving\n"
        yield netns_pair
    finally:
        server.kill()
        server.wait()


def ask(pair: NetnsPair, name: str, qtype: str, qid: int, *how: str, server: str = "") -> int:
    """One query from a client process in namespace ``b``: its pid (rcode and answer count
    checked by the caller through the events)."""
    out = subprocess.run(
        pair.run(pair.b, sys.executable, str(LAB), "query", server or pair.addr_a, name, qtype,
                 hex(qid), *how),
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout.split("\n")  # fmt: skip
    return int(out[0])


def of_id(events: list[dict[str, Any]], qid: int) -> list[dict[str, Any]]:
    return [e for e in events if e.get("id") == f"{qid:04x}"]


def by_qr(events: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The query leaving the client's namespace and the response arriving there."""
    (query,) = [e for e in events if e["qr"] == "Q"]
    (response,) = [e for e in events if e["qr"] == "R"]
    return query, response


def netns_of(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def test_queries_and_responses_of_a_container_namespace(
    igrun_cli: IgrunCli,
    dns_server: NetnsPair,
    podman: Podman,  # noqa: F811
) -> None:
    pair = dns_server
    ctr = podman.run(unique("igrun-dns"), network=f"ns:/run/netns/{pair.b}")
    netns = netns_of(ctr.pid)
    run = igrun_cli.start("trace", "dns", "-c", ctr.name, "-o", "json")
    udp = ask(pair, "host1.igrun.test", "A", 0x4201)
    tcp = ask(pair, "host1.igrun.test", "A", 0x4202, "tcp")
    v6 = ask(pair, "host1.igrun.test", "AAAA", 0x4203, server=SERVER6)
    nx = ask(pair, "nowhere.igrun.test", "MX", 0x4204)
    podman("exec", ctr.name, "nslookup", "host1.igrun.test", pair.addr_a, check=False)
    time.sleep(0.5)
    out, err = run.stop()
    assert run.returncode == 0, err
    events = igrun_cli.events(out)
    assert {e["netnsid"] for e in events} == {netns}

    for qid, pid, proto, server, client in (
        (0x4201, udp, "UDP", pair.addr_a, pair.addr_b),
        (0x4202, tcp, "TCP", pair.addr_a, pair.addr_b),
        (0x4203, v6, "UDP", SERVER6, CLIENT6),
    ):
        query, response = by_qr(of_id(events, qid))
        for event in (query, response):  # the client's process, not the server's
            assert (event["pid"], event["tid"], event["comm"]) == (pid, pid, COMM)
            assert event["ownerKnown"] is True
            assert event["protocol"] == proto
            assert event["nameserver"] == server
            assert event["name"] == "host1.igrun.test."
            assert event["runtime"]["containerName"] == ctr.name
        assert query["pktType"] == "OUTGOING"
        assert (query["srcIP"], query["dstIP"], query["dstPort"]) == (client, server, 53)
        assert "rcode" not in query and "latency" not in query and "numAnswers" not in query
        assert response["pktType"] == "HOST"
        assert (response["srcIP"], response["srcPort"]) == (server, 53)
        assert response["dstPort"] == query["srcPort"]
        assert response["rcode"] == "NoError"
        assert response["latency"] > 0
    a_query, a_response = by_qr(of_id(events, 0x4201))
    assert a_query["qtype"] == a_response["qtype"] == "A"
    assert (a_response["numAnswers"], a_response["addresses"]) == (2, ["10.9.8.7", "10.9.8.6"])
    assert by_qr(of_id(events, 0x4202))[1]["addresses"] == ["10.9.8.7", "10.9.8.6"]
    v6_response = by_qr(of_id(events, 0x4203))[1]
    assert (v6_response["qtype"], v6_response["addresses"]) == ("AAAA", ["fd00:53::7"])

    nx_query, nx_response = by_qr(of_id(events, 0x4204))
    assert nx_query["qtype"] == nx_response["qtype"] == "MX"
    assert nx_response["rcode"] == "NXDomain" and "numAnswers" not in nx_response
    assert nx_response["name"] == "nowhere.igrun.test." and nx_response["pid"] == nx

    # busybox nslookup in the container: its own process, in the container's mount ns.
    looked = [e for e in events if e["comm"] == "nslookup"]
    assert {e["qr"] for e in looked} == {"Q", "R"}
    assert {e["mountnsid"] for e in looked} == {ctr.mntns}
    assert all(e["name"] == "host1.igrun.test." for e in looked)
    assert {tuple(e["addresses"]) for e in looked if e["qr"] == "R" and e["qtype"] == "A"} == {
        ("10.9.8.7", "10.9.8.6")
    }


def test_a_socket_connected_before_the_run_is_its_owners(
    igrun_cli: IgrunCli,
    dns_server: NetnsPair,
    podman: Podman,  # noqa: F811
) -> None:
    """A connected UDP socket made before the gadget started, sending with send() (which no
    sendmsg hook sees): its packets still name its process."""
    pair = dns_server
    ctr = podman.run(unique("igrun-dns"), network=f"ns:/run/netns/{pair.b}")
    client = subprocess.Popen(
        pair.run(pair.b, sys.executable, str(LAB), "query-later", pair.addr_a,
                 "host1.igrun.test", "0x4401"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    pid = int(client.stdout.readline())
    run = igrun_cli.start("trace", "dns", "-c", ctr.name, "-o", "json")
    client.stdin.write("go\n")
    client.stdin.flush()
    assert client.stdout.readline() == "0 2\n"
    client.wait(timeout=10)
    time.sleep(0.5)
    out, err = run.stop()
    assert run.returncode == 0, err
    query, response = by_qr(of_id(igrun_cli.events(out), 0x4401))
    for event in (query, response):
        assert (event["pid"], event["comm"], event["ownerKnown"]) == (pid, COMM, True)
    assert response["addresses"] == ["10.9.8.7", "10.9.8.6"] and response["latency"] > 0


def test_malformed_messages_are_skipped_and_nothing_breaks(
    igrun_cli: IgrunCli,
    dns_server: NetnsPair,
    podman: Podman,  # noqa: F811
) -> None:
    pair = dns_server
    ctr = podman.run(unique("igrun-dns"), network=f"ns:/run/netns/{pair.b}")
    run = igrun_cli.start("trace", "dns", "-c", ctr.name, "-o", "json")
    header = "430101000001000000000000"
    bad = [
        header + "3f" + "61" * 10,  # a label longer than the packet
        header + "c00c" + "00010001",  # a compressed question name (a pointer to itself)
        header + "01" * 300,  # labels that never end within 255 bytes
        "4302"
        + "8180"
        + "0001"
        + "ffff"
        + "0000"
        + "0000"
        + "0161"
        + "00"
        + "00010001"
        + "c00c" * 40,  # a response claiming 65535 answers, each a bare pointer
        "43",  # shorter than a header
    ]
    for payload in bad:
        subprocess.run(pair.run(pair.b, sys.executable, str(LAB), "raw", pair.addr_a, payload),
                       check=True, capture_output=True, timeout=30)  # fmt: skip
    good = ask(pair, "host1.igrun.test", "A", 0x4303)
    time.sleep(0.5)
    assert run.poll() is None, run.stderr_so_far
    out, err = run.stop()
    assert run.returncode == 0, err
    events = igrun_cli.events(out)
    assert not of_id(events, 0x4301)
    # Well-formed as far as it goes: reported, its answers walked no further than they hold.
    (claimed,) = [e for e in of_id(events, 0x4302) if e["pktType"] == "OUTGOING"]
    assert (claimed["qr"], claimed["name"], claimed["numAnswers"]) == ("R", "a.", 65535)
    assert "addresses" not in claimed
    query, response = by_qr(of_id(events, 0x4303))
    assert query["pid"] == response["pid"] == good


def test_a_container_is_covered_from_its_first_packet_and_released_when_it_goes(
    igrun_cli: IgrunCli,
    dns_server: NetnsPair,
    podman: Podman,  # noqa: F811
) -> None:
    """Two containers share one namespace (as a pod's do): one socket for both, kept until the
    last one goes; neither runs yet when the gadget starts."""
    pair = dns_server
    first, second = unique("igrun-dns1"), unique("igrun-dns2")
    run = igrun_cli.start("trace", "dns", "-c", f"{first},{second}", "-o", "json")
    netns = os.stat(f"/run/netns/{pair.b}").st_ino

    def ours() -> set[int]:
        """Packet sockets of this run in the clients' namespace (by inode)."""
        fds = set()
        for fd in os.listdir(f"/proc/{run.pid}/fd"):
            try:
                link = os.readlink(f"/proc/{run.pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                fds.add(int(link[8:-1]))
        table = subprocess.run(pair.run(pair.b, "cat", "/proc/net/packet"), check=True,
                               capture_output=True, text=True).stdout.split("\n")[1:]  # fmt: skip
        return {int(line.split()[-1]) for line in table if line.strip()} & fds

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 20
        while len(ours()) != count:
            assert time.monotonic() < deadline, f"packet sockets: {ours()}, want {count}"
            time.sleep(0.1)

    assert not ours()
    # The container's first command is the query: it is seen, so the socket was there first.
    podman(
        "run", "-d", "--pull=never", "--network", f"ns:/run/netns/{pair.b}", "--name", first,
        "localhost/igrun-test-busybox:latest", "sh", "-c",
        f"nslookup host1.igrun.test {pair.addr_a}; while true; do sleep 1; done",
    )  # fmt: skip
    podman.names.append(first)
    wait_for(1)
    second_ctr = podman.run(second, network=f"ns:/run/netns/{pair.b}")
    time.sleep(1)  # attached (or not) by now
    assert len(ours()) == 1
    podman.stop(first)
    time.sleep(1)
    assert len(ours()) == 1  # the second one still uses it
    podman("exec", second_ctr.name, "nslookup", "host1.igrun.test", pair.addr_a, check=False)
    podman.stop(second)
    wait_for(0)
    out, err = run.stop()
    assert run.returncode == 0, err
    events = igrun_cli.events(out)
    looked = [e for e in events if e["comm"] == "nslookup" and e["netnsid"] == netns]
    names = {e["runtime"]["containerName"] for e in looked}
    assert names == {first, second}, json.dumps(events)[:2000]
    assert {e["qr"] for e in looked if e["runtime"]["containerName"] == first} == {"Q", "R"}
    run.assert_released()
