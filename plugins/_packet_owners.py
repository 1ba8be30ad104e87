"""The owners of packets' sockets (``igrun/packet.h``): the cgroup programs that record them,
attached at the cgroup v2 root, and one pass over the sockets already open.

Apart from :mod:`igrun.plugins._packet` so that the launcher's head start
(:mod:`igrun.core.run.headstart`) can attach them without importing what the packet gadgets
need to decode events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from igrun.core.containers.procfs import cgroup2_root

if TYPE_CHECKING:
    from igrun.core.bpf.objects import BpfObject

OWNER_PROGRAMS = ("ig_packet_owner_egress", "ig_packet_owner_bind4", "ig_packet_owner_bind6")
EXISTING_OWNERS = "ig_packet_owner_existing"


def has_owner_programs(obj: BpfObject) -> bool:
    """Whether ``obj`` is a packet gadget's (it has every program above)."""
    return all(name in obj.programs for name in (*OWNER_PROGRAMS, EXISTING_OWNERS))


def attach_owners(obj: BpfObject) -> bool:
    """Attach the owner programs of ``obj`` (kept by it) and record the sockets already open;
    ``False`` when no cgroup v2 hierarchy is mounted (nothing attached: owners stay
    unknown)."""
    root = cgroup2_root()
    if root is None:
        return False
    for name in OWNER_PROGRAMS:
        obj.keep(obj.programs[name].attach_cgroup(root))
    # After the hooks: a socket opened meanwhile is seen by one or the other.
    link = obj.programs[EXISTING_OWNERS].attach()
    try:
        link.read()
    finally:
        link.destroy()
    return True
