"""trace network and advise network-policy in the real kernel: podman containers and plain
processes in network namespaces of their own make known TCP and UDP flows, each of which must
show once, from the right process and container, with the right direction, peers and ports;
the advisor's manifests for a known pattern are exact and valid against Kubernetes' schema."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from containerlab import IMAGE, unique
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core.containers.addresses import _ipv4_local, namespace_addresses
from igrun.core.containers.collection import Container
from igrun.plugins.advise_network_policy import NAMESPACE_LABEL, Peer, Pod, manifests, pod_labels
from igrun.testing import IgrunCli as IgrunCliBase

if TYPE_CHECKING:
    from igrun.testing import CliRun, IgrunCli

COMM = Path(sys.executable).name[:15]

TCP_SERVER = """
    import socket, sys
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.listen()
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        c.sendall(b"hi")
        c.close()
"""

TCP_CLIENT = """
    import socket, sys
    host, port, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for _ in range(times):
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.connect((host, port))
        print(s.getsockname()[1], flush=True)
        s.recv(2)
        s.close()
"""

UDP_SERVER = """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(sys.argv[2])))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(512)
        s.sendto(data[:2] + b"\\x81\\x83" + data[4:], peer)  # a DNS NXDOMAIN answer
"""

UDP_CLIENT = """
    import socket, sys
    host, port, times = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    query = bytes.fromhex("12340100000100000000000001610474657374000001" "0001")
    for _ in range(times):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(query, (host, port))
        s.recvfrom(512)
        print(s.getsockname()[1], flush=True)
"""


@dataclass
class Nets:
    """Three network namespaces: ``a`` joined to ``b`` (``ip_a``, ``ip_b``) and to ``c``
    (``ip_a2``, ``ip_c``), on addresses no other test uses."""

    a: str
    b: str
    c: str
    ip_a: str
    ip_b: str
    ip_a2: str
    ip_c: str


@pytest.fixture
def nets() -> Iterator[Nets]:
    tag = os.urandom(3).hex()
    # 10.100-249.x: not podman's default 10.88/16, nor the 10.231.0/24 of netns_pair.
    first = random.choice([n for n in range(100, 250) if n != 231])
    second = random.randrange(0, 250)
    n = Nets(
        f"ign-a{tag}",
        f"ign-b{tag}",
        f"ign-c{tag}",
        f"10.{first}.{second}.1",
        f"10.{first}.{second}.2",
        f"10.{first}.{second + 1}.1",
        f"10.{first}.{second + 1}.2",
    )
    commands = [["ip", "netns", "add", ns] for ns in (n.a, n.b, n.c)]
    for left, right, ip_left, ip_right in ((n.a, n.b, n.ip_a, n.ip_b), (n.a, n.c, n.ip_a2, n.ip_c)):
        vl, vr = f"v{left[-6:]}{right[4]}", f"v{right[-6:]}{right[4]}x"
        commands += [
            ["ip", "link", "add", vl, "type", "veth", "peer", "name", vr],
            ["ip", "link", "set", vl, "netns", left],
            ["ip", "link", "set", vr, "netns", right],
            ["ip", "-n", left, "addr", "add", f"{ip_left}/24", "dev", vl],
            ["ip", "-n", right, "addr", "add", f"{ip_right}/24", "dev", vr],
            ["ip", "-n", left, "link", "set", vl, "up"],
            ["ip", "-n", right, "link", "set", vr, "up"],
        ]
    commands += [["ip", "-n", ns, "link", "set", "lo", "up"] for ns in (n.a, n.b, n.c)]
    try:
        for cmd in commands:
            subprocess.run(cmd, check=True, capture_output=True)
        yield n
    finally:
        for ns in (n.a, n.b, n.c):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class Procs:
    """Python processes run in a namespace (``ip netns exec`` execs them: same pid)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, ns: str, code: str, *args: object) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)]
            + [str(a) for a in args],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def server(self, ns: str, code: str, *args: object) -> subprocess.Popen[str]:
        proc = self.start(ns, code, *args)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    def client(self, ns: str, code: str, *args: object) -> tuple[int, list[int]]:
        """Run a client to its end: its pid and the local ports it printed."""
        proc = self.start(ns, code, *args)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0
        return proc.pid, [int(p) for p in out.split()]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.close()


def container(
    podman: Podman,  # noqa: F811
    name: str,
    netns: str,
    command: str,
    annotations: dict[str, str],
) -> int:
    """A podman container in network namespace ``netns`` running ``command``: its pid."""
    podman.names.append(name)
    notes = [f"--annotation={k}={v}" for k, v in annotations.items()]
    podman("run", "-d", "--pull=never", "--network", f"ns:/run/netns/{netns}", "--name", name,
           *notes, IMAGE, "sh", "-c", command)  # fmt: skip
    return int(podman("inspect", "-f", "{{.State.Pid}}", name))


def finish(run: CliRun) -> list[dict[str, Any]]:
    time.sleep(0.5)  # the last events drain
    out, err = run.stop()
    assert run.returncode == 0, err
    run.assert_released()
    return IgrunCliBase.events(out)


def of(events: list[dict[str, Any]], **want: Any) -> list[dict[str, Any]]:
    """The events with these values (``dst_addr`` for ``dst.addr``...)."""

    def value(e: dict[str, Any], key: str) -> Any:
        for part in key.split("__"):
            e = e.get(part, {}) if isinstance(e, dict) else {}
        return e if e != {} else None

    return [e for e in events if all(value(e, k) == v for k, v in want.items())]


def flow(e: dict[str, Any]) -> tuple[Any, ...]:
    return (e["pktType"], e["proto"], e["port"], e["src"]["addr"], e["dst"]["addr"])


pytestmark = pytest.mark.bpf


def test_container_flows_each_once_with_both_sides(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    nets: Nets,
    procs: Procs,
) -> None:
    """TCP and UDP, both directions, a container on one side and a host process on the other:
    every flow once, from its owner, with the container of each side."""
    name = unique("igrun-net-web")
    web_pid = container(podman, name, nets.b, "nc -ll -p 8080 -e /bin/echo hi", {"app": "web"})
    tcp_server = procs.server(nets.a, TCP_SERVER, nets.ip_a, 9090)
    udp_server = procs.server(nets.a, UDP_SERVER, nets.ip_a, 53)
    udp_server2 = procs.server(nets.a, UDP_SERVER, nets.ip_a2, 5353)
    run = igrun_cli.start("trace", "network", "--host", "-o", "json")
    tcp_client, tcp_ports = procs.client(nets.a, TCP_CLIENT, nets.ip_b, 8080, 2)
    for _ in range(2):
        podman("exec", name, "sh", "-c", f"nc {nets.ip_a} 9090 </dev/null")
        podman("exec", name, "nslookup", "a.test", nets.ip_a, check=False)
    udp_client, udp_ports = procs.client(nets.c, UDP_CLIENT, nets.ip_a2, 5353, 2)
    events = finish(run)
    mine = [e for e in events if e["dst"]["addr"] in (nets.ip_a, nets.ip_b, nets.ip_a2, nets.ip_c)]
    inside = {"containerName": name, "containerId": podman("inspect", "-f", "{{.Id}}", name),
              "runtimeName": "podman"}  # fmt: skip

    # A host process connects twice to the container's server: one flow each side.
    (out,) = of(mine, pid=tcp_client)
    assert flow(out) == ("OUTGOING", "TCP", 8080, nets.ip_a, nets.ip_b)
    assert (out["comm"], out["tid"], out["uid"], out["gid"]) == (COMM, tcp_client, 0, 0)
    assert out["src"]["port"] == tcp_ports[0] and out["dst"]["port"] == 8080
    assert out["dst"]["containerName"] == name and out["direction"] == "egress"
    assert out["runtime"] == {}  # a host process
    (inn,) = of(mine, pid=web_pid)
    assert flow(inn) == ("HOST", "TCP", 8080, nets.ip_b, nets.ip_a)
    assert inn["comm"] == "nc" and inn["src"]["port"] == 8080
    assert inn["dst"]["port"] in tcp_ports and inn["direction"] == "ingress"
    assert {k: inn["runtime"][k] for k in inside} == inside
    assert "containerName" not in inn["dst"]  # the peer is no container

    # The container connects out (two processes, one flow each) to a host server.
    clients = of(mine, comm="nc", pktType="OUTGOING")
    assert len(clients) == 2 and len({e["pid"] for e in clients}) == 2
    for e in clients:
        assert flow(e) == ("OUTGOING", "TCP", 9090, nets.ip_b, nets.ip_a)
        assert e["runtime"]["containerName"] == name and e["src"]["port"] != 0
    (accepted,) = of(mine, pid=tcp_server.pid)
    assert flow(accepted) == ("HOST", "TCP", 9090, nets.ip_a, nets.ip_b)
    assert accepted["dst"]["containerName"] == name

    # UDP out of the container (nslookup: a connected socket; its answers are no flow).
    lookups = of(mine, comm="nslookup")
    assert len(lookups) == 2 and len({e["pid"] for e in lookups}) == 2
    for e in lookups:
        assert flow(e) == ("OUTGOING", "UDP", 53, nets.ip_b, nets.ip_a)
        assert e["runtime"]["containerName"] == name
    (dns,) = of(mine, pid=udp_server.pid)  # two clients of one address: one flow
    assert flow(dns) == ("HOST", "UDP", 53, nets.ip_a, nets.ip_b)
    assert dns["dst"]["containerName"] == name

    # Unconnected UDP sockets: sendto() from two sockets (two ports, one flow), recvfrom()
    # on the server; neither the answers nor their receipt are flows.
    (sent,) = of(mine, pid=udp_client)
    assert flow(sent) == ("OUTGOING", "UDP", 5353, "0.0.0.0", nets.ip_a2)
    assert sent["src"]["port"] == udp_ports[0] and "containerName" not in sent["dst"]
    (got,) = of(mine, pid=udp_server2.pid)
    assert flow(got) == ("HOST", "UDP", 5353, nets.ip_a2, nets.ip_c)
    assert got["src"]["port"] == 5353 and got["dst"]["port"] in udp_ports


def test_new_container_from_its_first_connection_and_no_host_without_host(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    nets: Nets,
    procs: Procs,
) -> None:
    """A container started after the gadget: its init's very first connect is reported; host
    processes are not, without --host (as ig)."""
    server = procs.server(nets.a, TCP_SERVER, nets.ip_a, 9091)
    run = igrun_cli.start("trace", "network", "-o", "json")
    name = unique("igrun-net-new")
    # The container's first command connects, as soon as it starts.
    container(podman, name, nets.b, f"nc {nets.ip_a} 9091 </dev/null; sleep 100", {})
    time.sleep(1.5)  # podman run -d returned: its init connects at once
    events = finish(run)
    (first,) = of(events, runtime__containerName=name)
    assert flow(first) == ("OUTGOING", "TCP", 9091, nets.ip_b, nets.ip_a)
    assert first["comm"] == "nc" and first["pid"] > 0
    assert of(events, pid=server.pid) == []  # a host process: no --host


def test_ipv6_and_mapped_ipv4(igrun_cli: IgrunCli, procs: Procs, nets: Nets) -> None:
    """IPv6 flows carry IPv6 addresses; an IPv4-mapped peer of an IPv6 socket is IPv4."""
    subprocess.run(["ip", "-n", nets.c, "-6", "addr", "add", "::1/128", "dev", "lo"],
                   capture_output=True)  # fmt: skip
    server = procs.server(nets.c, TCP_SERVER, "::", 9092)
    run = igrun_cli.start("trace", "network", "--host", "-o", "json")
    v6, _ = procs.client(nets.c, TCP_CLIENT, "::1", 9092, 1)
    mapped, _ = procs.client(nets.c, TCP_CLIENT, "::ffff:127.0.0.1", 9092, 1)
    events = finish(run)
    (out6,) = of(events, pid=v6)
    assert flow(out6) == ("OUTGOING", "TCP", 9092, "::1", "::1")
    assert out6["dst"]["version"] == 6 and out6["src"]["version"] == 6
    (out4,) = of(events, pid=mapped)
    assert flow(out4) == ("OUTGOING", "TCP", 9092, "127.0.0.1", "127.0.0.1")
    assert out4["dst"]["version"] == 4
    accepted = of(events, pid=server.pid)
    assert sorted(e["dst"]["addr"] for e in accepted) == ["127.0.0.1", "::1"]
    assert all(e["pktType"] == "HOST" and e["port"] == 9092 for e in accepted)


# ---- advise network-policy ------------------------------------------------------------------


def test_advisor_manifests_exact_and_valid(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    nets: Nets,
    procs: Procs,
    tmp_path: Path,
) -> None:
    """A client container talks to a web container (TCP, a peer by labels) and to a DNS
    server outside any container (UDP, a peer by address), and a host process connects to
    the client (ingress by address): the two manifests say exactly that."""
    kv = pytest.importorskip("kubernetes_validate")
    web = unique("igrun-np-web")
    client = unique("igrun-np-client")
    container(podman, web, nets.b, "nc -ll -p 8080 -e /bin/echo hi", {"app": "web", "tier": "be"})
    container(podman, client, nets.a, "nc -ll -p 7070 -e /bin/echo hi", {"app": "client"})
    procs.server(nets.c, UDP_SERVER, nets.ip_c, 53)
    out = tmp_path / "policies.yaml"
    run = igrun_cli.start("advise", "network-policy", "-c", f"{web},{client}", "--output", str(out))
    for _ in range(2):
        podman("exec", client, "sh", "-c", f"nc {nets.ip_b} 8080 </dev/null")
        podman("exec", client, "nslookup", "a.test", nets.ip_c, check=False)
    procs.client(nets.c, TCP_CLIENT, nets.ip_a2, 7070, 1)
    time.sleep(0.5)
    stdout, err = run.stop()
    assert run.returncode == 0, err
    run.assert_released()
    assert stdout == ""
    docs = list(yaml.safe_load_all(out.read_text()))
    assert docs == [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"{client}-network"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "client"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"ports": [{"port": 7070, "protocol": "TCP"}],
                     "from": [{"ipBlock": {"cidr": f"{nets.ip_c}/32"}}]},
                ],
                "egress": [
                    {"ports": [{"port": 8080, "protocol": "TCP"}],
                     "to": [{"podSelector": {"matchLabels": {"app": "web", "tier": "be"}}}]},
                    {"ports": [{"port": 53, "protocol": "UDP"}],
                     "to": [{"ipBlock": {"cidr": f"{nets.ip_c}/32"}}]},
                ],
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"{web}-network"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web", "tier": "be"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {"ports": [{"port": 8080, "protocol": "TCP"}],
                     "from": [{"podSelector": {"matchLabels": {"app": "client"}}}]},
                ],
            },
        },
    ]  # fmt: skip
    for doc in docs:
        kv.validate(doc, kv.latest_version(), strict=True)


def test_advisor_to_stdout_and_bad_output(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """No traffic of the selected container: nothing printed; an unwritable --output is
    refused in one line before anything runs."""
    result = igrun_cli.run("advise", "network-policy", "-c", unique("igrun-none"), "-t", "1s")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    bad = igrun_cli.run("advise", "network-policy", "-o", str(tmp_path / "no" / "such.yaml"))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"igrun: error: --output: cannot write {tmp_path / 'no' / 'such.yaml'}: "
        "No such file or directory"
    )


def test_manifest_rules_and_namespaces() -> None:
    """Rules sorted by protocol then port; a peer in another namespace gets ig's
    namespaceSelector; IPv6 blocks are /128; runtime keys are no pod labels."""
    pod = Pod("shop", "prod", {"app": "shop"})
    pod.egress |= {
        ("UDP", 53, Peer((("k8s-app", "kube-dns"),), "kube-system")),
        ("TCP", 443, Peer(cidr="2001:db8::1/128")),
        ("TCP", 80, Peer((("app", "api"),), "prod")),
    }
    (doc,) = yaml.safe_load_all(manifests([pod]))
    assert doc["metadata"] == {"name": "shop-network", "namespace": "prod"}
    assert doc["spec"]["egress"] == [
        {"ports": [{"port": 80, "protocol": "TCP"}],
         "to": [{"podSelector": {"matchLabels": {"app": "api"}}}]},
        {"ports": [{"port": 443, "protocol": "TCP"}],
         "to": [{"ipBlock": {"cidr": "2001:db8::1/128"}}]},
        {"ports": [{"port": 53, "protocol": "UDP"}],
         "to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]},
    ]  # fmt: skip
    assert "ingress" not in doc["spec"]
    c = Container(
        "id", "web", "podman", 1,
        annotations={"io.podman.annotations.autoremove": "FALSE", "app": "web",
                     "org.opencontainers.image.stopSignal": "15", "pod-template-hash": "x"},
        labels={"io.kubernetes.pod.name": "web-1", "tier": "be"},
    )  # fmt: skip
    assert pod_labels(c) == {"app": "web", "tier": "be"}
    labels = '{"app":"web","pod-template-hash":"1"}'
    crio = Container("id", "web", "cri-o", 1, annotations={"io.kubernetes.cri-o.Labels": labels})
    assert pod_labels(crio) == {"app": "web"}


def test_container_addresses_from_fib_trie() -> None:
    """The local /32 entries of a fib_trie are a namespace's IPv4 addresses."""
    trie = textwrap.dedent("""\
        Main:
          +-- 0.0.0.0/0 3 0 5
             |-- 0.0.0.0
                /0 universe UNICAST
             +-- 10.88.0.0/16 2 0 2
                |-- 10.88.0.0
                   /16 link UNICAST
                |-- 10.88.0.5
                   /32 host LOCAL
          +-- 127.0.0.0/8 2 0 2
             |-- 127.0.0.1
                /32 host LOCAL
        """)
    assert _ipv4_local(trie) == {"10.88.0.5", "127.0.0.1"}
    assert "127.0.0.1" not in namespace_addresses(os.getpid())


def test_container_addresses_read_again_when_late(nets: Nets) -> None:
    """A container whose address comes after it was seen (a CNI hook, say) is found once it
    has one; a removed container is not."""
    from igrun.core.containers import addresses
    from igrun.core.containers.addresses import ContainerAddresses
    from igrun.core.containers.collection import ContainerCollection

    subprocess.run(["ip", "netns", "add", f"{nets.c}l"], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", f"{nets.c}l", "sleep", "30"])
    try:
        time.sleep(0.2)  # the exec into the namespace
        netns = os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino
        collection = ContainerCollection()
        late = Container("late-id", "late", "runc", sleeper.pid, netns=netns)
        collection.add(late)
        peers = ContainerAddresses(collection)
        addr = f"{nets.ip_c[: nets.ip_c.rindex('.')]}.9"
        assert peers.get(addr) is None and peers.addresses(late) == set()
        subprocess.run(["ip", "-n", f"{nets.c}l", "addr", "add", f"{addr}/32", "dev", "lo"],
                       check=True)  # fmt: skip
        subprocess.run(["ip", "-n", f"{nets.c}l", "link", "set", "lo", "up"], check=True)
        time.sleep(addresses.RETRY_SECONDS)
        found = peers.get(addr)
        assert found is not None and found.name == "late"
        collection.sync([])
        assert peers.get(addr) is None
        peers.close()
    finally:
        sleeper.kill()
        sleeper.wait()
        subprocess.run(["ip", "netns", "del", f"{nets.c}l"], capture_output=True)
