"""``snapshot socket``: the TCP and UDP sockets of each selected container (and of the host,
with ``--host``).

The ``iter/tcp`` and ``iter/udp`` iterators walk the sockets of one network namespace: the
one the reading thread is in when it opens them. So each snapshot reads them once per
network namespace of the selected containers, from a short-lived thread that has entered it
(``setns`` changes only the calling thread); containers sharing a namespace are read once.
Each record carries its socket's namespace id, and the containers operator names each row's
container by it.

As ``ig``'s: ``--proto all|tcp|udp``, the columns and JSON keys (``protocol``, ``src``,
``dst``, ``status``, ``inodeNumber``, ``netnsid``), the states (a UDP socket is ``ACTIVE``
when connected, else ``INACTIVE``) and the default sort.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    BpfObject,
    BpfSnapshot,
    Category,
    Column,
    Container,
    Field,
    GadgetContext,
    IgrunError,
    Kind,
    ParamDesc,
    Schema,
    hookimpl,
    run_in_netns,
)
from igrun.core.containers.netns import NetnsGone
from igrun.core.events.endpoints import l4_endpoint

PARAM_PROTO = "proto"
PROTOCOLS = {
    "all": ("ig_snap_tcp", "ig_snap_udp"),
    "tcp": ("ig_snap_tcp",),
    "udp": ("ig_snap_udp",),
}
"""``--proto``'s values and the iterators each reads."""

IPPROTO_TCP = 6
IPPROTO_UDP = 17
TCP_STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT",
              "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV")  # fmt: skip
"""The kernel's TCP states (``include/net/tcp_states.h``), by number, as ``ig`` names them."""
UDP_STATES = {1: "ACTIVE", 7: "INACTIVE"}
"""A UDP socket's state as ``ig`` names it: connected (TCP_ESTABLISHED) or not (TCP_CLOSE)."""


def _status_table() -> Any:
    """Names by ``16 * is_udp + state``: TCP's, then UDP's; anything else is empty."""
    table = np.full(32, "", dtype=object)
    table[: len(TCP_STATES)] = TCP_STATES
    for state, name in UDP_STATES.items():
        table[16 + state] = name
    return table


_STATUS = _status_table()


_PROTOCOLS = np.full(256, "", dtype=object)
_PROTOCOLS[IPPROTO_TCP], _PROTOCOLS[IPPROTO_UDP] = "TCP", "UDP"


def _protocol(batch: Batch) -> Any:
    return _PROTOCOLS[batch.member("proto")]


def _status(batch: Batch) -> Any:
    udp = (batch.member("proto") == IPPROTO_UDP).astype(np.intp)
    state = batch.member("state").astype(np.intp) & 15
    return _STATUS[udp * 16 + state]


_ENDPOINT_COLUMN = Column(min_width=22, width=40, max_width=52)


class SnapshotSocket(BpfSnapshot):
    name = "socket"
    category = Category.SNAPSHOT
    description = "Gather information about TCP and UDP sockets"
    bpf_object = "socket.bpf.o"
    params = (
        ParamDesc(
            PARAM_PROTO,
            default="all",
            description="show only sockets using this protocol",
            possible_values=tuple(PROTOCOLS),
        ),
    )
    param_defaults: ClassVar[Mapping[str, str]] = {"max-rows": "50"}
    """As ``ig``'s snapshots: at most 50 rows unless ``-m`` says otherwise (0: all)."""
    examples: ClassVar[tuple[str, ...]] = (
        "igrun snapshot socket --host",
        "igrun snapshot socket -c mycontainer --proto tcp",
        "igrun snapshot socket --host -o json -F status:LISTEN",
        "igrun snapshot socket --host --interval 5s -o columns=+inode",
    )
    schema = Schema(
        [
            Field(
                "netns",
                Kind.UINT,
                "network namespace id of the socket",
                member="netns_id",
                json="netnsid",
                column=Column(width=12, hidden=True, align="right"),
                omit_empty=True,
                tags=("netns",),
            ),
            Field(
                "protocol",
                Kind.STR,
                "TCP or UDP",
                decode=_protocol,
                column=Column(max_width=8),
            ),
            *l4_endpoint(
                "src",
                "conn.saddr",
                "conn.sport",
                "conn.ipversion",
                "local endpoint",
                _ENDPOINT_COLUMN,
            ),
            *l4_endpoint(
                "dst",
                "conn.daddr",
                "conn.dport",
                "conn.ipversion",
                "remote endpoint",
                _ENDPOINT_COLUMN,
            ),
            Field(
                "status",
                Kind.STR,
                "TCP state (LISTEN, ESTABLISHED, TIME_WAIT...); for UDP, ACTIVE when connected, "
                "else INACTIVE",
                decode=_status,
                column=Column(max_width=12),
            ),
            Field(
                "inode",
                Kind.UINT,
                "inode number of the socket's file (0 in TIME_WAIT and SYN_RECV, as in "
                "/proc/net/tcp)",
                member="inode",
                json="inodeNumber",
                column=Column(hidden=True, align="right"),
            ),
        ],
        struct="socket_entry",
    )

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._attached: dict[str, Container] = {}
        """By container id: the containers (and the host) whose sockets a snapshot shows."""

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return ["k8s.node", "k8s.namespace", "k8s.pod", "protocol", "status", "src", "dst",
                "inode"]  # fmt: skip

    def configure(self, ctx: GadgetContext, obj: BpfObject) -> None:
        wanted = PROTOCOLS[ctx.gadget_params.get(PARAM_PROTO) or "all"]
        for name, prog in obj.programs.items():
            prog.autoload = name in wanted

    # -- where to read: the network namespaces of the attached containers

    def attach_container(self, container: Container) -> None:
        if not container.netns:
            raise IgrunError(f"container {container.name}: its network namespace is unknown")
        with self._lock:
            self._attached[container.id] = container

    def detach_container(self, container: Container) -> None:
        with self._lock:
            self._attached.pop(container.id, None)

    def namespaces(self) -> dict[int, Container]:
        """Each network namespace to read, with one attached container that is in it."""
        with self._lock:
            attached = list(self._attached.values())
        places: dict[int, Container] = {}
        for container in attached:
            places.setdefault(container.netns, container)
        return places

    def take(self, ctx: GadgetContext) -> Batch:
        assert ctx.schema is not None and ctx.schema.dtype is not None
        parts = []
        for netns, container in self.namespaces().items():
            try:
                parts.append(run_in_netns(container.pid, netns, lambda: self.read(ctx)))
            except NetnsGone as exc:  # the container ended since the last scan
                ctx.logger.debug("netns_gone", container=container.name, netns=netns,
                                 error=str(exc))  # fmt: skip
        raw = np.concatenate(parts) if parts else np.zeros(0, dtype=ctx.schema.dtype)
        return self.transform(Batch(ctx.schema, raw))


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(SnapshotSocket)
