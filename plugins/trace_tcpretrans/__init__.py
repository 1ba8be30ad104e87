"""``trace tcpretrans``: TCP retransmissions, with the process that owns the socket.

Hooks the ``tcp/tcp_retransmit_skb`` tracepoint. Retransmits mostly run from the kernel's
retransmit timer, where the current task is whoever happened to be running; the owner comes
from the socket enricher instead (``igrun/sockets.h``), and an event whose owner is not known
says so (``comm`` is ``(unknown)``, ``ownerKnown`` is false) rather than naming a stranger.
"""

from __future__ import annotations

from typing import Any, ClassVar

from igrun.core import Category, Schema, hookimpl
from igrun.core.tracer import BpfTracer
from igrun.plugins._tcp_event import connection_fields, owner_fields


class TraceTcpretrans(BpfTracer):
    name = "tcpretrans"
    category = Category.TRACE
    description = "Trace TCP retransmissions"
    bpf_object = "tcpretrans.bpf.o"
    socket_owners = True
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace tcpretrans",
        "igrun trace tcpretrans -F dst.port:443 -o json",
    )
    schema = Schema([*owner_fields(), *connection_fields()], struct="tcp_event")


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceTcpretrans)
