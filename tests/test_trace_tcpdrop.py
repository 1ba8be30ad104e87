"""trace tcpdrop in the real kernel: segments dropped by nftables (with the socket's owner)
and a SYN to a closed port (dropped before any socket: the owner is unknown, and said so)."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import gadgetlab
import pytest

from igrun.plugins.trace_tcpdrop import TraceTcpdrop, drop_reasons

if TYPE_CHECKING:
    from conftest import NetnsPair

pytestmark = pytest.mark.bpf

NO_POD = {"namespace": "", "podname": "", "kind": ""}
"""An endpoint of no known pod, as the Python API gives it (JSON leaves its keys out)."""

CONNECT = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[5]))
try:
    s.connect((sys.argv[3], int(sys.argv[4])))
except OSError as e:
    print(type(e).__name__)
"""


def connect(prefix: list[str], src: str, sport: int, dst: str, dport: int, wait: float) -> None:
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", CONNECT, src, str(sport), dst, str(dport), str(wait)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() in ("ConnectionRefusedError", "TimeoutError")


def test_netfilter_drop_of_a_syn_names_the_client(netns_pair: NetnsPair) -> None:
    rules = (
        "add table inet igrun_test; "
        "add chain inet igrun_test out { type filter hook output priority 0; }; "
        f"add rule inet igrun_test out ip daddr {netns_pair.addr_b} tcp dport 7 drop"
    )
    subprocess.run(netns_pair.run(netns_pair.a, "nft", rules), check=True)
    pids: list[int] = []

    def run() -> None:
        proc = subprocess.Popen(
            [*netns_pair.run(netns_pair.a, sys.executable, "-c", CONNECT, netns_pair.addr_a,
                             "40007", netns_pair.addr_b, "7", "0.5")],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        pids.append(proc.pid)
        out, _ = proc.communicate(timeout=10)
        assert out.strip() == "TimeoutError"

    rows = gadgetlab.trace(TraceTcpdrop, run)
    mine = [r for r in rows if r["src"]["port"] == 40007]
    assert mine, rows
    first = mine[0]
    assert first["pid"] == pids[0]
    assert first["ownerKnown"] is True
    assert first["reason"] == "NETFILTER_DROP"
    assert first["tcpflags"] == "SYN"
    assert first["state"] == "SYN_SENT"
    assert first["src"] == {"addr": netns_pair.addr_a, "version": 4, "port": 40007, **NO_POD}
    assert first["dst"] == {"addr": netns_pair.addr_b, "version": 4, "port": 7, **NO_POD}


def test_a_drop_before_any_socket_has_no_owner() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens there once probe is gone
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        sport = probe.getsockname()[1]

    def run() -> None:
        connect([], "127.0.0.1", sport, "127.0.0.1", closed, 2)

    rows = gadgetlab.trace(TraceTcpdrop, run)
    (syn,) = [r for r in rows if r["src"]["port"] == sport and r["tcpflags"] == "SYN"]
    assert syn["reason"] == "NO_SOCKET"
    assert syn["ownerKnown"] is False
    assert (syn["pid"], syn["comm"]) == (0, "(unknown)")
    assert syn["dst"] == {"addr": "127.0.0.1", "version": 4, "port": closed, **NO_POD}


def test_drop_reasons_come_from_the_running_kernel() -> None:
    reasons = drop_reasons()
    assert reasons[2] == "NOT_SPECIFIED"
    assert "NETFILTER_DROP" in reasons.values()
