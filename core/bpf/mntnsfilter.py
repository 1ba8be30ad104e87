"""The mount-ns filter of the ``gadget_filter_by_mntns`` convention (``igrun/mntns_filter.h``).

An object that declares the constant ``gadget_filter_by_mntns`` and the hash map
``gadget_mntns_filter_map`` drops, in the kernel, every event of a task whose mount-ns id is
not a key of that map when the constant is set. The containers operator keeps one such map
in sync with the selected containers and every object of the run uses it instead of its own.
The map is made here, in one place, because two parts of igrun make it: the containers
operator, and the head start (:mod:`igrun.core.run.headstart`), which loads a gadget's object
before the operator exists and hands the operator the map the object already uses.
"""

from __future__ import annotations

import struct

from igrun.core.bpf.objects import Map, MapType

FILTER_BY_MNTNS = "gadget_filter_by_mntns"
MNTNS_FILTER_MAP = "gadget_mntns_filter_map"
FILTER_MAP_SIZE = 1024
"""``GADGET_MAX_CONTAINERS`` of ``igrun/mntns_filter.h``: the selected containers a run can
filter on at once."""
KEY = struct.Struct("<Q")
"""A key: the mount-ns id (``__u64``)."""
PRESENT = struct.pack("<I", 1)
"""The value of every key (``__u32``): only the key's presence counts."""


def new_filter_map() -> Map:
    """An empty filter map (no event passes it until a container's mount-ns id is added)."""
    return Map.create(MapType.HASH, "mntns_filter", KEY.size, len(PRESENT), FILTER_MAP_SIZE)


def let_through(filter_map: Map, mntns: int) -> None:
    """Let the events of mount namespace ``mntns`` through ``filter_map``."""
    filter_map.update(KEY.pack(mntns), PRESENT)


def stop(filter_map: Map, mntns: int) -> None:
    """Stop the events of mount namespace ``mntns`` at ``filter_map`` (if they passed)."""
    filter_map.delete(KEY.pack(mntns))
