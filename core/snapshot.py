"""The common shape of a one-shot BPF gadget (a snapshot), so that a gadget is mostly its schema.

A :class:`BpfSnapshot` opens its CO-RE object, sets its constants from the params, joins the
run's mount-ns filter, binds the schema to the record struct's BTF layout, loads, pins its maps
and attaches its iterator programs (all in ``init``, so a failure ends the run before anything
else starts). Each snapshot reads every iterator once: C reads the iterator's seq file into one
buffer (:meth:`~igrun.core.bpf.objects.Link.read`), which becomes a numpy array of the record
struct without any Python per record. The rows are emitted as one batch, then the window ends:
the sort operator orders it (by the gadget's default sort unless ``--sort`` says otherwise),
the output writes it whole. With ``--interval`` it repeats once per interval until the run ends.

The BPF side writes each record with ``bpf_seq_write(seq, &rec, sizeof(rec))`` and declares
the pairing with ``GADGET_SNAPSHOTTER(name, struct, program)`` (``igrun/macros.h``), once per
iterator program.
"""

from __future__ import annotations

import importlib.resources
import time
from typing import Any, ClassVar

import numpy as np

from igrun.core.bpf.objects import BpfObject, Link
from igrun.core.errors import IgrunError
from igrun.core.events.schema import Batch
from igrun.core.gadget import PARAM_INTERVAL, Gadget, GadgetContext, GadgetType
from igrun.core.tracer import join_shared, open_object, pin_maps

SNAPSHOTTER_PREFIX = "gadget_snapshotter_"
SEPARATOR = "___"
WAIT_STEP_S = 0.1
"""How often a run waiting for its next snapshot looks whether it should end."""


def snapshotters(obj: BpfObject) -> list[tuple[str, str, str]]:
    """``(name, struct, program)`` of each ``GADGET_SNAPSHOTTER`` the object declares, from
    the names of its globals."""
    out = []
    for g in obj.global_names():
        if g.startswith(SNAPSHOTTER_PREFIX):
            parts = g.removeprefix(SNAPSHOTTER_PREFIX).split(SEPARATOR)
            if len(parts) == 3:
                out.append((parts[0], parts[1], parts[2]))
    return out


def records(data: list[bytes], dtype: np.dtype[Any], where: str) -> np.ndarray[Any, np.dtype[Any]]:
    """The records iterators wrote, as one array of ``dtype`` (one copy, into memory numpy
    owns). Every buffer must hold whole records: anything else is a gadget's bug, said once."""
    for chunk in data:
        if len(chunk) % dtype.itemsize:
            raise IgrunError(
                f"{where} wrote {len(chunk)} bytes, not whole records of {dtype.itemsize} "
                f"bytes (write each one with bpf_seq_write)"
            )
    if len(data) == 1:
        return np.frombuffer(data[0], dtype=dtype).copy()
    return np.concatenate([np.frombuffer(chunk, dtype=dtype) for chunk in data])


class BpfSnapshot(Gadget):
    """Base class of gadgets made of one BPF object whose iterators write records of one
    struct: one batch of rows per snapshot."""

    type: ClassVar[GadgetType] = GadgetType.ONE_SHOT
    bpf_object: ClassVar[str]
    """File name of the compiled object, in the gadget's package."""
    iterators: ClassVar[tuple[str, ...]] = ()
    """The iterator programs to read, in order; empty: every program the object declares
    with ``GADGET_SNAPSHOTTER`` for the schema's struct. A program whose autoload
    :meth:`configure` turns off is not read."""

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.links: list[Link] = []

    # -- what subclasses override

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """Values for the object's ``const volatile`` globals, from the params."""
        return {}

    def configure(self, ctx: GadgetContext, obj: BpfObject) -> None:
        """The opened object, before load: e.g. turn off the autoload of iterators the
        params leave out (``obj.programs["name"].autoload = False``). Constants are set."""

    def transform(self, batch: Batch) -> Batch:
        """A last look at a snapshot's batch before it goes down the chain."""
        return batch

    def take(self, ctx: GadgetContext) -> Batch:
        """One snapshot: every iterator read once, here (in this thread's namespaces). A
        gadget that reads the same iterators in other places (network namespaces) overrides
        this and calls :meth:`read` in each."""
        assert ctx.schema is not None
        return self.transform(Batch(ctx.schema, self.read(ctx)))

    # -- lifecycle

    def object_path(self) -> Any:
        """Where the compiled object is: by default :attr:`bpf_object` in the gadget's
        package. Override it to return a ``str`` or :class:`~pathlib.Path` of a file."""
        return importlib.resources.files(type(self).__module__) / self.bpf_object

    def bind(self, ctx: GadgetContext, obj: BpfObject) -> None:
        """Bind the schema to the record struct's layout in the object's BTF."""
        if self.schema.struct:
            ctx.schema = self.schema.bind(obj.struct_dtype(self.schema.struct, nested=True))

    def init(self, ctx: GadgetContext) -> None:
        obj = self.obj = open_object(self.object_path())
        try:
            for name, value in self.constants(ctx).items():
                obj.set_global(name, value)
            join_shared(ctx, obj)
            self.bind(ctx, obj)
            self.configure(ctx, obj)
            obj.load()
            pin_maps(ctx, obj, self.id())
            # An iterator's link holds no namespace: it is made once, and each read makes a
            # new seq file in the reading thread's namespaces.
            self.links = [obj.attach(name) for name in self._iterators(obj)]
        except BaseException:
            self.close()
            raise

    def _iterators(self, obj: BpfObject) -> list[str]:
        struct = self.schema.struct
        names = list(self.iterators) or [
            prog for _, s, prog in snapshotters(obj) if struct is None or s == struct
        ]
        if not names:
            raise IgrunError(
                f"{self.full_name()}: {obj.source} declares no GADGET_SNAPSHOTTER for "
                f"struct {struct}"
            )
        programs = obj.programs
        missing = [n for n in names if n not in programs or not programs[n].is_iterator]
        if missing:
            raise IgrunError(f"{self.full_name()}: {obj.source} has no iterator {missing[0]}")
        return [n for n in names if programs[n].autoload]

    def read(self, ctx: GadgetContext) -> np.ndarray[Any, np.dtype[Any]]:
        """Every iterator read once, in the calling thread's namespaces: their records, in
        the order of :attr:`iterators`."""
        assert ctx.schema is not None and ctx.schema.dtype is not None
        data = [link.read() for link in self.links]
        return records(data, ctx.schema.dtype, f"{self.full_name()}: an iterator")

    def run(self, ctx: GadgetContext) -> None:
        """One snapshot; with ``--interval``, one per interval until the run ends. Each
        snapshot is one window: its rows, then its end (an empty snapshot is an empty
        window, ``[]`` in JSON)."""
        interval = float(ctx.runtime_params.get(PARAM_INTERVAL) or 0.0)
        while True:
            due = time.monotonic() + interval
            batch = self.take(ctx)
            if len(batch):
                ctx.emit(batch)
            ctx.end_window()
            if not interval:
                return
            while not ctx.done and time.monotonic() < due:
                time.sleep(ctx.remaining(min(WAIT_STEP_S, max(0.0, due - time.monotonic()))))
                ctx.heartbeat()
            if ctx.done:
                return

    def close(self) -> None:
        for link in self.links:
            link.destroy()
        self.links = []
        if self.obj is not None:
            self.obj.close()
            self.obj = None
