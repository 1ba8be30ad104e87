"""Fields most gadgets have, described once: when, in which mount namespace, and errno names.

A gadget's event struct keeps ``__u64 timestamp`` (``bpf_ktime_get_boot_ns``) and
``__u64 mntns_id``; :func:`timestamp` and :func:`mntns` describe them the way every gadget
shows them (hidden columns; ``mountnsid`` in JSON, as ``ig`` writes it), tagged so the
containers operator finds them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from igrun.core.helpers import wall_times_from_boot_times
from igrun.core.schema import Array, Batch, Column, Field, Kind


@dataclass(frozen=True)
class WallTime:
    """Decoder: wall time from a boot-time member (``bpf_ktime_get_boot_ns``; 0 means now).
    A writer that recognises it reads the member in place and does the same sum itself."""

    member: str = "timestamp"

    def __call__(self, batch: Batch) -> Array:
        return wall_times_from_boot_times(batch.member(self.member))


def timestamp(description: str = "when it happened", member: str = "timestamp") -> Field:
    """Wall time of the event, from a boot-time member (``timestamp`` by default)."""
    return Field(
        "timestamp",
        Kind.TIME,
        description,
        member=None if member == "timestamp" else member,
        decode=WallTime(member),
        tags=("boot_time",),
        column=Column(hidden=True),
    )


def mntns(description: str = "mount namespace id") -> Field:
    """The ``mntns_id`` member: how the containers operator finds the event's container."""
    return Field(
        "mntns",
        Kind.UINT,
        description,
        member="mntns_id",
        json="mountnsid",
        tags=("mntns",),
        column=Column(width=12, hidden=True, align="right"),
    )


def per_distinct(values: Array, text: Callable[[int], str]) -> Array:
    """``text(v)`` for every value, computed once per distinct value: a batch holds many
    events but few distinct flags, errnos or states."""
    unique, inverse = np.unique(np.asarray(values), return_inverse=True)
    table = np.array([text(v) for v in unique.tolist()] + [""], dtype=object)
    return table[inverse.reshape(-1)] if len(unique) else table[:0]


def errno_name(code: int) -> str:
    """``ECONNREFUSED`` for 111 (either sign); empty for 0."""
    code = abs(int(code))
    return "" if code == 0 else errno.errorcode.get(code, str(code))
