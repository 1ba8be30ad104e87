"""The common shape of a BPF trace gadget, so that a gadget is mostly its schema.

A :class:`BpfTracer` opens its CO-RE object (package data next to the gadget's module), sets
its constants from the params, joins the run's mount-ns filter when the object follows the
convention, binds the schema to the event struct's BTF layout, loads, pins its maps, attaches
every program by section (all in ``init``, so a failure ends the run before anything else
starts), and drains its ring buffer in batches until the run ends.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from igrun.core.bpf.attachpoints import skip_missing
from igrun.core.bpf.mntnsfilter import FILTER_BY_MNTNS, MNTNS_FILTER_MAP
from igrun.core.bpf.objects import BpfObject, Map, MapType, Reader
from igrun.core.events.schema import Batch
from igrun.core.gadget import Gadget, GadgetContext
from igrun.core.lazy import preload as preload_numpy
from igrun.core.run.headstart import (
    EVENTS_MAP,
    RING_BYTES,
    HeadStart,
    head_start_ring,
    take_head_start,
)

LOST_EVENTS_MAP = "gadget_lost_events"


@dataclass(frozen=True)
class MntnsFilter:
    """The run's mount-ns filter (a resource, provided by the containers operator unless
    ``--host``): a hash map whose keys are the selected containers' mount-ns ids. An object
    that follows the ``gadget_filter_by_mntns`` convention uses it as its own filter map."""

    map: Map


@dataclass
class SharedMaps:
    """Maps operators share with gadgets (a resource), by the map name a gadget's object
    declares (e.g. ``gadget_sockets``): the object uses them instead of its own."""

    maps: dict[str, Map] = field(default_factory=dict)


def join_shared(ctx: GadgetContext, obj: BpfObject) -> None:
    """Before load: make ``obj`` use the run's mount-ns filter (when it follows the
    convention) and the maps operators share, instead of its own."""
    shared = ctx.resources.get(MntnsFilter)
    if shared is not None and obj.has_global(FILTER_BY_MNTNS):
        obj.set_global(FILTER_BY_MNTNS, True)
        obj.reuse_map(MNTNS_FILTER_MAP, shared.map)
    maps = ctx.resources.get(SharedMaps)
    for name, shared_map in maps.maps.items() if maps is not None else ():
        if obj.has_map(name):
            obj.reuse_map(name, shared_map)


def head_start_differs(
    ctx: GadgetContext,
    head: HeadStart,
    where: Any,
    ring_bytes: int = RING_BYTES,
    constants: Mapping[str, int | bool | bytes] | None = None,
) -> str | None:
    """Why the object of the launcher's head start (:mod:`igrun.core.run.headstart`) is not
    the one a gadget would load, or ``None``: the object at ``where`` with its ``events``
    ring of ``ring_bytes``, ``constants`` set, and the run's mount-ns filter and shared maps
    joined (:func:`join_shared`)."""
    obj = head.obj
    if obj is None:
        return f"it failed: {head.error}"
    if not isinstance(where, str | os.PathLike) or not os.path.samefile(where, head.path):
        return "another object"
    if head_start_ring(ring_bytes) != head.ring_bytes:
        return "another events buffer"
    mntns = ctx.resources.get(MntnsFilter)
    run_filter = mntns.map if mntns is not None and obj.has_global(FILTER_BY_MNTNS) else None
    if run_filter is not head.filter_map:
        return "another mount-ns filter"
    shared = ctx.resources.get(SharedMaps)
    joined = {n: m for n, m in (shared.maps if shared else {}).items() if obj.has_map(n)}
    if joined.keys() != head.shared.keys() or any(
        m is not head.shared[n] for n, m in joined.items()
    ):
        return "another shared map"
    constants = constants or {}
    if set(head.constants) - set(constants):
        return f"constant {min(set(head.constants) - set(constants))}"
    if constants:
        with BpfObject.open(head.path) as fresh:  # the compiled values, as loaded
            for name, value in constants.items():
                loaded = (
                    fresh.pack_global(name, head.constants[name])
                    if name in head.constants
                    else fresh.global_value(name)
                )
                if fresh.pack_global(name, value) != loaded:
                    return f"constant {name}"
    return None


def package_object(module_name: str, name: str) -> Any:
    """Where file ``name`` of package ``module_name`` is: its path when the package is on
    disk (what a head start loaded is compared by file, and ``importlib.resources`` is not
    needed), else the package's resource."""
    module = sys.modules.get(module_name)
    folder = os.path.dirname(getattr(module, "__file__", None) or "")
    path = os.path.join(folder, name)
    if folder and os.path.isfile(path):
        return path
    import importlib.resources

    return importlib.resources.files(module_name) / name


def open_object(where: Any) -> BpfObject:
    """Open a gadget's compiled object: a path, or a resource of a package that is not on
    disk."""
    if isinstance(where, str | os.PathLike):
        return BpfObject.open(where)
    import importlib.resources

    with importlib.resources.as_file(where) as path:
        return BpfObject.open(path)


def pin_maps(ctx: GadgetContext, obj: BpfObject, name: str) -> None:
    """Pin every map of ``obj`` in the run's folder, under ``name`` (the gadget's id)."""
    if ctx.pins is None:
        return
    folder = ctx.pins.sub(name)
    for map_name in obj.map_names():
        obj.map(map_name).pin(folder / map_name)


POLL_TIMEOUT_MS = 100
"""A batch ends when it holds a quarter of the ring (the reader drains the ring at every
wakeup past its watermark meanwhile), or after this long: events are at most that late, and
a slow stream costs one wakeup per batch."""
FIRST_POLL_MS = 10
FIRST_EVENTS_S = 1.0
"""Until its first events are out, for at most a second, a run polls every FIRST_POLL_MS:
they reach the user at once, as execsnoop shows them, instead of waiting out the first
100 ms timeout. Later batches are a watermark's or a timeout's: a busy start does not cost
a hundred small batches."""
PERF_BUFFER_PAGES = 64
PERF_WAKEUP_FRACTION = 8
"""A perf reader is woken once this fraction of a CPU's buffer waits, as a ring buffer's is by
``igrun/buffer.h``."""
PAGE_SIZE = 4096
BATCH_BYTES = 8 * 1024 * 1024
"""A ring-buffer batch ends at this much record memory (at least 512 records): a gadget
whose struct has room for long strings has 8 KiB slots. The rest stays in the buffer for
the next poll, which follows at once."""
RING_SEEN = "gadget_ring_seen"
"""The global of ``igrun/buffer.h`` through which a lending reader tells the BPF side how far
it has looked, for its wakeup watermark."""
LOST_CHECK_S = 0.25
"""How often the drop counter is read while running (and always at the final drain)."""


SWITCH_INTERVAL_S = 0.0002


@contextmanager
def _prompt_switches() -> Iterator[None]:
    """While the programs load and attach, the thread importing numpy (and structlog) gives
    the interpreter back every 0.2 ms instead of every 5: each libbpf call releases it, and
    waiting out 5 ms to take it back after every one of them would add tens of
    milliseconds before the programs are attached."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@dataclass(frozen=True)
class EventsBuffer:
    """The events buffer of a run, in the unit of ``--buffer-size`` (ring buffer bytes, or
    perf buffer bytes per CPU): offered as a resource of the run, so that a report of lost
    events can say what size to try instead."""

    size: int
    kind: str  # "ring" or "perf"


@dataclass
class BufferUse:
    """How full the events buffer has been (a resource of a run with a ring buffer), read
    at every loss check: ``recent`` is the most bytes waiting at one wakeup in the last
    second, ``peak`` the most since the run began. A ``peak`` near the size means a burst
    nearly filled it: the next larger one loses events."""

    recent: int = 0
    peak: int = 0
    _last: list[int] = field(default_factory=list)

    def add(self, fill: int) -> None:
        self._last = [*self._last[-(RECENT_CHECKS - 1) :], fill]
        self.recent = max(self._last)
        self.peak = max(self.peak, fill)


RECENT_CHECKS = 4
"""Loss checks (every LOST_CHECK_S) that make up :attr:`BufferUse.recent`: one second."""


class BpfTracer(Gadget):
    """Base class of gadgets made of one BPF object that streams events of one struct."""

    bpf_object: ClassVar[str]
    """File name of the compiled object, in the gadget's package."""
    buffer_map: ClassVar[str] = "events"
    """The ring buffer (or perf event array) the events arrive through."""
    ring_buffer_size: ClassVar[int] = 256 * 1024
    perf_buffer_pages: ClassVar[int] = PERF_BUFFER_PAGES
    """Pages per CPU when the buffer is a perf event array (Inspektor Gadget's default)."""
    optional_programs: ClassVar[tuple[str, ...]] = ()
    """Programs the gadget can do without: each is skipped before load (one line at ``-v``)
    when the running kernel lacks what it attaches to (a tracepoint, a kernel function)."""
    socket_owners: ClassVar[bool] = False
    """The object looks socket owners up in ``gadget_sockets`` (``igrun/sockets.h``): the
    run starts the socket enricher for it."""

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.reader: Reader | None = None
        self._lost_due = 0.0
        self._head_start_losses = False
        self.head_start: HeadStart | None = None
        """The launcher's head start whose object this run took, if it did: what else it
        attached early is there for the gadget to adopt (a packet gadget's sockets)."""
        self.counts_lost = True
        """Whether the reader can count what the kernel drops: a perf event array always
        can, a ring buffer only with igrun's ``gadget_lost_events`` counter (igrun/buffer.h)."""
        self.buffer_use: BufferUse | None = None
        """How full the ring buffer has been (none for a perf buffer)."""
        self._lending = False
        """Whether batches are read in place in the ring buffer (:meth:`Reader.lend`): until
        one is kept past the operators, then they are copied."""
        self.buffer_size = self.ring_buffer_size
        self.perf_pages = self.perf_buffer_pages

    # -- what subclasses override

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """Values for the object's ``const volatile`` globals, from the params."""
        return {}

    def transform(self, batch: Batch) -> Batch:
        """A last look at a decoded batch before it goes down the chain (drop rows, etc.)."""
        return batch

    def configure(self, ctx: GadgetContext, obj: BpfObject) -> None:
        """The opened object, before load: set programs' autoload
        (``obj.programs["name"].autoload = False``), skip what the kernel lacks
        (:func:`igrun.core.skip_missing`), size maps. Constants are already set."""

    # -- lifecycle

    def object_path(self) -> Any:
        """Where the compiled object is: by default :attr:`bpf_object` in the gadget's
        package. Override it to return a ``str`` or :class:`~pathlib.Path` of a file."""
        return package_object(type(self).__module__, self.bpf_object)

    def init(self, ctx: GadgetContext) -> None:
        wanted = ctx.runtime_params.get("buffer-size") if "buffer-size" in ctx.runtime_params else 0
        if wanted:  # a power of two, in whole pages: checked by the param
            self.buffer_size = wanted
            self.perf_pages = wanted // PAGE_SIZE
        constants = self.constants(ctx)
        head = take_head_start(self.id())
        if head is not None and self._take_head_start(ctx, head, constants):
            return
        obj = open_object(self.object_path())
        self.obj = obj
        try:
            self._configure(ctx, obj, constants)
            if self.optional_programs:
                skip_missing(obj, self.optional_programs)
            self.configure(ctx, obj)
            ring = obj.map_type(self.buffer_map) == MapType.RINGBUF
            if not ring:  # the event layout is needed first (below)
                self._bind(ctx, obj)
            preload_numpy()  # while the kernel verifies: the first batch finds it imported
            with _prompt_switches():
                obj.load()
                self._pin(ctx, obj)
                if ring:
                    # Attached first: a ring buffer holds what the programs emit until the
                    # reader drains it, so events are captured from here on, while numpy
                    # (the event layout's dtype) is still being imported.
                    obj.attach_all()
            if ring:
                self._bind(ctx, obj)
                self.reader = self._open_reader(ctx, obj)
            else:
                # The reader comes before the programs: a perf event array without its
                # reader's perf events would drop every event emitted until then.
                self.reader = self._open_reader(ctx, obj)
                obj.attach_all()
        except BaseException:
            self.close()
            raise

    def _take_head_start(
        self,
        ctx: GadgetContext,
        head: HeadStart,
        constants: dict[str, int | bool | bytes],
    ) -> bool:
        """Use the object the launcher loaded and attached ahead of the run
        (:mod:`igrun.core.run.headstart`) when it is exactly the one :meth:`init` would
        load; otherwise close it. Whether it was used."""
        why = self._head_start_differs(ctx, head, constants)
        ctx.logger.debug("head_start", used=why is None, why=why or "")
        if why is not None:
            head.discard()
            return False
        obj = head.obj
        assert obj is not None
        self.obj = obj
        self.head_start = head
        self.buffer_size = head.ring_bytes  # the ring the events waited in, kept
        self._head_start_losses = True  # until the first read (:meth:`_drain`)
        try:
            self._pin(ctx, obj)
            preload_numpy()
            self._bind(ctx, obj)
            self.reader = self._open_reader(ctx, obj)
        except BaseException:
            self.close()
            raise
        return True

    def _head_start_differs(
        self,
        ctx: GadgetContext,
        head: HeadStart,
        constants: dict[str, int | bool | bytes],
    ) -> str | None:
        """Why the head start's object is not the one this run would load, or ``None``."""
        if type(self).configure is not BpfTracer.configure or self.optional_programs:
            return "the gadget configures its object"
        if self.buffer_map != EVENTS_MAP:
            return "another events buffer"
        return head_start_differs(ctx, head, self.object_path(), self.buffer_size, constants)

    def object_copy(
        self, ctx: GadgetContext, constants: dict[str, int | bool | bytes]
    ) -> BpfObject:
        """Load this gadget's object once more, with ``constants`` over :meth:`constants`,
        writing to this run's buffer and lost counter (and using the run's shared maps):
        a gadget that attaches one copy per container tags each copy's events with its own
        constants. Nothing is attached; the caller closes the copy (which detaches what it
        attached through it)."""
        assert self.obj is not None, "object_copy is for after init"
        copy = open_object(self.object_path())
        try:
            for name, value in {**self.constants(ctx), **constants}.items():
                copy.set_global(name, value)
            join_shared(ctx, copy)
            for name in (self.buffer_map, LOST_EVENTS_MAP):
                if copy.has_map(name) and self.obj.has_map(name):
                    copy.reuse_map(name, self.obj.map(name))
            copy.load()
        except BaseException:
            copy.close()
            raise
        return copy

    def _configure(
        self, ctx: GadgetContext, obj: BpfObject, constants: dict[str, int | bool | bytes]
    ) -> None:
        for name, value in constants.items():
            obj.set_global(name, value)
        join_shared(ctx, obj)
        if obj.map_type(self.buffer_map) == MapType.RINGBUF:
            obj.set_max_entries(self.buffer_map, self.buffer_size)

    def _bind(self, ctx: GadgetContext, obj: BpfObject) -> None:
        """The schema bound to the event struct's layout (the object's BTF), as a numpy
        dtype."""
        if self.schema.struct:
            ctx.schema = self.schema.bind(obj.struct_dtype(self.schema.struct, nested=True))

    def _pin(self, ctx: GadgetContext, obj: BpfObject) -> None:
        pin_maps(ctx, obj, self.id())

    def _open_reader(self, ctx: GadgetContext, obj: BpfObject) -> Reader:
        assert ctx.schema is not None
        events = obj.map(self.buffer_map)
        lost_map = obj.map(LOST_EVENTS_MAP) if obj.has_map(LOST_EVENTS_MAP) else None
        self.counts_lost = events.type == MapType.PERF_EVENT_ARRAY or lost_map is not None
        size = ctx.schema.dtype.itemsize if ctx.schema.dtype is not None else 1
        if events.type == MapType.PERF_EVENT_ARRAY:
            ctx.resources.provide(EventsBuffer(self.perf_pages * PAGE_SIZE, "perf"), by="gadget")
            wakeup = self.perf_pages * PAGE_SIZE // PERF_WAKEUP_FRACTION
            ctx.logger.debug(
                "event_buffer",
                map=self.buffer_map,
                kind="perf",
                bytes_per_cpu=self.perf_pages * PAGE_SIZE,
                wakeup_bytes=wakeup,
                record_bytes=size,
            )
            return Reader.perf(
                events, size, self.perf_pages, wakeup_bytes=wakeup, lost_map=lost_map
            )
        ctx.resources.provide(EventsBuffer(self.buffer_size, "ring"), by="gadget")
        self.buffer_use = BufferUse()
        ctx.resources.provide(self.buffer_use, by="gadget")
        batch = min(max(BATCH_BYTES // size, 512), 65536)
        ctx.logger.debug(
            "event_buffer",
            map=self.buffer_map,
            kind="ring",
            bytes=events.max_entries,
            record_bytes=size,
            batch_records=batch,
        )
        reader = Reader.ring(events, size, max_records=batch, lost_map=lost_map)
        try:
            seen = obj.global_location(RING_SEEN, 8)
            if seen is not None:
                reader.watch_seen(*seen)
        except BaseException:
            reader.close()
            raise
        self._lending = True
        return reader

    def run(self, ctx: GadgetContext) -> None:
        assert self.obj is not None and self.reader is not None
        obj = self.obj
        # The first events of a run are shown within FIRST_POLL_MS, not at the next 100 ms
        # timeout: the user is watching for them, and a quiet start costs a few wakeups.
        quick_until = time.monotonic() + FIRST_EVENTS_S
        while not ctx.done:
            quick = time.monotonic() < quick_until
            if self._drain(ctx, FIRST_POLL_MS if quick else POLL_TIMEOUT_MS) and quick:
                quick_until = 0.0  # the first events are out
        # Detach first, then take what is already in the buffer: nothing emitted is dropped.
        for link in list(obj.links):
            link.destroy()
        obj.links.clear()
        self._drain(ctx, 0)

    def _drain(self, ctx: GadgetContext, timeout_ms: int) -> bool:
        """One batch from the buffer to the chain; whether it held any event."""
        assert self.reader is not None and ctx.schema is not None
        assert ctx.schema.dtype is not None  # bound to the event struct in init
        timeout = int(ctx.remaining(timeout_ms / 1000) * 1000) if timeout_ms else 0
        if self._lending:
            try:
                return self._take(ctx, self.reader.lend(timeout, ctx.schema.dtype), timeout_ms)
            finally:
                if self.reader.give_back():
                    # An operator keeps batches: they are its to keep, so copies from now on.
                    self._lending = False
                    ctx.logger.debug("lent_batch_kept")
        return self._take(ctx, self.reader.records(timeout, ctx.schema.dtype), timeout_ms)

    def _take(self, ctx: GadgetContext, raw: Any, timeout_ms: int) -> bool:
        """A batch read from the buffer (an array, or None), to the chain, with the losses
        counted meanwhile; whether it held any event."""
        assert self.reader is not None and ctx.schema is not None
        now = time.monotonic()
        if not timeout_ms or now >= self._lost_due:  # a syscall: not for every small batch
            self._lost_due = now + LOST_CHECK_S
            lost = self.reader.lost()
            if lost and self._head_start_losses:
                # Dropped while the launcher still imported, before the run's first read
                # (the ring holds the earliest): events from before the start was done,
                # which a run without a head start would not have traced at all.
                ctx.logger.info("head_start_ring_full", not_shown=lost)
            elif lost:
                ctx.report_lost(lost)
            self._head_start_losses = False
            if self.buffer_use is not None:
                self.buffer_use.add(self.reader.fill_peak())
        if raw is None:
            ctx.heartbeat()
            return False
        ctx.emit(self.transform(Batch(ctx.schema, raw)))  # the heartbeat comes with it
        del raw  # a lent batch is free again once the chain holds no reference to it
        return True

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None
