"""Kubernetes selectors for real: podman containers that carry a pod's CRI metadata (as the
kubelet's do), selected by namespace, pod name and pod labels in the kernel's mount-ns
filter, locally (``--k8s-namespace``...), through agents (``igrun --remote``, the Python
fan-out API) and through ``kubectl igrun -n/-A/-p/-l``.

podman keeps ``--label`` in its own database, out of igrun's reach; ``--annotation`` goes
into the container's OCI spec, where CRI-O puts a pod's metadata too: the stand-in for a
kubelet-made container.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import IMAGE, stop_and_read, unique
from test_agent import (  # noqa: F401 (fixtures)
    KUBECTL_IGRUN,
    Certs,
    Start,
    _pod,
    _settle,
    agents,
    api_server,
    certs,
    write_kubeconfig,
)
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core.bpf.objects import Map
from igrun.core.remote import fan_out
from igrun.core.remote.client import RemoteRun
from igrun.core.remote.kube import k8s_selection
from igrun.testing import IgrunCli, pins_of

if TYPE_CHECKING:
    from conftest import IgrunCli as TestCli

pytestmark = pytest.mark.bpf


@dataclass
class PodContainer:
    name: str
    namespace: str
    pod: str
    mntns: int


def pod_container(
    podman: Podman,  # noqa: F811
    namespace: str,
    pod: str,
    labels: dict[str, str],
) -> PodContainer:
    """A podman container with the CRI metadata the kubelet gives a pod's container."""
    name = unique("igrun-k8s")
    podman.names.append(name)
    meta = {
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.container.name": "main",
        **labels,
    }
    flags = [a for k, v in meta.items() for a in ("--annotation", f"{k}={v}")]
    podman("run", "-d", "--pull=never", "--network", "none", "--name", name, *flags,
           IMAGE, "sh", "-c", "while true; do sleep 1; done")  # fmt: skip
    pid = int(podman("inspect", "-f", "{{.State.Pid}}", name))
    return PodContainer(name, namespace, pod, os.stat(f"/proc/{pid}/ns/mnt").st_ino)


def exec_sleep(podman: Podman, c: PodContainer) -> tuple[str, int]:  # noqa: F811
    """Start ``sleep N`` (N unique) in ``c``; its argument and its pid on the host."""
    seconds = str(random.randrange(10**6, 10**7))
    podman("exec", "-d", c.name, "/bin/sleep", seconds)
    want = f"/bin/sleep\0{seconds}\0".encode()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "cmdline").read_bytes() == want:
                    return seconds, int(entry.name)
            except OSError:
                continue
        time.sleep(0.05)
    raise AssertionError(f"no sleep {seconds} in {c.name}")


def slept(events: list[dict[str, Any]]) -> dict[str, tuple[int, str, str, str]]:
    """``sleep N`` events by N: (pid, comm, namespace, pod)."""
    return {
        e["args"][1]: (e["pid"], e["comm"], e["k8s"].get("namespace"), e["k8s"].get("podName"))
        for e in events
        if e.get("args", [None])[0] == "/bin/sleep" and len(e["args"]) == 2
    }


def filter_keys(pins: Path) -> set[int]:
    filter_map = Map.from_pin(pins / "gadget_mntns_filter_map")
    try:
        return {struct.unpack("<Q", k)[0] for k in filter_map.keys()}  # noqa: SIM118
    finally:
        filter_map.close()


@pytest.mark.parametrize("by", ["--k8s-namespace", "--k8s-podname", "--k8s-selector"])
def test_pods_are_selected_in_the_kernel_now_and_later(
    igrun_cli: TestCli,
    podman: Podman,  # noqa: F811
    by: str,
) -> None:
    shop, other = unique("shop"), unique("other")
    cart = pod_container(podman, shop, "cart", {"app": "cart", "tier": "web"})
    web = pod_container(podman, other, "web", {"app": "web", "tier": "web"})
    value = {"--k8s-namespace": shop, "--k8s-podname": "cart", "--k8s-selector": "app=cart"}[by]
    proc = igrun_cli.start("trace", "exec", "-o", "json", by, value)
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    assert filter_keys(pins) == {cart.mntns}
    in_cart, in_web = exec_sleep(podman, cart), exec_sleep(podman, web)
    # Containers that start after the gadget: one of the selected pod's, one not.
    late = pod_container(podman, shop, "cart", {"app": "cart"})
    late_other = pod_container(podman, other, "web", {"app": "web"})
    _settle(lambda: late.mntns in filter_keys(pins), "the late container in the filter")
    assert filter_keys(pins) == {cart.mntns, late.mntns}
    in_late, in_late_other = exec_sleep(podman, late), exec_sleep(podman, late_other)
    events = stop_and_read(igrun_cli, proc)
    assert slept(events) == {
        in_cart[0]: (in_cart[1], "sleep", shop, "cart"),
        in_late[0]: (in_late[1], "sleep", shop, "cart"),
    }
    assert {e["k8s"]["namespace"] for e in events} == {shop}
    assert in_web[0] not in slept(events) and in_late_other[0] not in slept(events)


def test_selectors_combine_with_each_other_and_with_c(
    igrun_cli: TestCli,
    podman: Podman,  # noqa: F811
) -> None:
    """Every criterion must hold: the namespace and the labels, and ``-c``'s name."""
    shop = unique("shop")
    cart = pod_container(podman, shop, "cart", {"app": "cart", "tier": "web"})
    db = pod_container(podman, shop, "db", {"app": "db", "tier": "web"})
    proc = igrun_cli.start(
        "trace", "exec", "-o", "json", "--k8s-namespace", shop, "--k8s-selector", "tier=web"
    )
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    assert filter_keys(pins) == {cart.mntns, db.mntns}
    proc.stop()
    proc = igrun_cli.start(
        "trace", "exec", "-o", "json", "--k8s-selector", "tier=web,app=db", "-c", db.name
    )
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    assert filter_keys(pins) == {db.mntns}
    proc.stop()
    proc = igrun_cli.start("trace", "exec", "-o", "json", "--k8s-podname", "db", "-c", cart.name)
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    assert filter_keys(pins) == set()
    proc.stop()


@pytest.mark.parametrize("value", ["=x", "app", "a=b=c", "app=cart,"])
def test_a_bad_label_selector_is_one_line(igrun_cli: TestCli, value: str) -> None:
    local = igrun_cli.run("trace", "exec", "--k8s-selector", value)
    kubectl = IgrunCli(command=KUBECTL_IGRUN).run("trace", "exec", "-l", value)
    for run, prog, flag in ((local, "igrun", "--k8s-selector"), (kubectl, "kubectl igrun", "")):
        assert run.returncode == 2, run.stderr
        assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"{prog}: error: ")
        assert flag in run.stderr and run.stdout == ""


def test_the_selection_reaches_every_agent_of_a_static_list(
    igrun_cli: TestCli,
    agents: Start,  # noqa: F811
    certs: Certs,  # noqa: F811
    podman: Podman,  # noqa: F811
) -> None:
    """``igrun --remote A,B --k8s-namespace shop`` and the Python API's ``fan_out`` with
    :func:`k8s_selection`: each agent selects in its kernel, only shop's events come back,
    once from each node."""
    shop, other = unique("shop"), unique("other")
    cart = pod_container(podman, shop, "cart", {"app": "cart"})
    web = pod_container(podman, other, "web", {"app": "web"})
    nodes = [agents(), agents(tcp=True)]
    addresses = [a.address for a in nodes]
    client = igrun_cli.start("--remote", ",".join(addresses), *certs.flags("client"),
                             "trace", "exec", "-o", "json", "--k8s-namespace", shop)  # fmt: skip
    in_cart, in_web = exec_sleep(podman, cart), exec_sleep(podman, web)
    time.sleep(0.5)
    out, err = client.stop(signal.SIGINT)
    assert client.returncode == 0, err
    events = IgrunCli.events(out)
    assert sorted(
        (e["k8s"]["node"], e["pid"]) for e in events if e["args"] == ["/bin/sleep", in_cart[0]]
    ) == sorted((a.node, in_cart[1]) for a in nodes)
    assert {e["k8s"]["namespace"] for e in events} == {shop}
    assert not [e for e in events if in_web[0] in e["args"]]

    ready = threading.Event()
    runs: list[RemoteRun] = []
    chunks: list[bytes] = []

    class Sink:
        def write(self, b: bytes) -> None:
            chunks.append(bytes(b))

        def flush(self) -> None:
            pass

    def on_ready(started: list[RemoteRun]) -> None:
        runs.extend(started)
        ready.set()

    params = {**k8s_selection(None, labels={"app": "cart"}), "operator.output.output": "json"}
    thread = threading.Thread(
        target=fan_out,
        args=(addresses, "trace exec", params),
        kwargs={"tls": certs.tls("client"), "out": Sink(), "on_ready": on_ready},
    )
    thread.start()
    assert ready.wait(30)
    in_cart, in_web = exec_sleep(podman, cart), exec_sleep(podman, web)
    time.sleep(0.5)
    for run in runs:
        assert run.stop()
    thread.join(15)
    assert not thread.is_alive()
    events = IgrunCli.events(b"".join(chunks).decode())
    assert sorted(
        (e["k8s"]["node"], e["pid"]) for e in events if e["args"] == ["/bin/sleep", in_cart[0]]
    ) == sorted((a.node, in_cart[1]) for a in nodes)
    assert not [e for e in events if in_web[0] in e["args"]]
    for a in nodes:
        _settle(lambda a=a: pins_of(a.run.pid) == [], f"nothing pinned by {a.node}")


def test_kubectl_igrun_namespace_defaults_to_the_context_s(
    api_server: tuple[Path, list[dict[str, Any]], list[str]],  # noqa: F811
    agents: Start,  # noqa: F811
    certs: Certs,  # noqa: F811
    podman: Podman,  # noqa: F811
) -> None:
    """``kubectl igrun trace exec``: the context's namespace; ``-n``: that one; ``-A``: all;
    ``-p`` and ``-l`` narrow it, as ``kubectl gadget``'s."""
    config, pods, _ = api_server
    shop, other = unique("shop"), unique("other")
    text = config.read_text()
    config.write_text(text.replace("user: me}", f"user: me, namespace: {shop}}}"))
    cart = pod_container(podman, shop, "cart", {"app": "cart"})
    web = pod_container(podman, other, "web", {"app": "web"})
    agent = agents(tcp=True)
    port = agent.address.rpartition(":")[2]
    pods.append(_pod("igrun-x", agent.node, "127.0.0.1"))
    cli = IgrunCli(command=KUBECTL_IGRUN)
    base = ["--kubeconfig", str(config), "--agent-port", port, *certs.flags("client")]
    cases: list[tuple[list[str], set[str]]] = [
        (["trace", "exec", "-o", "json"], {shop}),
        (["-n", other, "trace", "exec", "-o", "json"], {other}),
        (["trace", "exec", "-o", "json", "-A"], {shop, other}),
        (["trace", "exec", "-o", "json", "-A", "-l", "app=web"], {other}),
        (["trace", "exec", "-o", "json", "-p", "web"], set()),  # web is not in shop
        (["trace", "exec", "-o", "json", "-A", "-p", "web", "-c", "main"], {other}),
        (["trace", "exec", "-o", "json", "-A", "--containername=other"], set()),
    ]
    for args, namespaces in cases:
        run = cli.start(*base, *args)
        in_cart, in_web = exec_sleep(podman, cart), exec_sleep(podman, web)
        time.sleep(0.5)
        out, err = run.stop()
        assert run.returncode == 0, err
        got = slept(IgrunCli.events(out))
        want = {}
        if shop in namespaces:
            want[in_cart[0]] = (in_cart[1], "sleep", shop, "cart")
        if other in namespaces:
            want[in_web[0]] = (in_web[1], "sleep", other, "web")
        assert {k: v for k, v in got.items() if k in (in_cart[0], in_web[0])} == want, args
        _settle(lambda: pins_of(agent.run.pid) == [], "nothing pinned")


@pytest.fixture
def pod_api(tmp_path: Path) -> Iterator[tuple[Path, dict[str, dict[str, str]], list[str]]]:
    """An API server answering ``GET /api/v1/namespaces/NS/pods/NAME`` with the labels set
    in the dict it yields (404 for other pods); its kubeconfig, the dict, the paths asked."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    labels: dict[str, dict[str, str]] = {}
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            parts = self.path.split("/")  # '', api, v1, namespaces, NS, pods, NAME
            key = f"{parts[4]}/{parts[6]}" if len(parts) == 7 else ""
            if self.headers.get("Authorization") != "Bearer t0ken" or key not in labels:
                self.send_response(404 if key else 401)
                self.end_headers()
                return
            pod = {"kind": "Pod", "metadata": {"name": parts[6], "labels": labels[key]}}
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(pod).encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "kubeconfig"
    write_kubeconfig(config, server.server_port, "t0ken")
    yield config, labels, asked
    server.shutdown()


def test_pod_labels_come_from_the_api_server_when_there_is_one(
    igrun_cli: TestCli,
    podman: Podman,  # noqa: F811
    pod_api: tuple[Path, dict[str, dict[str, str]], list[str]],
) -> None:
    """With ``$KUBECONFIG`` set, ``--k8s-selector`` matches the labels the API server gives
    the pod, not the runtime's; a pod it does not know falls back to the runtime's; an API
    server out of reach is one warning, and the runtime's labels again."""
    config, labels, asked = pod_api
    shop = unique("shop")
    cart = pod_container(podman, shop, "cart", {"app": "cart"})
    web = pod_container(podman, shop, "web", {"app": "web"})
    ghost = pod_container(podman, shop, "ghost", {"team": "a"})  # unknown to the API
    labels[f"{shop}/cart"] = {"team": "b"}
    labels[f"{shop}/web"] = {"team": "a", "app": "web"}
    env = {**os.environ, "KUBECONFIG": str(config)}
    proc = igrun_cli.start("trace", "exec", "-o", "json", "--k8s-selector", "team=a", env=env)
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    assert filter_keys(pins) == {web.mntns, ghost.mntns}
    in_web, in_cart = exec_sleep(podman, web), exec_sleep(podman, cart)
    events = stop_and_read(igrun_cli, proc)
    assert {k: v for k, v in slept(events).items() if k in (in_web[0], in_cart[0])} == {
        in_web[0]: (in_web[1], "sleep", shop, "web")
    }
    for pod in ("cart", "web", "ghost"):
        assert f"/api/v1/namespaces/{shop}/pods/{pod}" in asked
    write_kubeconfig(config, _closed_port(), "t0ken")  # an API server out of reach
    proc = igrun_cli.start("trace", "exec", "-o", "json", "--k8s-selector", "app=cart", env=env)
    (pins,) = igrun_cli.pin_dirs_of(proc.pid)
    assert filter_keys(pins) == {cart.mntns}  # the runtime's labels
    _, err = proc.stop()
    assert err.count("pod_labels_unavailable") == 1


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_events_carry_their_pod_s_labels(
    igrun_cli: TestCli,
    podman: Podman,  # noqa: F811
    pod_api: tuple[Path, dict[str, dict[str, str]], list[str]],
) -> None:
    """``k8s.podLabels`` (the key and column ``labels`` later ``ig`` versions have; after
    v0.25's keys): the runtime's labels of the pod without an API server, the API server's
    with one; nothing for an event of no pod; ``k=v`` pairs in columns."""
    shop = unique("shop")
    cart = pod_container(podman, shop, "cart", {"app": "cart", "tier": "web"})
    proc = igrun_cli.start("trace", "exec", "-o", "json", "-c", cart.name)
    seconds, pid = exec_sleep(podman, cart)
    events = stop_and_read(igrun_cli, proc)
    (mine,) = [e for e in events if e["pid"] == pid]
    assert mine["args"] == ["/bin/sleep", seconds]
    assert mine["k8s"]["podLabels"] == {"app": "cart", "tier": "web"}
    assert list(mine["k8s"]) == ["node", "namespace", "podName", "containerName", "podLabels"]

    config, labels, _ = pod_api
    labels[f"{shop}/cart"] = {"app": "cart", "release": "v2"}
    env = {**os.environ, "KUBECONFIG": str(config)}
    proc = igrun_cli.start(
        "trace", "exec", "-c", cart.name, "-o", "columns=pid,k8s.labels", env=env
    )
    seconds, pid = exec_sleep(podman, cart)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [str(pid), "app=cart,release=v2"] in rows, out

    proc = igrun_cli.start("trace", "exec", "--host", "-o", "json")
    host = subprocess.Popen(["/bin/true"])
    host.wait()
    events = stop_and_read(igrun_cli, proc)
    (on_host,) = [e for e in events if e["pid"] == host.pid]
    assert on_host["k8s"] == {"node": on_host["k8s"]["node"]}  # no pod: no pod keys
