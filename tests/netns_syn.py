"""``trace netnssyn``: a gadget written as a third party would, on igrun's public API only.

It attaches to each selected container (``ContainerAttacher``): one copy of its BPF object
per container, its socket filter on a raw packet socket made inside the container's network
namespace, and reports every TCP SYN to ``--port`` that enters the namespace, tagged with the
namespace's inode. Detaching closes the socket and the copy. It keeps a log of its attach and
detach calls, and of the copies still open, for its test to check.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any, ClassVar

from igrun.core import (
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
)
from igrun.core.bpf import BpfObject
from igrun.core.netns import socket_in_netns
from igrun.core.schema import Batch
from igrun.core.tracer import BpfTracer

HERE = Path(__file__).parent
SOURCE = HERE / "bpf" / "netns_syn.bpf.c"


def _ipv4(batch: Batch, member: str) -> Any:
    return fields.per_distinct(
        batch.member(member), lambda v: socket.inet_ntoa(int(v).to_bytes(4, "little"))
    )


class TraceNetnsSyn(BpfTracer):
    name = "netnssyn"
    category = Category.TRACE
    description = "TCP SYNs entering each container's network namespace (a socket filter each)"
    params = (
        ParamDesc("port", type_hint=TypeHint.UINT, default="0", description="destination port"),
    )
    schema = Schema(
        [
            Field("netns", Kind.UINT, "network namespace inode", tags=("netns",)),
            Field("src", Kind.STR, "source address", decode=lambda b: _ipv4(b, "saddr")),
            Field("dst", Kind.STR, "destination address", decode=lambda b: _ipv4(b, "daddr")),
            Field("sport", Kind.UINT, "source port"),
            Field("dport", Kind.UINT, "destination port"),
            Field("ifindex", Kind.UINT, "interface", column=Column(hidden=True)),
        ],
        struct="event",
    )
    bpf_object = "netns_syn.bpf.o"
    compiled: ClassVar[Path]
    """Where the test compiled the object (tests build into a temporary folder)."""
    attach_error: ClassVar[str] = ""
    """A container name whose attach fails on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.ctx: GadgetContext | None = None
        self.per_container: dict[str, tuple[BpfObject, socket.socket]] = {}
        self.lock = threading.Lock()
        self.calls: list[tuple[str, str, int]] = []
        """(``attach`` | ``detach``, container name, netns inode), in call order."""
        self.threads: set[int] = set()
        TraceNetnsSyn.last = self

    last: ClassVar[TraceNetnsSyn | None] = None

    def object_path(self) -> Any:
        return self.compiled

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {"port": int(ctx.gadget_params.get("port"))}

    def init(self, ctx: GadgetContext) -> None:
        self.ctx = ctx
        super().init(ctx)

    def attach_container(self, container: Container) -> None:
        assert self.ctx is not None
        with self.lock:
            self.calls.append(("attach", container.name, container.netns))
            self.threads.add(threading.get_ident())
        if container.name == self.attach_error:
            raise RuntimeError("refused on purpose")
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
            self.calls.append(("detach", container.name, container.netns))
            copy, sock = self.per_container.pop(container.id)
        copy.close()  # detaches the filter
        sock.close()

    def open_copies(self) -> int:
        with self.lock:
            return len(self.per_container)


def own_fds() -> set[str]:
    """What this process's descriptors point to (``anon_inode:bpf-prog``, ``socket:[…]``)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
    return out
