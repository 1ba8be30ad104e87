"""The fields of ``struct tcp_event`` (``igrun/tcp_event.h``), shared by the TCP gadgets that
name the socket's owner through the socket enricher (trace tcpretrans, trace tcpdrop)."""

from __future__ import annotations

from typing import Any

import numpy as np

from igrun.core import Batch, Column, Field, Kind, fields
from igrun.core.endpoints import l4_endpoint
from igrun.core.schema import decode_cstrings

UNKNOWN_OWNER = "(unknown)"
"""The comm of an event whose socket owner is not known: never a guessed process."""

TCP_STATES = np.array(
    ["", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE",
     "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"],
    dtype=object,
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
    return np.where(known, TCP_STATES[np.where(known, states, 0)], states.astype(str))


def _comms(batch: Batch) -> Any:
    names = decode_cstrings(batch.member("comm"))
    return np.where(batch.member("owner_known") != 0, names, UNKNOWN_OWNER).astype(object)


_RIGHT = Column(align="right")


def owner_fields() -> list[Field]:
    return [
        fields.timestamp(),
        fields.mntns("mount namespace id of the socket's owner"),
        Field("pid", Kind.UINT, "process id of the socket's owner (0 when unknown)",
              column=_RIGHT),
        Field("tid", Kind.UINT, "thread id", column=Column(hidden=True, align="right")),
        Field("uid", Kind.UINT, "user id", column=Column(hidden=True, align="right")),
        Field("gid", Kind.UINT, "group id", column=Column(hidden=True, align="right")),
        Field("comm", Kind.STR, f"command name of the socket's owner; {UNKNOWN_OWNER} when "
              "no owner is known", decode=_comms),
        Field("ownerKnown", Kind.BOOL, "whether the socket's owner is known",
              member="owner_known", column=Column(hidden=True)),
    ]  # fmt: skip


def connection_fields() -> list[Field]:
    return [
        Field("ip", Kind.UINT, "IP version", member="ipversion", json="ipversion",
              column=Column(width=2, align="right")),
        *l4_endpoint("src", "saddr", "sport", "ipversion", "source"),
        *l4_endpoint("dst", "daddr", "dport", "ipversion", "destination"),
        Field("state", Kind.STR, "TCP state of the socket", decode=_states,
              column=Column(width=12)),
        Field("tcpflags", Kind.STR, "TCP flags of the segment", decode=_flags,
              column=Column(width=16)),
    ]  # fmt: skip
