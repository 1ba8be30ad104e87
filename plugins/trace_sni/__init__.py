"""``trace sni``: the server name of every TLS ClientHello in each selected network namespace,
with the process that owns the socket.

The socket filter (``sni.bpf.c``, on :class:`~igrun.plugins._packet.PacketTracer`) finds the
server name extension with a bounded walk over the hello's extensions and copies the name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from igrun.core import Category, Column, Field, Kind, Schema, hookimpl
from igrun.plugins._packet import PacketTracer, owner_fields, packet_types


class TraceSni(PacketTracer):
    name = "sni"
    category = Category.TRACE
    description = "Trace Server Name Indication (SNI) from TLS requests"
    bpf_object = "sni.bpf.o"
    packet_program = "ig_trace_sni"
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace sni -c web",
        "igrun trace sni --host -F name:~example -o json",
    )
    schema = Schema(
        [
            *owner_fields(),
            Field("type", Kind.STR, "packet type (OUTGOING: sent, HOST: received...)",
                  json="pktType", decode=packet_types, column=Column(min_width=7, hidden=True),
                  omit_empty=True),
            Field("name", Kind.STR, "the server name the client asked for",
                  column=Column(width=30), omit_empty=True),
        ],
        struct="sni_event",
    )  # fmt: skip


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceSni)
