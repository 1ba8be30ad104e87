"""``trace tcpdrop``: TCP segments the kernel dropped, why, and whose socket they were for.

Hooks the ``skb/kfree_skb`` tracepoint, which carries the drop reason. Drops happen in
softirq as often as not, so the owner comes from the socket enricher (``igrun/sockets.h``);
a segment dropped before it reached any socket has no owner, and the event says so
(``comm`` is ``(unknown)``, ``ownerKnown`` is false).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, ClassVar

from igrun.core import Batch, Category, Column, Field, Kind, Schema, fields, hookimpl
from igrun.core.tracer import BpfTracer
from igrun.plugins._tcp_event import connection_fields, owner_fields

TRACEFS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
_SYMBOL = re.compile(r"\{\s*(\d+),\s*\"(\w+)\"\s*\}")


@functools.cache
def drop_reasons() -> dict[int, str]:
    """The kernel's names of its drop reasons (``NETFILTER_DROP``...), from the tracepoint's
    own format: they change between kernels, so they are read from the running one."""
    for root in TRACEFS:
        try:
            text = (root / "events/skb/kfree_skb/format").read_text()
        except OSError:
            continue
        fmt = text[text.find("print fmt:") :]
        return {int(n): name for n, name in _SYMBOL.findall(fmt)}
    return {}


def _reasons(batch: Batch) -> Any:
    names = drop_reasons()
    return fields.per_distinct(batch.member("reason"), lambda c: names.get(c, str(c)))


class TraceTcpdrop(BpfTracer):
    name = "tcpdrop"
    category = Category.TRACE
    description = "Trace TCP packets dropped by the kernel"
    bpf_object = "tcpdrop.bpf.o"
    socket_owners = True
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace tcpdrop",
        "igrun trace tcpdrop -F reason:NETFILTER_DROP -o json",
    )
    schema = Schema(
        [
            *owner_fields(),
            *connection_fields(),
            Field(
                "reason",
                Kind.STR,
                "why the kernel dropped it (its drop reason)",
                decode=_reasons,
                column=Column(width=20),
                omit_empty=True,
            ),
        ],
        struct="tcp_event",
    )


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceTcpdrop)
