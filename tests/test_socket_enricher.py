"""The socket enricher in the real kernel: owners recorded by the cgroup hooks and by the
start-up iterators, forgotten at release, and nothing left attached after close."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess

import pytest

from igrun.core.containers.procfs import cgroup2_root
from igrun.plugins.socket_enricher import SocketEnricher

pytestmark = pytest.mark.bpf

SO_COOKIE = 57
OWNER = struct.Struct("<QIIII16s")


def cookie(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8)


def owner(enricher: SocketEnricher, sock: socket.socket) -> tuple[int, int, str] | None:
    value = enricher.sockets.lookup(cookie(sock))
    if value is None:
        return None
    mntns, pid, _tid, _uid, _gid, comm = OWNER.unpack(value[: OWNER.size])
    return pid, mntns, comm.split(b"\0")[0].decode()


def attached_to_root() -> set[str]:
    out = subprocess.run(
        ["bpftool", "-j", "cgroup", "show", str(cgroup2_root())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {p.get("name", "") for p in json.loads(out.stdout.strip() or "[]")}


def test_owners_of_new_and_existing_sockets() -> None:
    mntns = os.stat("/proc/self/ns/mnt").st_ino
    existing = socket.socket()
    cookie(existing)  # asked for before the start: the iterator records it by cookie
    before = attached_to_root()
    enricher = SocketEnricher()
    try:
        assert {"ig_sock_create", "ig_connect4", "ig_sock_release"} <= attached_to_root()
        assert owner(enricher, existing) == (os.getpid(), mntns, owner_comm())  # iterator
        fresh = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        key = cookie(fresh)
        assert owner(enricher, fresh) == (os.getpid(), mntns, owner_comm())  # sock_create
        fresh.close()
        assert enricher.sockets.lookup(key) is None  # sock_release forgot it
    finally:
        enricher.close()
        existing.close()
    assert attached_to_root() == before


def test_tcp_and_udp_sockets_get_cookies_at_start() -> None:
    """A listening TCP socket and a bound UDP socket that nobody asked a cookie of are given
    one by the TCP and UDP iterators, so the owner is keyed by that cookie."""
    mntns = os.stat("/proc/self/ns/mnt").st_ino
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    datagram = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    datagram.bind(("::1", 0))
    enricher = SocketEnricher()
    try:
        for sock in (listener, datagram):
            assert owner(enricher, sock) == (os.getpid(), mntns, owner_comm())
    finally:
        enricher.close()
        listener.close()
        datagram.close()


def test_sockets_without_a_cookie_are_keyed_by_address() -> None:
    """Sockets no iterator can give a cookie (here: not bound, so in no table) are recorded
    under their address, and releasing them deletes that key too, so a reused address never
    finds a stale owner."""
    mine = [socket.socket() for _ in range(3)]
    enricher = SocketEnricher()
    try:
        held = by_address(enricher)
        assert len(held) >= 3
        for sock in mine:
            sock.close()
        assert len(held) - len(by_address(enricher)) == 3
    finally:
        enricher.close()
        for sock in mine:
            sock.close()


def by_address(enricher: SocketEnricher) -> list[bytes]:
    """Keys above every cookie (kernel addresses) whose owner is this process."""
    keys = []
    for key, value in enricher.sockets.items():
        (number,) = struct.unpack("<Q", key)
        if number >= 1 << 63 and OWNER.unpack(value[: OWNER.size])[1] == os.getpid():
            keys.append(key)
    return keys


def owner_comm() -> str:
    with open(f"/proc/{os.getpid()}/task/{os.getpid()}/comm") as f:
        return f.read().strip()
