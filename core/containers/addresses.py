"""Which container an IP address belongs to: the peer side of network events.

Each container's addresses are read once, when the collection tells of it, from its init
process's view of its own network namespace: ``/proc/<pid>/net/fib_trie`` lists the local
IPv4 addresses (``/32 host LOCAL``) and ``/proc/<pid>/net/if_inet6`` the IPv6 ones. That is two
small reads per container, and no ``setns``.

A container that had no address yet when it was seen (its network is set up after its
process starts, by a CNI hook say) is read again when an address is not found, at most once
a second. What it misses: an address added to a container that already had one;
containers sharing the host's network namespace (their addresses are the host's, so they
name no container); loopback and link-local addresses (every namespace has them); and an
address that two isolated networks both use (the latest container to show it wins). Traffic
behind NAT (a published port) shows the host's or the NAT's address, not the container's.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from igrun.core.containers.collection import Container, ContainerCollection


def _ipv4_local(text: str) -> set[str]:
    """The ``/32 host LOCAL`` entries of a ``fib_trie`` file: the namespace's own addresses."""
    found: set[str] = set()
    last = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|--"):
            last = stripped[3:].strip()
        elif stripped.startswith("/32 host LOCAL") and last:
            found.add(last)
    return found


def _ipv6_local(text: str) -> set[str]:
    """The addresses of an ``if_inet6`` file (32 hex digits first on each line)."""
    found: set[str] = set()
    for line in text.splitlines():
        hexa = line.split(maxsplit=1)[0] if line.strip() else ""
        if len(hexa) == 32:
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(hexa))))
    return found


def _wanted(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def namespace_addresses(pid: int) -> set[str]:
    """The IPv4 and IPv6 addresses of the network namespace of process ``pid`` (without
    loopback and link-local ones); empty when they cannot be read."""
    found: set[str] = set()
    for name, parse in (("fib_trie", _ipv4_local), ("if_inet6", _ipv6_local)):
        try:
            found |= parse(Path(f"/proc/{pid}/net/{name}").read_text())
        except (OSError, ValueError):
            continue
    return {a for a in found if _wanted(a)}


RETRY_SECONDS = 1.0


class ContainerAddresses:
    """IP address (as text, like the ``dst.addr`` column) -> the container that has it,
    kept up to date from a :class:`ContainerCollection`. ``host_netns`` is the namespace
    whose containers are skipped (they share the host's addresses)."""

    def __init__(self, collection: ContainerCollection, host_netns: int = 0) -> None:
        self.collection = collection
        self.host_netns = host_netns
        self._lock = threading.Lock()
        self._by_addr: dict[str, Container] = {}
        self._of: dict[str, set[str]] = {}
        self._empty: dict[str, Container] = {}
        """Containers with no address yet: read again on a miss."""
        self._retry_at = 0.0
        collection.subscribe(self._changed)

    def _changed(self, kind: str, c: Container) -> None:
        if kind == "removed":
            with self._lock:
                self._empty.pop(c.id, None)
                for addr in self._of.pop(c.id, set()):
                    if self._by_addr.get(addr) is not None and self._by_addr[addr].id == c.id:
                        del self._by_addr[addr]
            return
        if not c.netns or c.netns == self.host_netns:
            return
        self._read(c)

    def _read(self, c: Container, retry: bool = False) -> None:
        addrs = namespace_addresses(c.pid)
        with self._lock:
            if retry and c.id not in self._empty:
                return  # removed while it was read again
            self._of[c.id] = addrs
            if addrs:
                self._empty.pop(c.id, None)
            else:
                self._empty[c.id] = c
            for addr in addrs:
                self._by_addr[addr] = c

    def _retry(self) -> None:
        """Read again the containers that had no address, at most once a second."""
        now = time.monotonic()
        with self._lock:
            if not self._empty or now < self._retry_at:
                return
            self._retry_at = now + RETRY_SECONDS
            waiting = list(self._empty.values())
        for c in waiting:
            self._read(c, retry=True)

    def get(self, addr: str) -> Container | None:
        return self.lookup([addr])[0]

    def lookup(self, addrs: Iterable[str]) -> list[Container | None]:
        wanted = list(addrs)
        with self._lock:
            found = [self._by_addr.get(a) for a in wanted]
        if None in found and self._empty:
            self._retry()
            with self._lock:
                found = [self._by_addr.get(a) for a in wanted]
        return found

    def addresses(self, c: Container) -> set[str]:
        """The addresses read for ``c`` (empty if none or not known)."""
        with self._lock:
            return set(self._of.get(c.id, set()))

    def close(self) -> None:
        self.collection.unsubscribe(self._changed)
