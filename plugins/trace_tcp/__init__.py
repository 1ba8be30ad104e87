"""``trace tcp``: TCP connect, accept and close, with the process that owns each socket.

Built on the ``sock/inet_sock_set_state`` tracepoint and the ``accept``/``accept4`` syscall
exits, no kprobes. The owner is recorded where it runs itself (inside ``connect()``, at the
return of ``accept()``) and kept by socket, so events that the kernel raises elsewhere (the
handshake completing in softirq, a reset) still name the right process. Sockets opened before
the gadget started have no recorded owner: their close is not reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    ParamDesc,
    Schema,
    TypeHint,
    connection_fields,
    fields,
    hookimpl,
    process_fields,
)
from igrun.core.tracer import BpfTracer
from igrun.plugins._tcp_event import connect_error_field

OPERATIONS = ("unknown", "connect", "accept", "close")
LETTERS = ("U", "C", "A", "X")


def _operation(names: tuple[str, ...]) -> Any:
    def decode(batch: Batch) -> Any:
        ops = batch.member("operation").astype(np.intp)
        return np.array(names, dtype=object)[np.where(ops < len(names), ops, 0)]

    return decode


_RIGHT = Column(align="right")
_HIDDEN_RIGHT = Column(hidden=True, align="right")


class TraceTcp(BpfTracer):
    name = "tcp"
    category = Category.TRACE
    description = "Trace TCP connect, accept and close"
    bpf_object = "tcp.bpf.o"
    params = (
        ParamDesc(
            "accept-only",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only accept events",
        ),
        ParamDesc(
            "connect-only",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only connect events",
        ),
        ParamDesc(
            "failure-only",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only failed connects",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace tcp",
        "igrun trace tcp --connect-only -F dst.port:443",
        "igrun trace tcp --failure-only -o columns=+error",
    )
    schema = Schema(
        [
            fields.timestamp("when it happened"),
            *process_fields("mntns", about="of the owner"),
            Field(
                "t",
                Kind.STR,
                "operation: C (connect), A (accept), X (close)",
                json="-",
                decode=_operation(LETTERS),
                column=Column(width=1),
            ),
            Field(
                "operation",
                Kind.STR,
                "connect, accept or close",
                decode=_operation(OPERATIONS),
                column=Column(width=7, hidden=True),
                omit_empty=True,
            ),
            *process_fields(
                "pid tid uid gid comm",
                about="of the owner",
                pid={"column": _RIGHT},
                uid={"column": _HIDDEN_RIGHT},
                gid={"column": _HIDDEN_RIGHT},
                comm={"column": Column()},
            ),
            *connection_fields(member="conn"),
            connect_error_field(),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        p = ctx.gadget_params
        return {
            "accept_only": bool(p.get("accept-only")),
            "connect_only": bool(p.get("connect-only")),
            "failure_only": bool(p.get("failure-only")),
        }


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceTcp)
