"""The gadgets made from a bare object: a tracer (``GADGET_TRACER``) and a snapshot
(``GADGET_SNAPSHOTTER``), the classes :func:`igrun.core.objectrun.declarations.gadget_from_object`
subclasses with what the object declares (its path, layout, fields and flags).

What both share: the object's own flags as globals, ``--programs`` (only those load, and
programs whose attach point the kernel lacks are skipped), and the container filter kept in
user space for objects without a kernel one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from igrun.core.bpf.attachpoints import skip_missing
from igrun.core.bpf.objects import BpfObject, MapType
from igrun.core.errors import IgrunError, UsageError
from igrun.core.events.schema import Batch, Schema
from igrun.core.gadget import PARAM_INTERVAL, Category, Gadget, GadgetContext, GadgetType
from igrun.core.log import get_logger
from igrun.core.objectrun.params import ObjectParam
from igrun.core.tracer import LOST_EVENTS_MAP, BpfTracer, MntnsFilter, join_shared

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


class ObjectSnapshot(ObjectGadget, Gadget):
    """A snapshot made from an object's ``GADGET_SNAPSHOTTER``: its iterator is read once
    and every record it wrote with ``bpf_seq_write`` is one row."""

    category = Category.OTHER
    type = GadgetType.ONE_SHOT
    program: ClassVar[str]

    def __init__(self) -> None:
        self.obj: BpfObject | None = None

    def init(self, ctx: GadgetContext) -> None:
        ctx.schema = self.schema.bind(self.layout)
        obj = self.obj = BpfObject.open(self.path)
        try:
            for name, value in self.object_constants(ctx).items():
                obj.set_global(name, value)
            join_shared(ctx, obj)
            self.choose_programs(ctx, obj)
            obj.load()
            if ctx.pins is not None:
                folder = ctx.pins.sub(self.id())
                for name in obj.map_names():
                    obj.map(name).pin(folder / name)
        except BaseException:
            self.close()
            raise

    def run(self, ctx: GadgetContext) -> None:
        """One snapshot; with ``--interval``, one per interval until the run ends, each one
        window (sorted, limited and written whole)."""
        interval = float(ctx.runtime_params.get(PARAM_INTERVAL) or 0.0)
        while True:
            ctx.heartbeat()
            due = time.monotonic() + interval
            self._snapshot(ctx)
            ctx.end_window()
            if not interval:
                return
            while not ctx.done and time.monotonic() < due:
                time.sleep(ctx.remaining(min(0.1, max(0.0, due - time.monotonic()))))
                ctx.heartbeat()
            if ctx.done:
                return

    def _snapshot(self, ctx: GadgetContext) -> None:
        assert self.obj is not None and ctx.schema is not None
        data = self.obj.attach(self.program).read()
        size = self.layout.itemsize
        if len(data) % size:
            raise IgrunError(
                f"{self.path}: iterator {self.program} wrote {len(data)} bytes, not whole "
                f"records of {size} bytes (write each one with bpf_seq_write)"
            )
        raw = np.frombuffer(data, dtype=self.layout).copy()
        batch = self.selected(ctx, Batch(ctx.schema, raw))
        if len(batch):
            ctx.emit(batch)

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None
