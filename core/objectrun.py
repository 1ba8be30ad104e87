"""A gadget made at run time from a compiled CO-RE object that no Python describes.

Inspektor Gadget's image-based gadgets need no Go per gadget: the object declares what it
produces and the framework does the rest. The same holds here. The object says, in globals
that ``igrun/macros.h`` makes (so they sit in its BTF), which struct its events have and where
they come from: ``GADGET_TRACER(name, map, struct)`` for a ring or perf buffer,
``GADGET_SNAPSHOTTER(name, struct, program)`` for an iterator read once, and
``GADGET_PARAM(var)`` for each ``const volatile`` global that should be a flag. From that and
the struct's BTF (:mod:`igrun.core.objectlayout`, :mod:`igrun.core.objectparams`) this module
builds a gadget class, a :class:`BpfTracer` or a one-shot snapshot, which the CLI's usual
parser and runtime run (``igrun run``, :mod:`igrun.core.runcmd`), so the operators
(containers, filter, sort, limit, output) work as for any gadget.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from igrun.core.attachpoints import skip_missing
from igrun.core.bpf import BpfObject, Map, MapType, _c_name, lib
from igrun.core.btf import BtfError, ObjectBtf
from igrun.core.errors import BpfError, IgrunError, UsageError
from igrun.core.files import OBJECT_LIMIT, FileRefused, read_bytes
from igrun.core.gadget import PARAM_INTERVAL, Category, Gadget, GadgetContext, GadgetType
from igrun.core.log import get_logger
from igrun.core.objectlayout import event_layout
from igrun.core.objectparams import ObjectParam, object_params
from igrun.core.params import ParamDesc, TypeHint
from igrun.core.schema import Batch, Field, Schema
from igrun.core.tracer import (
    FILTER_BY_MNTNS,
    LOST_EVENTS_MAP,
    MNTNS_FILTER_MAP,
    SHARED_MAPS,
    BpfTracer,
)

TRACER_PREFIX = "gadget_tracer_"
SNAPSHOTTER_PREFIX = "gadget_snapshotter_"
SEPARATOR = "___"
PARAM_PROGRAMS = "programs"
PARAM_BUFFER_MAP = "buffer-map"
PARAM_HOST = "host"
EM_BPF = 247
PROBE_TIMEOUT_S = 10
_ELF64_CLASS = 2


@dataclass(frozen=True)
class Declaration:
    """One ``GADGET_TRACER`` or ``GADGET_SNAPSHOTTER`` of an object."""

    kind: str
    """``tracer`` or ``snapshotter``."""
    name: str
    struct: str
    source: str
    """The buffer map (tracer) or the iterator program (snapshotter)."""


def declarations(globals_: Sequence[str]) -> list[Declaration]:
    """The tracers and snapshotters declared by the names of an object's globals."""
    out = []
    for g in globals_:
        if g.startswith(TRACER_PREFIX):
            parts = g.removeprefix(TRACER_PREFIX).split(SEPARATOR)
            if len(parts) == 3:
                out.append(Declaration("tracer", parts[0], parts[2], parts[1]))
        elif g.startswith(SNAPSHOTTER_PREFIX):
            parts = g.removeprefix(SNAPSHOTTER_PREFIX).split(SEPARATOR)
            if len(parts) == 3:
                out.append(Declaration("snapshotter", parts[0], parts[1], parts[2]))
    return out


def check_file(path: Path) -> None:
    """Say what ``path`` is when it is not a BPF object, before libbpf tries it: only the
    ELF identification and machine (20 bytes) are read here; libbpf reads the rest."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a BPF object")
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    try:
        head = read_bytes(path, OBJECT_LIMIT)[:20]
    except FileRefused as exc:
        raise UsageError(f"{path}: cannot read it: {exc}") from None
    if head[:4] != b"\x7fELF":
        raise UsageError(f"{path}: not an ELF file: expected a compiled BPF object")
    machine = int.from_bytes(head[18:20], "little" if head[5:6] == b"\x01" else "big")
    if len(head) < 20 or head[4] != _ELF64_CLASS or machine != EM_BPF:
        raise UsageError(
            f"{path}: an ELF file for another machine, not a BPF object "
            "(compile it with clang -target bpf)"
        )


def probe_open(path: Path) -> None:
    """Have libbpf open ``path`` in a child process first: libbpf 1.1 can crash on damaged
    BTF (its map definitions), and a user's file must cost one line, not this process."""
    result = lib.igr_probe_open(_c_name("BPF object path", os.fspath(path)), PROBE_TIMEOUT_S)
    if result == -errno.EFAULT:
        raise UsageError(f"{path}: a damaged BPF object: libbpf crashed reading it")
    if result == -errno.ETIMEDOUT:
        raise UsageError(f"{path}: a damaged BPF object: libbpf did not finish reading it")
    # Anything else, a refusal included, is said by the open that follows, in libbpf's words.


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
        filter_map: Map | None = ctx.extra.get("mntns_filter_map")
        field = batch.schema.tagged("mntns")
        if self.kernel_filter or filter_map is None or field is None or not len(batch):
            return batch
        ids = np.array([int.from_bytes(k, "little") for k, _ in filter_map.items()], np.uint64)
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
            shared: Map | None = ctx.extra.get("mntns_filter_map")
            if shared is not None and obj.has_global(FILTER_BY_MNTNS):
                obj.set_global(FILTER_BY_MNTNS, True)
                obj.reuse_map(MNTNS_FILTER_MAP, shared)
            for name, shared_map in ctx.extra.get(SHARED_MAPS, {}).items():
                if obj.has_map(name):
                    obj.reuse_map(name, shared_map)
            self.choose_programs(ctx, obj)
            if not obj.programs[self.program].autoload:
                raise UsageError(f"{self.path}: the iterator {self.program} was not chosen")
            obj.load()
            if ctx.pins is not None:
                folder = ctx.pins.sub(self.id())
                for name in obj.map_names():
                    obj.map(name).pin(folder / name)
        except BaseException:
            self.close()
            raise

    def run(self, ctx: GadgetContext) -> None:
        """One snapshot; with ``--interval``, one per interval until the run ends. The next
        snapshot is due an interval after the last one was taken, so the runtime's interval
        tick (which ends a window: sort, output, gauges) always falls between two of them."""
        interval = float(ctx.runtime_params.get(PARAM_INTERVAL) or 0.0)
        while True:
            ctx.heartbeat()
            due = time.monotonic() + interval
            self._snapshot(ctx)
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


# ---- making the class ---------------------------------------------------------------------


def choose(found: list[Declaration], path: Path, buffer_map: str | None) -> Declaration:
    """The declaration to run: the only one, or the tracer reading ``--buffer-map``."""
    if not found:
        raise UsageError(
            f"{path}: declares no GADGET_TRACER nor GADGET_SNAPSHOTTER (igrun/macros.h): "
            "nothing to run"
        )
    names = ", ".join(
        f"{d.kind} {d.name} (map {d.source})" if d.kind == "tracer" else f"{d.kind} {d.name}"
        for d in found
    )
    if buffer_map:
        chosen = [d for d in found if d.kind == "tracer" and d.source == buffer_map]
        if not chosen:
            raise UsageError(f"--{PARAM_BUFFER_MAP}: no tracer of {path} reads {buffer_map!r} "
                             f"(it declares {names})")  # fmt: skip
        return chosen[0]
    if len(found) > 1:
        raise UsageError(
            f"{path}: declares several gadgets ({names}); choose one with --{PARAM_BUFFER_MAP}"
        )
    return found[0]


def gadget_from_object(path: Path, buffer_map: str | None = None) -> type[Gadget]:
    """A gadget class for the object at ``path``, from what it declares (the tracer reading
    ``buffer_map`` when it declares several). Bad objects are a one-line :class:`UsageError`."""
    check_file(path)
    probe_open(path)
    try:
        obj = BpfObject.open(path)
    except BpfError as exc:
        raise UsageError(str(exc)) from None
    with obj:
        try:
            btf = ObjectBtf(obj)
        except BtfError:
            raise UsageError(f"{path}: has no BTF (compile it with clang -g)") from None
        globals_ = obj.global_names()
        decl = choose(declarations(globals_), path, buffer_map)
        _check_source(obj, decl)
        try:
            layout = event_layout(obj, btf, decl.struct)
            params = object_params(obj, btf, globals_, path)
        except (BtfError, RecursionError) as exc:
            # The kernel rejects such BTF at load; this is before load, so say it here.
            raise UsageError(f"{path}: its BTF cannot be read ({exc})") from None
        programs = [n for n, p in obj.programs.items() if not p.is_iterator]
    description = f"{path.name}: {decl.kind} {decl.name}, events of struct {decl.struct}"
    if layout.not_shown:
        description += f" (not shown: {', '.join(layout.not_shown)})"
    has_mntns = any("mntns" in f.tags for f in layout.fields)
    own = [
        ParamDesc(PARAM_PROGRAMS, type_hint=TypeHint.STRING_LIST,
                  description="load only these programs (default: all; "
                  f"{', '.join(programs) or 'none'})"),
        ParamDesc(PARAM_BUFFER_MAP, description="the buffer to read when the object declares "
                  "several tracers", default=buffer_map or ""),
    ]  # fmt: skip
    note = ""
    if not has_mntns:
        note = (
            f"struct {decl.struct} has no mount namespace member (gadget_mntns_id): every "
            "event is shown; a container selection cannot filter them"
        )
        own.append(
            ParamDesc(PARAM_HOST, type_hint=TypeHint.BOOL, default="false",
                      description=f"show events of the host too (always: {note})")
        )  # fmt: skip
    clash = [p.var for p in params if p.var in (PARAM_PROGRAMS, PARAM_BUFFER_MAP, PARAM_HOST)]
    if clash:
        raise UsageError(f"{path}: GADGET_PARAM({clash[0]}) clashes with igrun run's own flag")
    attrs: dict[str, Any] = {
        "name": decl.name,
        "description": description,
        "path": path,
        "layout": layout.dtype(),
        "object_params": tuple(params),
        "params": (*(p.desc() for p in params), *own),
        "kernel_filter": FILTER_BY_MNTNS in globals_,
        "no_mntns_note": note,
        "schema": Schema(layout.fields),
        "examples": _examples(path, layout.fields),
    }
    if decl.kind == "tracer":
        attrs["buffer_map"] = decl.source
        return cast(type[Gadget], type(f"RunTracer_{decl.name}", (ObjectTracer,), attrs))
    attrs["program"] = decl.source
    return cast(type[Gadget], type(f"RunSnapshot_{decl.name}", (ObjectSnapshot,), attrs))


def _examples(path: Path, fields: Sequence[Field]) -> tuple[str, ...]:
    """Command lines for ``--help`` that work with this object's fields and flags."""
    first = next(f.name for f in fields if not f.column.hidden)
    if not any("mntns" in f.tags for f in fields):
        return (f"igrun run {path} -o json", f"igrun run {path} -o json -F {first}:VALUE")
    return (f"igrun run {path} --host -o json", f"igrun run {path} -c CONTAINER --sort {first}")


def _check_source(obj: BpfObject, decl: Declaration) -> None:
    where = f"{obj.source}: {decl.kind} {decl.name}"
    if decl.kind == "tracer":
        if not obj.has_map(decl.source):
            raise UsageError(f"{where} reads map {decl.source!r}, which the object lacks")
        if obj.map_type(decl.source) not in (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY):
            raise UsageError(f"{where}: map {decl.source!r} is not a ring or perf buffer")
        return
    prog = obj.programs.get(decl.source)
    if prog is None:
        raise UsageError(f"{where} reads program {decl.source!r}, which the object lacks")
    if not prog.is_iterator:
        raise UsageError(f'{where}: program {decl.source!r} is not an iterator (SEC("iter/..."))')
