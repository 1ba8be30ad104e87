"""``trace netnssyn``: TCP SYNs to a port, as they enter each container's network namespace.

A third-party igrun gadget that attaches to each container (``ContainerAttacher``): for every
selected container, present when the run starts or started later, it loads one copy of its
BPF object (``netnssyn.bpf.c``) whose constant ``netns`` tags the events, and attaches the
copy's socket filter to a raw packet socket made inside the container's network namespace.
When the container goes (or the run ends) the socket and the copy are closed: nothing stays.
It uses igrun's public API only (``igrun.core``).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from igrun.core import (
    Batch,
    BpfTracer,
    Category,
    Column,
    Container,
    Field,
    GadgetContext,
    Kind,
    ParamDesc,
    Schema,
    TypeHint,
    fields,
    hookimpl,
    socket_in_netns,
)


def ipv4_texts(batch: Batch, member: str) -> Any:
    # The address as the packet holds it (network order), decoded once per distinct value.
    return fields.per_distinct(
        batch.member(member), lambda v: socket.inet_ntoa(int(v).to_bytes(4, "little"))
    )


class TraceNetnsSyn(BpfTracer):
    name = "netnssyn"
    category = Category.TRACE
    description = "TCP SYNs to a port entering each container's network namespace"
    examples = ("igrun trace netnssyn --port 80 -c web",)
    params = (
        ParamDesc("port", type_hint=TypeHint.UINT, default="0", description="destination port"),
    )
    schema = Schema(
        [
            # Tagged netns: the containers operator names each event's container by it.
            Field("netns", Kind.UINT, "network namespace inode", tags=("netns",)),
            Field("src", Kind.STR, "source address", decode=lambda b: ipv4_texts(b, "saddr")),
            Field("dst", Kind.STR, "destination address", decode=lambda b: ipv4_texts(b, "daddr")),
            Field("sport", Kind.UINT, "source port", column=Column(align="right")),
            Field("dport", Kind.UINT, "destination port", column=Column(align="right")),
            Field("ifindex", Kind.UINT, "interface index", column=Column(hidden=True)),
        ],
        struct="event",
    )
    bpf_object = "netnssyn.bpf.o"

    def __init__(self) -> None:
        super().__init__()
        self.ctx: GadgetContext | None = None
        self.lock = threading.Lock()
        self.per_container: dict[str, tuple[Any, socket.socket]] = {}
        """By container id: the object copy and the socket its filter is attached to."""

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {"port": int(ctx.gadget_params.get("port"))}

    def init(self, ctx: GadgetContext) -> None:
        self.ctx = ctx
        super().init(ctx)  # the main object: its buffer is the one every copy writes to

    def attach_container(self, container: Container) -> None:
        assert self.ctx is not None
        copy = self.object_copy(self.ctx, {"netns": container.netns})
        try:
            sock = socket_in_netns(container.pid)
        except BaseException:
            copy.close()
            raise
        try:
            copy.keep(copy.programs["syn_filter"].attach_socket(sock))
        except BaseException:
            sock.close()
            copy.close()
            raise
        with self.lock:
            self.per_container[container.id] = (copy, sock)

    def detach_container(self, container: Container) -> None:
        with self.lock:
            copy, sock = self.per_container.pop(container.id)
        copy.close()  # detaches the filter and unloads the copy
        sock.close()


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceNetnsSyn)
