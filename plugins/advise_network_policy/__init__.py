"""``advise network-policy``: Kubernetes ``NetworkPolicy`` manifests that allow exactly the
traffic the selected containers had while igrun watched.

Inspektor Gadget's advisor has two steps: ``monitor`` records ``trace network`` events to a
file, and ``report`` turns the file into policies. Here one run does both: it runs
``trace network`` for the selected containers (``-c``; all containers by default) until
``-t/--timeout`` or Ctrl-C, then prints the manifests (``-o/--output FILE`` writes them to a
file instead), one YAML document per pod (or per container outside Kubernetes), sorted by
name. The rules follow ``ig``'s advisor:

- one rule per peer and port, each with one port and its protocol, ingress and egress,
  sorted by protocol, port, then peer;
- a peer that is a known container with labels is selected by its labels (``podSelector``,
  plus a ``namespaceSelector`` on ``kubernetes.io/metadata.name`` when it is in another
  namespace); any other peer by its address (``ipBlock`` ``/32`` or ``/128``);
- loopback traffic (inside the pod), traffic of host processes and of containers sharing
  the host's network, and ingress from the node's own addresses (which a policy cannot
  block) make no rule; a pod with no rule in a direction gets no rule list for it (nothing
  is allowed that way, as ``policyTypes`` lists both directions).

Labels: a Kubernetes pod's labels from CRI-O's ``io.kubernetes.cri-o.Labels`` annotation;
otherwise a container's own labels and annotations, without those its runtime sets
(``io.kubernetes.*``, ``io.podman.*``, ``org.opencontainers.*`` ...) — e.g. podman's
``--annotation app=web``. ``ig``'s ignored labels (``pod-template-hash`` ...) are left out.
Unlike ``ig``, a rule's peer key includes the protocol (TCP and UDP to one port are two
rules) and IPv6 peers get a ``/128`` block.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import yaml

from igrun.core import Category, GadgetContext, ParamDesc, hookimpl
from igrun.core.containers.addresses import namespace_addresses
from igrun.core.containers.collection import Container, ContainerCollection, SelectedContainers
from igrun.core.errors import ParamError
from igrun.core.events.schema import Batch
from igrun.core.gadget import Gadget
from igrun.operators.containers import attribute, host_netns
from igrun.plugins.trace_network import EGRESS, TraceNetwork

IGNORED_LABELS = frozenset(
    {"controller-revision-hash", "pod-template-generation", "pod-template-hash"}
)
"""Labels ``ig``'s advisor leaves out of selectors: they change with every rollout."""
RUNTIME_KEYS = (
    "io.kubernetes.",
    "io.podman.",
    "io.container.",
    "io.containerd.",
    "containerd.",
    "org.opencontainers.",
    "org.systemd.",
    "run.oci.",
    "com.docker.",
    "io.katacontainers.",
    "bundle",
)
"""Label and annotation keys (prefixes) a runtime sets for itself: not a pod's labels."""
CRIO_LABELS = "io.kubernetes.cri-o.Labels"
NAMESPACE_LABEL = "kubernetes.io/metadata.name"
POLL_MS = 100


def pod_labels(c: Container) -> dict[str, str]:
    """The labels a selector can match ``c``'s pod by (see the module's docstring)."""
    raw = c.annotations.get(CRIO_LABELS)
    if raw:
        try:
            found = {str(k): str(v) for k, v in json.loads(raw).items()}
        except (ValueError, AttributeError):
            found = {}
    else:
        found = {**c.annotations, **c.labels}
    return {
        k: v
        for k, v in sorted(found.items())
        if not k.startswith(RUNTIME_KEYS) and k not in IGNORED_LABELS
    }


@dataclass(frozen=True)
class Peer:
    """The other end of a flow: a container (by labels) or an address."""

    labels: tuple[tuple[str, str], ...] = ()
    namespace: str = ""
    cidr: str = ""

    def rule(self, own_namespace: str) -> dict[str, Any]:
        if self.cidr:
            return {"ipBlock": {"cidr": self.cidr}}
        peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(self.labels)}}
        if self.namespace != own_namespace:
            peer["namespaceSelector"] = {"matchLabels": {NAMESPACE_LABEL: self.namespace}}
        return peer


@dataclass
class Pod:
    """What one pod (or container) was seen doing."""

    name: str
    namespace: str
    labels: dict[str, str]
    ingress: set[tuple[str, int, Peer]] = field(default_factory=set)
    egress: set[tuple[str, int, Peer]] = field(default_factory=set)


def _cidr(addr: str) -> str:
    return f"{addr}/{128 if ':' in addr else 32}"


def _rules(seen: set[tuple[str, int, Peer]], side: str, namespace: str) -> list[dict[str, Any]]:
    rules = [
        {"ports": [{"port": port, "protocol": proto}], side: [peer.rule(namespace)]}
        for proto, port, peer in seen
    ]
    return sorted(
        rules,
        key=lambda r: (
            r["ports"][0]["protocol"],
            r["ports"][0]["port"],
            yaml.safe_dump(r[side], sort_keys=True),
        ),
    )


def policy(pod: Pod) -> dict[str, Any]:
    """One ``NetworkPolicy`` for ``pod``, as ``ig``'s advisor writes it."""
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": pod.labels} if pod.labels else {},
        "policyTypes": ["Ingress", "Egress"],
    }
    if pod.ingress:
        spec["ingress"] = _rules(pod.ingress, "from", pod.namespace)
    if pod.egress:
        spec["egress"] = _rules(pod.egress, "to", pod.namespace)
    metadata: dict[str, Any] = {"name": f"{pod.name}-network"}
    if pod.namespace:
        metadata["namespace"] = pod.namespace
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": spec,
    }


def manifests(pods: list[Pod]) -> str:
    """The policies as YAML documents separated by ``---``, sorted by name."""
    docs = sorted((policy(p) for p in pods), key=lambda d: str(d["metadata"]["name"]))
    return "---\n".join(yaml.safe_dump(d, sort_keys=True) for d in docs)


class Advisor:
    """Folds ``trace network`` batches into the :class:`Pod` records policies are made of."""

    def __init__(
        self,
        collection: ContainerCollection | None,
        host_addrs: set[str],
        peer_of: Callable[[str], Container | None] = lambda addr: None,
    ) -> None:
        self.collection = collection
        self.peer_of = peer_of
        self.host_addrs = host_addrs
        self.host_netns = host_netns()
        self.pods: dict[tuple[str, ...], Pod] = {}
        self.selected: SelectedContainers | None = None

    def _pod(self, c: Container) -> Pod:
        labels = pod_labels(c)
        name = c.k8s_pod or c.name
        key = (c.k8s_namespace, *(f"{k}={v}" for k, v in labels.items())) if labels else ("", name)
        pod = self.pods.get(key)
        if pod is None:
            pod = self.pods[key] = Pod(name, c.k8s_namespace, labels)
        return pod

    def _peer(self, addr: str, c: Container | None) -> Peer | None:
        ip = ipaddress.ip_address(addr)
        if ip.is_loopback or ip.is_unspecified:
            return None
        if c is not None:
            labels = pod_labels(c)
            if labels:
                return Peer(tuple(labels.items()), c.k8s_namespace)
        return Peer(cidr=_cidr(addr))

    def add(self, batch: Batch) -> None:
        if self.collection is None or not len(batch):
            return
        pool, owners = attribute(self.collection, batch["mntns"], batch.member("timestamp"), None)
        if not pool:
            return
        addrs = batch["dst.addr"]
        protos, ports = batch["proto"], batch["port"]
        egress = batch.member("pkt_type") == EGRESS
        for i in np.flatnonzero(owners >= 0).tolist():
            c = pool[int(owners[i])]
            if c.netns == self.host_netns:
                continue
            chosen = self.selected
            everything = chosen is None or chosen.selector.everything
            if chosen is not None and not everything and not chosen.selector.matches(c):
                continue  # --host with -c: the kernel kept every container's events
            addr = str(addrs[i])
            if not egress[i] and addr in self.host_addrs:
                continue  # from the node: a policy cannot block it
            peer = self._peer(addr, self.peer_of(addr))
            if peer is None:
                continue
            seen = (str(protos[i]), int(ports[i]), peer)
            pod = self._pod(c)
            (pod.egress if egress[i] else pod.ingress).add(seen)


class AdviseNetworkPolicy(Gadget):
    name = "network-policy"
    category = Category.ADVISE
    description = "Generate network policies based on recorded network activity"
    params = (
        ParamDesc(
            "output",
            alias="o",
            default="-",
            description="file to write the manifests to (- for stdout)",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun advise network-policy -c web -t 60s",
        "igrun advise network-policy -c web --output web-policy.yaml",
    )
    schema = TraceNetwork.schema

    def __init__(self) -> None:
        self.tracer = TraceNetwork()
        self.advisor: Advisor | None = None

    def init(self, ctx: GadgetContext) -> None:
        self.output = str(ctx.gadget_params.get("output") or "-")
        if self.output != "-":
            try:  # refused now, not after a long run
                with open(self.output, "a"):
                    pass
            except OSError as exc:
                raise ParamError(f"--output: cannot write {self.output}: {exc.strerror}") from None
        self.tracer.init(ctx)
        peers = self.tracer.peers
        self.advisor = Advisor(
            ctx.resources.get(ContainerCollection),
            namespace_addresses(1),
            peers.get if peers is not None else lambda addr: None,
        )
        self.advisor.selected = ctx.resources.get(SelectedContainers)

    def run_with_result(self, ctx: GadgetContext) -> bytes:
        tracer, advisor = self.tracer, self.advisor
        assert tracer.obj is not None and tracer.reader is not None and advisor is not None
        while not ctx.done:
            self._drain(ctx, POLL_MS)
        for link in list(tracer.obj.links):
            link.destroy()
        tracer.obj.links.clear()
        self._drain(ctx, 0)
        text = manifests(list(advisor.pods.values())).encode()
        if self.output == "-":
            return text
        with open(self.output, "wb") as out:
            out.write(text)
        return b""

    def _drain(self, ctx: GadgetContext, timeout_ms: int) -> None:
        tracer, advisor = self.tracer, self.advisor
        assert tracer.reader is not None and advisor is not None and ctx.schema is not None
        assert ctx.schema.dtype is not None
        timeout = int(ctx.remaining(timeout_ms / 1000) * 1000) if timeout_ms else 0
        raw = tracer.reader.records(timeout, ctx.schema.dtype)
        lost = tracer.reader.lost()
        if lost:
            ctx.report_lost(lost)
        if raw is not None:
            advisor.add(Batch(ctx.schema, raw))

    def close(self) -> None:
        self.tracer.close()


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(AdviseNetworkPolicy)
