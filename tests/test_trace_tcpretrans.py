"""trace tcpretrans in the real kernel: a connection between two network namespaces whose
peer stops answering (an nftables DROP rule), so the kernel retransmits from its timer; the
events still name the client, through the socket enricher."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import TYPE_CHECKING

import gadgetlab
import pytest

from igrun.plugins.trace_tcpretrans import TraceTcpretrans

if TYPE_CHECKING:
    from conftest import NetnsPair

pytestmark = pytest.mark.bpf

NO_POD = {"namespace": "", "podname": "", "kind": ""}
"""An endpoint of no known pod, as the Python API gives it (JSON leaves its keys out)."""

SERVER = """
import socket, sys
l = socket.socket()
l.bind((sys.argv[1], 9000))
l.listen()
print("ready", flush=True)
c, _ = l.accept()
sys.stdin.readline()
"""
CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], 9000))
print(s.getsockname()[1], flush=True)
sys.stdin.readline()
s.send(b"x" * 100)
sys.stdin.readline()
"""


def drop_input_from(pair: NetnsPair, ns: str, source: str) -> None:
    rules = (
        "add table inet igrun_test; "
        "add chain inet igrun_test in { type filter hook input priority 0; }; "
        f"add rule inet igrun_test in ip saddr {source} drop"
    )
    subprocess.run([*pair.run(ns, "nft", rules)], check=True)


@pytest.mark.parametrize("opened", ["before", "after"])
def test_retransmits_name_the_socket_owner(netns_pair: NetnsPair, opened: str) -> None:
    """Owners of sockets opened before the gadget (found by the start-up iterator) and after
    it (recorded by the cgroup hooks) are both known."""
    server = subprocess.Popen(
        netns_pair.run(netns_pair.b, sys.executable, "-c", SERVER, netns_pair.addr_b),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    client: list[subprocess.Popen[str]] = []
    ports: list[int] = []

    def connect() -> None:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        proc = subprocess.Popen(
            netns_pair.run(netns_pair.a, sys.executable, "-c", CLIENT, netns_pair.addr_b),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        ports.append(int(proc.stdout.readline()))
        client.append(proc)

    def retransmit() -> None:
        if opened == "after":
            connect()
        drop_input_from(netns_pair, netns_pair.b, netns_pair.addr_a)
        assert client[0].stdin is not None
        client[0].stdin.write("send\n")
        client[0].stdin.flush()
        time.sleep(1.5)  # retransmits after ~0.2, 0.6 and 1.4 s (the timer backs off)

    if opened == "before":
        connect()
    try:
        rows = gadgetlab.trace(TraceTcpretrans, retransmit)
    finally:
        for proc in (*client, server):
            proc.kill()
            proc.wait()
    mine = [r for r in rows if r["src"]["port"] == ports[0]]
    assert len(mine) >= 2  # retransmitted, and again after the timer backed off
    for event in mine:
        assert event["pid"] == client[0].pid
        assert event["ownerKnown"] is True
        assert event["comm"] == "python" or event["comm"] == sys.executable.rsplit("/", 1)[1]
        assert event["src"] == {"addr": netns_pair.addr_a, "version": 4, "port": ports[0], **NO_POD}
        assert event["dst"] == {"addr": netns_pair.addr_b, "version": 4, "port": 9000, **NO_POD}
        assert event["state"] == "ESTABLISHED"
        assert event["tcpflags"] == "PSH|ACK"
