"""A network namespace where TCP connects time out, for the TCP gadgets' failure tests.

Inside it, SYNs to ``Blackhole.addr:Blackhole.port`` are dropped by an nftables rule on the
input hook (the sender sees nothing, as behind a firewall that drops), and
``net.ipv4.tcp_syn_retries`` is 1, so a blocking connect gives up with ``ETIMEDOUT`` after about
two seconds instead of two minutes. SYNs to ``Blackhole.unreachable`` are answered with an ICMP
host-unreachable instead: connect fails at once with ``EHOSTUNREACH``.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Blackhole:
    ns: str
    addr: str = "127.0.0.1"
    port: int = 9
    unreachable: int = 10

    def run(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (same pid: ``ip netns exec`` execs it)."""
        return ["ip", "netns", "exec", self.ns, *argv]


RULES = """
table inet blackhole {{
    chain input {{
        type filter hook input priority 0; policy accept;
        ip daddr {addr} tcp dport {port} drop
        ip daddr {addr} tcp dport {unreachable} reject with icmp type host-unreachable
    }}
}}
"""


@contextmanager
def blackhole_netns() -> Iterator[Blackhole]:
    hole = Blackhole(f"igrun-bh{uuid.uuid4().hex[:8]}")  # unique: parallel runs never share it
    subprocess.run(["ip", "netns", "add", hole.ns], check=True, capture_output=True)
    try:
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=1"],
        ):
            subprocess.run(hole.run(*argv), check=True, capture_output=True)
        subprocess.run(
            hole.run("nft", "-f", "-"),
            input=RULES.format(addr=hole.addr, port=hole.port, unreachable=hole.unreachable),
            check=True,
            capture_output=True,
            text=True,
        )
        yield hole
    finally:
        subprocess.run(["ip", "netns", "del", hole.ns], capture_output=True)
