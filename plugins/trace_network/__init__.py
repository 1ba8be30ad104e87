"""``trace network``: one event for each new network flow of each process, with the container
of each side when it is known.

A flow is a process, a direction (``pktType``: ``OUTGOING`` for egress, ``HOST`` for
ingress, as ``ig`` names them), a protocol (TCP or UDP), the peer's address and the service
port (``port``: the peer's for egress, the process's own for ingress, as in ``ig``). The first
sight of it sends one event; later connections, datagrams and replies of the same flow send
none (an LRU hash of seen flows in the kernel decides, per process).

``ig`` v0.25 runs a socket filter on a packet socket in every network namespace and reports
each TCP SYN and each UDP datagram to a port below 1024, then asks a kprobe-based socket
enricher who owns the socket. This gadget uses no kprobe and no packet socket: cgroup
``sock_addr`` programs attached at the cgroup v2 root (``connect4|6`` for TCP and connected
UDP, ``sendmsg4|6`` and ``recvmsg4|6`` for unconnected UDP) and the exit of ``accept`` and
``accept4`` (incoming TCP) all run in the task that owns the socket, so ``pid``, ``comm``,
``uid`` and the container are the owner's, for every namespace and for containers that start
later, from their first connection. It knows the direction from the hook, so it reports UDP
flows on every port, and it reports IPv6 as well (``ig``: IPv4 only); ``src`` (local end) and
``dst.port`` are its additions, as are ``direction`` and ``dst.containerName``.

The peer's container (``dst.containerName``, and ``dst.podname``, ``dst.namespace`` and
``dst.kind`` = ``pod`` for a Kubernetes pod) is found by address, from the addresses each
container's network namespace has (:mod:`igrun.core.containers.addresses`, which says what
that misses); the ``remote`` column shows ``p/<namespace>/<pod>`` for a pod,
``c/<container>`` for another known container, and the address otherwise.

What it misses: traffic no local process sends or receives (a host routing, forwarding or
NATing for others), raw and packet sockets, ICMP, SCTP; TCP connections that are never
accepted (still in the listen queue) and UDP datagrams read without asking for their source
address (``recv()`` on an unconnected socket). A connect or send made through io_uring has
no syscall exit: its event leaves late (at the same thread's next new flow), without its
local port, or not at all. A blocking connect that failed (refused) shows no local end, as
the kernel has cleared it. A UDP socket's local address
is the one it is bound to (``0.0.0.0`` when it is bound to none). A flow forgotten by the LRU
hash (over 65,536 flows) is reported again when seen again.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from igrun.core import Batch, Category, Column, Field, GadgetContext, Kind, Schema, fields, hookimpl
from igrun.core.containers.addresses import ContainerAddresses
from igrun.core.containers.collection import Container, ContainerCollection
from igrun.core.events.endpoints import l4_endpoint
from igrun.core.events.fields import process_fields
from igrun.core.tracer import BpfTracer
from igrun.operators.containers import host_netns

INGRESS, EGRESS = 0, 4
"""Packet types (linux/if_packet.h): PACKET_HOST, PACKET_OUTGOING."""
PROTOCOLS = {6: "TCP", 17: "UDP"}

PEER_FIELDS = ("dst.containerName", "dst.podname", "dst.namespace", "dst.kind")


def _pkt_types(batch: Batch) -> Any:
    kinds = batch.member("pkt_type")
    return np.where(kinds == EGRESS, "OUTGOING", "HOST").astype(object)


def _directions(batch: Batch) -> Any:
    kinds = batch.member("pkt_type")
    return np.where(kinds == EGRESS, "egress", "ingress").astype(object)


def _protocols(batch: Batch) -> Any:
    return fields.per_distinct(
        batch.member("proto"), lambda p: PROTOCOLS.get(int(p), f"UNKNOWN#{int(p)}")
    )


def _empty(batch: Batch) -> Any:
    return np.full(len(batch), "", dtype=object)


def _remote(batch: Batch) -> Any:
    """``ig``'s ``remote`` column: ``p/<namespace>/<pod>`` for a pod, the address otherwise
    (``[addr]`` for IPv6); igrun shows ``c/<name>`` for a known container of no pod."""
    addrs = batch["dst.addr"].astype(str)
    v6 = batch["dst.version"] == 6
    out = np.where(v6, "[" + addrs.astype(object) + "]", addrs.astype(object)).astype(object)
    names = batch["dst.containerName"]
    pods = batch["dst.podname"]
    if len(out) and bool((names != "").any()):
        container = names != ""
        out[container] = "c/" + names[container]
        pod = pods != ""
        out[pod] = "p/" + batch["dst.namespace"][pod] + "/" + pods[pod]
    return out


def _peer_field(name: str, description: str) -> Field:
    return Field(
        name, Kind.STR, description, decode=_empty, column=Column(hidden=True), omit_empty=True
    )


class TraceNetwork(BpfTracer):
    name = "network"
    category = Category.TRACE
    description = "Trace network streams"
    bpf_object = "network.bpf.o"
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace network",
        "igrun trace network -c web -o json",
        "igrun trace network --host -F pktType:OUTGOING",
        "igrun trace network -o columns=+src,+dst.containerName",
    )
    schema = Schema(
        [
            fields.timestamp("when the flow was first seen"),
            *process_fields(
                "mntns pid tid comm uid gid",
                about="of the socket's owner",
                uid={"column": Column(hidden=True, align="right")},
                gid={"column": Column(hidden=True, align="right")},
            ),
            Field(
                "netns",
                Kind.UINT,
                "network namespace id of the socket",
                member="netns_id",
                json="netnsid",
                column=Column(width=12, hidden=True, align="right"),
                omit_empty=True,
            ),
            Field(
                "type",
                Kind.STR,
                "OUTGOING (egress: the process sent first) or HOST (ingress)",
                json="pktType",
                decode=_pkt_types,
                column=Column(width=9, max_width=9),
                omit_empty=True,
            ),
            Field(
                "direction",
                Kind.STR,
                "egress or ingress (the same as type)",
                decode=_directions,
                column=Column(width=7, hidden=True),
                omit_empty=True,
            ),
            Field(
                "proto",
                Kind.STR,
                "protocol: TCP or UDP",
                decode=_protocols,
                column=Column(width=5, max_width=5),
                omit_empty=True,
            ),
            Field(
                "port",
                Kind.UINT,
                "service port: the peer's for egress, the process's own for ingress",
                column=Column(width=5, min_width=5, align="right"),
                omit_empty=True,
            ),
            *l4_endpoint(
                "src",
                "conn.saddr",
                "conn.sport",
                "conn.ipversion",
                "local end",
                column=Column(width=24, hidden=True),
            ),
            *l4_endpoint(
                "dst",
                "conn.daddr",
                "conn.dport",
                "conn.ipversion",
                "remote end",
                column=Column(width=24, hidden=True),
            ),
            _peer_field("dst.containerName", "container that has the remote address"),
            Field(
                "remote",
                Kind.STR,
                "remote end: p/<namespace>/<pod>, c/<container> or its address",
                json="-",
                decode=_remote,
                column=Column(width=32, min_width=21, order=1000),
            ),
        ],
        struct="event",
    )

    def __init__(self) -> None:
        super().__init__()
        self.peers: ContainerAddresses | None = None

    def init(self, ctx: GadgetContext) -> None:
        from igrun.core.containers.procfs import cgroup2_root
        from igrun.core.errors import EnvironmentProblem

        root = cgroup2_root()
        if root is None:
            raise EnvironmentProblem("trace network needs a cgroup v2 hierarchy (none is mounted)")
        collection = ctx.resources.get(ContainerCollection)
        if collection is not None:
            self.peers = ContainerAddresses(collection, host_netns())
        super().init(ctx)
        assert self.obj is not None
        try:
            for prog in self.obj.programs.values():
                if prog.is_cgroup:
                    self.obj.keep(prog.attach_cgroup(root))
        except BaseException:
            self.close()
            raise

    def transform(self, batch: Batch) -> Batch:
        """The peer's container, found by the remote address (few distinct ones a batch)."""
        if self.peers is None or not len(batch):
            return batch
        unique, inverse = np.unique(batch["dst.addr"].astype(str), return_inverse=True)
        found = self.peers.lookup(unique.tolist())
        pool: list[Container] = []
        codes = np.full(len(unique), -1, dtype=np.int64)
        for i, c in enumerate(found):
            if c is not None:
                codes[i] = len(pool)
                pool.append(c)
        if not pool:
            return batch
        batch.set_coded_group(peer_tables(pool), codes[inverse.reshape(-1)])
        return batch

    def close(self) -> None:
        if self.peers is not None:
            self.peers.close()
            self.peers = None
        super().close()


def peer_tables(pool: list[Container]) -> dict[str, Any]:
    """The peer fields of each container of ``pool``, the last row being "none"."""
    values = {
        "dst.containerName": [c.name for c in pool],
        "dst.podname": [c.k8s_pod for c in pool],
        "dst.namespace": [c.k8s_namespace for c in pool],
        "dst.kind": ["pod" if c.k8s_pod else "" for c in pool],
    }
    tables = {}
    for name, column in values.items():
        table = np.empty(len(column) + 1, dtype=object)
        table[:] = [*column, ""]
        tables[name] = table
    return tables


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceNetwork)
