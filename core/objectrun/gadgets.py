"""The gadgets made from a bare object: a tracer (``GADGET_TRACER``) and a snapshot
(``GADGET_SNAPSHOTTER``), the classes :func:`igrun.core.objectrun.declarations.gadget_from_object`
subclasses with what the object declares (its path, layout, fields and flags).

What both share: the object's own flags as globals, ``--programs`` (only those load, and
programs whose attach point the kernel lacks are skipped), and the container filter kept in
user space for objects without a kernel one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from igrun.core.bpf.attachpoints import skip_missing
from igrun.core.bpf.objects import BpfObject, MapType
from igrun.core.errors import UsageError
from igrun.core.events.schema import Batch, Schema
from igrun.core.gadget import Category, GadgetContext, GadgetType
from igrun.core.log import get_logger
from igrun.core.objectrun.params import ObjectParam
from igrun.core.snapshot import BpfSnapshot
from igrun.core.tracer import LOST_EVENTS_MAP, BpfTracer, MntnsFilter

PARAM_PROGRAMS = "programs"
PARAM_BUFFER_MAP = "buffer-map"
PARAM_HOST = "host"


# ---- the gadgets ------------------------------------------------------------------------------


class ObjectGadget:
    """What the tracer and the snapshot made from an object share: the object's file, its
    flattened layout, its flags, and the container filter for objects without a kernel one."""

    path: ClassVar[Path]
    layout: ClassVar[np.dtype[Any]]
    object_params: ClassVar[tuple[ObjectParam, ...]] = ()
    kernel_filter: ClassVar[bool] = True
    """The object follows the ``gadget_filter_by_mntns`` convention (``igrun/mntns_filter.h``);
    otherwise the selected containers are kept in user space."""
    no_mntns_note: ClassVar[str] = ""
    """For events without a mount namespace member: what a container selection cannot do."""
    name: ClassVar[str]
    schema: ClassVar[Schema]

    @classmethod
    def full_name(cls) -> str:
        return f"run {cls.name}"

    @classmethod
    def id(cls) -> str:
        return f"run_{cls.name}"

    def object_constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {p.var: p.encode(ctx.gadget_params.get(p.var)) for p in self.object_params}

    def choose_programs(self, ctx: GadgetContext, obj: BpfObject) -> None:
        """``--programs a,b``: only those load; then every program to load whose attach
        point this kernel lacks is skipped (one line at ``-v``)."""
        chosen = ctx.gadget_params.get(PARAM_PROGRAMS) or []
        programs = obj.programs
        unknown = [n for n in chosen if n not in programs]
        if unknown:
            raise UsageError(
                f"--{PARAM_PROGRAMS}: {self.path} has no program {', '.join(unknown)} "
                f"(it has {', '.join(programs)})"
            )
        if chosen:
            for name, prog in programs.items():
                prog.autoload = name in chosen or name == getattr(self, "program", None)
        skip_missing(obj)
        if self.no_mntns_note and ctx.gadget_params.get(PARAM_HOST):
            get_logger().info(f"--{PARAM_HOST}: {self.no_mntns_note}")

    def selected(self, ctx: GadgetContext, batch: Batch) -> Batch:
        """Without a kernel filter, keep the events of the selected containers here."""
        mntns_filter = ctx.resources.get(MntnsFilter)
        field = batch.schema.tagged("mntns")
        if self.kernel_filter or mntns_filter is None or field is None or not len(batch):
            return batch
        keys = mntns_filter.map.items()
        ids = np.array([int.from_bytes(k, "little") for k, _ in keys], np.uint64)
        return batch.take(np.isin(batch[field.name], ids))


class ObjectTracer(ObjectGadget, BpfTracer):
    """A tracer made from an object's ``GADGET_TRACER``: events stream from its buffer."""

    category = Category.OTHER
    type = GadgetType.RUN

    def object_path(self) -> Any:
        return self.path

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return self.object_constants(ctx)

    def configure(self, ctx: GadgetContext, obj: BpfObject) -> None:
        self.choose_programs(ctx, obj)
        if obj.map_type(self.buffer_map) == MapType.RINGBUF and not obj.has_map(LOST_EVENTS_MAP):
            get_logger().warning(
                f"{self.path}: losses cannot be counted: ring buffer {self.buffer_map} has no "
                f"{LOST_EVENTS_MAP} counter (igrun/buffer.h: GADGET_RINGBUF, gadget_reserve_buf)"
            )

    def init(self, ctx: GadgetContext) -> None:
        # The schema has no struct name: BpfTracer would bind it to the unflattened layout.
        ctx.schema = self.schema.bind(self.layout)
        self._ctx = ctx
        super().init(ctx)

    def transform(self, batch: Batch) -> Batch:
        return self.selected(self._ctx, batch)


class ObjectSnapshot(ObjectGadget, BpfSnapshot):
    """A snapshot made from an object's ``GADGET_SNAPSHOTTER``: its iterator is read once
    (once per ``--interval``) and every record it wrote with ``bpf_seq_write`` is one row."""

    category = Category.OTHER
    type = GadgetType.ONE_SHOT
    program: ClassVar[str]

    def object_path(self) -> Any:
        return self.path

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return self.object_constants(ctx)

    def bind(self, ctx: GadgetContext, obj: BpfObject) -> None:
        # The schema has no struct name: the layout is the flattened one of the declaration.
        ctx.schema = self.schema.bind(self.layout)
        self._ctx = ctx

    def configure(self, ctx: GadgetContext, obj: BpfObject) -> None:
        self.choose_programs(ctx, obj)

    def transform(self, batch: Batch) -> Batch:
        return self.selected(self._ctx, batch)
