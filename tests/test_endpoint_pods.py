"""Endpoints' Kubernetes keys (``src.namespace``, ``src.podname``, ``src.kind``, the same for
``dst``): the pod whose container has the address, as ``ig``'s Kubernetes IP resolver
writes them, and nothing for an address of no pod, as the local ``ig`` writes nothing."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from containerlab import Running, runc_container, stop_and_read

if TYPE_CHECKING:
    from conftest import IgrunCli

POD = {"namespace": "prod", "podname": "web-1", "kind": "pod"}
POD_PORT = 8080


@pytest.fixture
def pod(rootfs: Path, tmp_path: Path) -> Iterator[tuple[Running, str, str]]:
    """A runc container of pod ``prod/web-1`` with an address of its own (``10.233.N.2``,
    on a veth pair whose host end is ``10.233.N.1``): (container, host address, pod's)."""
    annotations = {
        "io.kubernetes.pod.namespace": "prod",
        "io.kubernetes.pod.name": "web-1",
        "io.kubernetes.container.name": "web",
    }
    suffix = uuid.uuid4().hex[:6]
    net = 2 + int(suffix[:2], 16) % 250  # another run's pair is most likely elsewhere
    host_if, pod_if = f"igeh{suffix}", f"igep{suffix}"
    host_addr, pod_addr = f"10.233.{net}.1", f"10.233.{net}.2"
    with runc_container(rootfs, tmp_path / "bundle", annotations) as running:
        inside = ["nsenter", "-t", str(running.pid), "-n"]
        commands = [
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", pod_if],
            ["ip", "link", "set", pod_if, "netns", str(running.pid)],
            ["ip", "addr", "add", f"{host_addr}/24", "dev", host_if],
            ["ip", "link", "set", host_if, "up"],
            [*inside, "ip", "addr", "add", f"{pod_addr}/24", "dev", pod_if],
            [*inside, "ip", "link", "set", pod_if, "up"],
            [*inside, "ip", "link", "set", "lo", "up"],
        ]
        try:
            for cmd in commands:
                subprocess.run(cmd, check=True, capture_output=True)
            yield running, host_addr, pod_addr
        finally:
            subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def connect(addr: str, port: int) -> None:
    """A TCP connection to ``addr:port``, tried until it is accepted (the listener may be
    starting)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((addr, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_tcpconnect_names_the_pod_of_each_end(
    igrun_cli: IgrunCli, pod: tuple[Running, str, str]
) -> None:
    running, host_addr, pod_addr = pod
    listener = socket.create_server((host_addr, 0))
    port = listener.getsockname()[1]
    # Accept and close at once: the pod's nc ends when the host closes.
    threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True).start()
    server = subprocess.Popen(
        ["runc", "exec", running.id, "nc", "-l", "-p", str(POD_PORT)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    proc = igrun_cli.start("trace", "tcpconnect", "--host", "-r", "runc", "-o", "json")
    try:
        subprocess.run(
            ["runc", "exec", running.id, "nc", "-w", "1", host_addr, str(port)],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=20, check=True,
        )  # fmt: skip
        connect(pod_addr, POD_PORT)
        time.sleep(0.5)  # the last batch drains
    finally:
        events = stop_and_read(igrun_cli, proc)
        server.kill()
        server.wait()
        listener.close()
    outgoing = [e for e in events if e["dst"] == {"addr": host_addr, "version": 4, "port": port}]
    (out,) = outgoing  # the pod's process to the host: its own end is its pod
    assert out["comm"] == "nc" and out["k8s"]["podName"] == "web-1"
    assert out["src"] == {"addr": pod_addr, "version": 4, **POD, "port": out["src"]["port"]}
    assert list(out["src"]) == ["addr", "version", "namespace", "podname", "kind", "port"]
    incoming = [e for e in events if e["dst"]["addr"] == pod_addr]
    assert incoming, events  # a host process to the pod: the far end is the pod
    for e in incoming:
        assert e["dst"] == {"addr": pod_addr, "version": 4, **POD, "port": POD_PORT}
        assert e["src"] == {"addr": host_addr, "version": 4, "port": e["src"]["port"]}
        assert e["runtime"] == {}  # the host's python
