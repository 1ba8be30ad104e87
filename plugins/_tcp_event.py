"""The fields of ``struct tcp_event`` (``igrun/tcp_event.h``), shared by the TCP gadgets that
name the socket's owner through the socket enricher (trace tcpretrans, trace tcpdrop), and
the connect errno of trace tcp and trace tcpconnect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core import Batch, Column, Field, Kind, fields, process_fields
from igrun.core.events.schema import decode_cstrings

UNKNOWN_OWNER = "(unknown)"
"""The comm of an event whose socket owner is not known: never a guessed process."""

TCP_STATES = (
    "", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
    "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV",
)  # fmt: skip
TCP_FLAGS = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR")


def tcp_flags_text(flags: int) -> str:
    """``SYN|ACK``: the set bits of a TCP flags byte, lowest first, as ``ig`` prints them."""
    return "|".join(name for bit, name in enumerate(TCP_FLAGS) if flags & (1 << bit))


def _flags(batch: Batch) -> Any:
    return fields.per_distinct(batch.member("tcpflags"), tcp_flags_text)


def _states(batch: Batch) -> Any:
    states = batch.member("state").astype(np.intp)
    known = states < len(TCP_STATES)
    names = np.array(TCP_STATES, dtype=object)[np.where(known, states, 0)]
    return np.where(known, names, states.astype(str))


def _comms(batch: Batch) -> Any:
    names = decode_cstrings(batch.member("proc.comm"))
    return np.where(batch.member("owner_known") != 0, names, UNKNOWN_OWNER).astype(object)


_RIGHT = Column(align="right")
_HIDDEN_RIGHT = Column(hidden=True, align="right")


def owner_fields() -> list[Field]:
    return [
        fields.timestamp(),
        *process_fields(
            "mntns pid tid uid gid comm",
            about="of the socket's owner",
            pid={"description": "process id of the socket's owner (0 when unknown)",
                 "column": _RIGHT},
            uid={"column": _HIDDEN_RIGHT},
            gid={"column": _HIDDEN_RIGHT},
            comm={"description": f"command name of the socket's owner; {UNKNOWN_OWNER} when "
                  "no owner is known", "decode": _comms, "column": Column()},
        ),
        Field("ownerKnown", Kind.BOOL, "whether the socket's owner is known",
              member="owner_known", column=Column(hidden=True)),
        Field("netns", Kind.UINT, "network namespace id of the socket", member="netns_id",
              json="netnsid", column=Column(width=12, hidden=True, align="right"),
              omit_empty=True),
    ]  # fmt: skip


def connect_error_field() -> Field:
    """Why a connect failed, from the errno the kernel left on the socket (trace tcp, trace
    tcpconnect)."""
    return fields.errno_field(
        "why the connect failed (errno name: ECONNREFUSED, ETIMEDOUT, an ICMP error, "
        "ECONNABORTED when the caller closed the socket first); empty when connected",
        member="error",
        returned=False,
    )


def connection_fields() -> list[Field]:
    return [
        *fields.connection_fields("source", "destination", member="conn"),
        Field("state", Kind.STR, "TCP state of the socket", decode=_states,
              column=Column(width=12), omit_empty=True),
        Field("tcpflags", Kind.STR, "TCP flags of the segment", decode=_flags,
              column=Column(width=16), omit_empty=True),
    ]  # fmt: skip
