"""Packet gadgets: one socket filter in every selected network namespace, and the owner of
every packet's socket, kprobe-free (``igrun/packet.h`` is the BPF side).

:class:`PacketTracer` is the base class of ``trace dns`` and ``trace sni``. It attaches its
object's socket filter to a raw packet socket opened in the network namespace of each
container it is given (the per-container attach protocol): a namespace that several
containers share (a pod) gets one socket, counted by its users and closed with the last one.
The same program serves every namespace (it reads the namespace of each packet's device), so
a container that starts costs one socket, not one more program to verify.

The owner of each packet's local socket comes from ``gadget_packet_owners``, which the
object's cgroup programs at the cgroup v2 root keep (see ``igrun/packet.h``) from the socket
enricher's records, and which an iterator pass fills at start with the sockets already open.

With the launcher's head start (:mod:`igrun.core.run.headstart`) the owner programs and the
filter's sockets (the host's namespace with ``--host``, else every other one, those no selected
container has closed after the first scan) are attached before the run gets here: the
tracer adopts each socket for the container in its namespace.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from igrun.core import Batch, Column, Field, Kind, fields, process_fields
from igrun.core.bpf.objects import SocketAttachment
from igrun.core.containers.netns import socket_in_netns
from igrun.core.events.schema import decode_cstrings
from igrun.core.gadget import GadgetContext
from igrun.core.tracer import BpfTracer
from igrun.plugins._packet_owners import attach_owners

if TYPE_CHECKING:
    from igrun.core.containers.collection import Container

UNKNOWN_OWNER = "(unknown)"
"""The comm of a packet whose socket's owner is not known: never a guessed process."""

PACKET_TYPES = ("HOST", "BROADCAST", "MULTICAST", "OTHERHOST", "OUTGOING", "LOOPBACK", "USER",
                "KERNEL")  # fmt: skip
"""The kernel's packet types (``PACKET_HOST`` …), by number, as ``ig`` names them."""


@dataclass
class Netns:
    """One network namespace the filter is attached in, and the containers in it."""

    sock: socket.socket
    attachment: SocketAttachment
    users: set[str] = field(default_factory=set)

    def close(self) -> None:
        self.attachment.destroy()
        self.sock.close()


class PacketTracer(BpfTracer):
    """A gadget whose socket filter runs in every selected network namespace."""

    packet_program: ClassVar[str]
    """The socket filter (``SEC("socket")``) of the object."""
    socket_owners = True

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.netns: dict[int, Netns] = {}
        """By namespace inode: the socket the filter is attached to there."""
        self.early: dict[int, Netns] = {}
        """The head start's sockets, by namespace inode, until a container there adopts
        one (the others are closed with the run)."""

    def init(self, ctx: GadgetContext) -> None:
        super().init(ctx)
        assert self.obj is not None
        head = self.head_start
        if head is not None:
            self.early = {ns: Netns(*pair) for ns, pair in head.take_packet_sockets().items()}
            ctx.logger.debug("head_start_packet_filter", namespaces=len(self.early),
                             owners=head.owners_attached)  # fmt: skip
            if head.owners_attached:
                return
        try:
            if not attach_owners(self.obj):
                ctx.logger.warning("packet_owners_unknown", reason="no cgroup v2 hierarchy",
                                   note="events say the owner is unknown")  # fmt: skip
        except BaseException:
            self.close()
            raise

    def attach_container(self, container: Container) -> None:
        assert self.obj is not None
        with self.lock:
            known = self.netns.get(container.netns)
            if known is not None:
                known.users.add(container.id)
                return
            entry = self.early.pop(container.netns, None)
            if entry is None:
                sock = socket_in_netns(container.pid)
                try:
                    attachment = self.obj.programs[self.packet_program].attach_socket(sock)
                except BaseException:
                    sock.close()
                    raise
                entry = Netns(sock, attachment)
            entry.users.add(container.id)
            self.netns[container.netns] = entry

    def detach_container(self, container: Container) -> None:
        with self.lock:
            known = self.netns.get(container.netns)
            if known is None or container.id not in known.users:
                return
            known.users.discard(container.id)
            if known.users:
                return
            del self.netns[container.netns]
        known.close()

    def attached_netns(self) -> dict[int, int]:
        """By namespace inode, how many containers use it: what is attached now."""
        with self.lock:
            return {ns: len(entry.users) for ns, entry in self.netns.items()}

    def close(self) -> None:
        with self.lock:
            left = [*self.netns.values(), *self.early.values()]
            self.netns.clear()
            self.early.clear()
        for entry in left:
            entry.close()
        super().close()


def _comms(batch: Batch) -> Any:
    names = decode_cstrings(batch.member("proc.comm"))
    return np.where(batch.member("owner_known") != 0, names, UNKNOWN_OWNER).astype(object)


_RIGHT = Column(align="right")
_HIDDEN_RIGHT = Column(hidden=True, align="right")


def owner_fields() -> list[Field]:
    """Time, namespaces and the owner of the packet's local socket, as ``ig``'s network
    gadgets show them. The container is named by the network namespace (tagged ``netns``),
    which every packet has, not by the owner's mount namespace, which an unknown owner lacks."""
    return [
        fields.timestamp(),
        *process_fields(
            "mntns",
            about="of the socket's owner",
            mntns={"tags": ()},
        ),
        Field("netns", Kind.UINT, "network namespace the packet passed", member="netns",
              json="netnsid", column=Column(width=12, hidden=True, align="right"),
              tags=("netns",), omit_empty=True),
        *process_fields(
            "pid tid comm uid gid",
            about="of the socket's owner",
            pid={"description": "process id of the socket's owner (0 when unknown)",
                 "column": _RIGHT},
            tid={"column": _RIGHT},
            uid={"column": _HIDDEN_RIGHT},
            gid={"column": _HIDDEN_RIGHT},
            comm={"description": f"command name of the socket's owner; {UNKNOWN_OWNER} when "
                  "no owner is known", "decode": _comms, "column": Column()},
        ),
        Field("ownerKnown", Kind.BOOL, "whether the socket's owner is known",
              member="owner_known", column=Column(hidden=True)),
    ]  # fmt: skip


def packet_types(batch: Batch) -> Any:
    return fields.per_distinct(
        batch.member("pkt_type"),
        lambda t: PACKET_TYPES[t] if t < len(PACKET_TYPES) else "UNKNOWN",
    )


def protocols(batch: Batch) -> Any:
    return fields.per_distinct(
        batch.member("proto"), lambda p: {6: "TCP", 17: "UDP"}.get(p, str(p))
    )
