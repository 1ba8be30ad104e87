"""``trace tcpconnect``: outgoing TCP connections, with the process that opened them, how
long the handshake took and, for a connect that failed, its errno.

Built on the ``sock/inet_sock_set_state`` tracepoint alone (a stable ABI; no kprobes, which
Inspektor Gadget uses for this gadget): the caller of ``connect()`` is recorded where it runs
itself (the ``CLOSE -> SYN_SENT`` transition happens inside ``connect()``) and the event is sent
when the handshake ends: ``SYN_SENT -> ESTABLISHED`` (usually in softirq) for a connection,
``SYN_SENT -> CLOSE`` for a failure, with the errno the kernel left on the socket
(``ECONNREFUSED``, ``ETIMEDOUT``, an ICMP error; ``ECONNABORTED`` when the caller closed the
socket before any answer). ``ig`` reports every connect whose SYN went out, failed or not; this
gadget does too, and says which failed in its ``error`` field (a hidden column, as ``ig``'s
columns have no error). Connections started before the gadget are not reported: their caller
was never recorded.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from igrun.core import (
    Category,
    Column,
    GadgetContext,
    ParamDesc,
    Schema,
    TypeHint,
    connection_fields,
    duration_field,
    fields,
    hookimpl,
    process_fields,
)
from igrun.core.tracer import BpfTracer
from igrun.plugins._tcp_event import connect_error_field

PARAM_LATENCY = "latency"
PARAM_MIN = "min"
NS_PER_SECOND = 1_000_000_000

_RIGHT = Column(align="right")
_LATENCY_COLUMN = Column(width=10, min_width=8, align="right", order=4000)
"""As in ``ig``: right-aligned, after every other column."""
_LATENCY_HIDDEN = replace(_LATENCY_COLUMN, hidden=True)


class TraceTcpconnect(BpfTracer):
    name = "tcpconnect"
    category = Category.TRACE
    description = "Trace connect system calls"
    bpf_object = "tcpconnect.bpf.o"
    params = (
        ParamDesc(
            PARAM_LATENCY,
            type_hint=TypeHint.BOOL,
            default="false",
            description="show the latency column (time from SYN sent to the connection "
            "being established or failing)",
        ),
        ParamDesc(
            PARAM_MIN,
            type_hint=TypeHint.DURATION,
            default="0",
            description="show only connections whose latency (to being established or "
            "failing) is at least this long (e.g. 10ms; 0: all)",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace tcpconnect",
        "igrun trace tcpconnect --latency",
        "igrun trace tcpconnect --latency --min 10ms",
        "igrun trace tcpconnect -F dst.port:443 -o json",
        "igrun trace tcpconnect -o columns=+error -F error:ECONNREFUSED",
    )
    schema = Schema(
        [
            fields.timestamp("when the connection was established"),
            *process_fields(
                "mntns pid tid uid gid comm",
                about="of the caller of connect()",
                pid={"column": _RIGHT},
                uid={"column": Column(min_width=6, hidden=True, align="right")},
                gid={"column": Column(hidden=True, align="right")},
                comm={"column": Column()},
            ),
            *connection_fields(
                member="conn",
                ip=Column(width=2, align="right", fixed=True),
                ip_description="IP version (4 or 6)",
            ),
            duration_field(
                "latency",
                "time from SYN sent to the connection being established or failing (a column "
                "with --latency)",
                column=_LATENCY_HIDDEN,
            ),
            connect_error_field(),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        # Durations arrive in seconds; the kernel compares nanoseconds.
        min_seconds = float(ctx.gadget_params.get(PARAM_MIN) or 0.0)
        return {"targ_min_latency_ns": round(min_seconds * NS_PER_SECOND)}

    def init(self, ctx: GadgetContext) -> None:
        super().init(ctx)
        if ctx.gadget_params.get(PARAM_LATENCY) and ctx.schema is not None:
            # --latency only decides whether the column is shown by default: the kernel
            # measures every connection, so JSON and -o columns=+latency always have it.
            ctx.schema = ctx.schema.with_column("latency", _LATENCY_COLUMN)


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceTcpconnect)
