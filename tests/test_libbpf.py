"""The libbpf layer against the real kernel: every attach type, map operation and reader.

The test program (tests/bpf/testprog.bpf.c) only reacts to this test process (``target_pid``),
so every count below is exact.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.objects import (
    BpfObject,
    Map,
    MapType,
    Reader,
    has_ktime_get_boot_ns,
    possible_cpus,
)
from igrun.core.errors import BpfError

pytestmark = pytest.mark.bpf

SOURCE = Path(__file__).parent / "bpf" / "testprog.bpf.c"
RAW_TP, TP_BTF, TRACEPOINT, SOCKET, UPROBE = range(5)
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@pytest.fixture(scope="session")
def object_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bpf")
    return compile_bpf(SOURCE, out / "testprog.bpf.o", build_dir=out / "build")


def open_test(path: Path, burst: int = 1, ring_size: int | None = None) -> BpfObject:
    obj = BpfObject.open(path)
    obj.set_global("target_pid", os.getpid())
    obj.set_global("burst", burst)
    if ring_size:
        obj.set_max_entries("events", ring_size)
    return obj


@pytest.fixture
def loaded(object_path: Path) -> Iterator[BpfObject]:
    with open_test(object_path) as obj:
        obj.load()
        yield obj


def count(obj: BpfObject, slot: int) -> int:
    value = obj.map("counts").lookup(U32.pack(slot))
    assert value is not None
    return int(U64.unpack(value)[0])


@contextlib.contextmanager
def getppid_at(*delays: float) -> Iterator[None]:
    """getppid() (the test program's burst) from a timer after each delay; all done at the
    block's end."""
    timers = [threading.Timer(delay, os.getppid) for delay in delays]
    for timer in timers:
        timer.start()
    try:
        yield
    finally:
        for timer in timers:
            timer.join()


def drain(reader: Reader, dtype: np.dtype, want: int) -> tuple[np.ndarray, int]:
    """Poll until ``want`` records came (or nothing more does); return them and the polls."""
    parts, polls = [], 0
    got = 0
    for _ in range(200):
        view = reader.poll(50)
        if view is None:
            if got >= want:
                break
            continue
        polls += 1
        parts.append(np.frombuffer(view, dtype=dtype).copy())
        got += len(parts[-1])
    return (np.concatenate(parts) if parts else np.zeros(0, dtype)), polls


def test_open_set_globals_and_layout(object_path: Path) -> None:
    with BpfObject.open(object_path) as obj:
        assert obj.has_global("target_pid") and not obj.has_global("nope")
        obj.set_global("enabled", False)
        with pytest.raises(BpfError, match=r"no global variable 'nope' \(has: .*target_pid"):
            obj.set_global("nope", 1)
        dtype = obj.struct_dtype("event")
        assert dtype.names == ("seq", "pid", "cpu", "tag")
        assert [dtype.fields[n][1] for n in dtype.names] == [0, 8, 12, 16]
        assert dtype.itemsize == 24 and dtype["tag"] == np.dtype("S8")
        assert {"events", "perf_events", "counts", "gadget_lost_events"} <= set(obj.map_names())
        assert obj.map_type("events") == MapType.RINGBUF
    with BpfObject.from_bytes(object_path.read_bytes(), "frommem") as obj:
        assert "on_getppid" in obj.programs
        assert obj.programs["dump_task"].is_iterator


def test_disabled_flag_silences_everything(object_path: Path) -> None:
    with open_test(object_path) as obj:
        obj.set_global("enabled", False)
        obj.load()
        obj.attach("on_getppid")
        os.getppid()
        assert count(obj, TRACEPOINT) == 0


def test_tracepoint_raw_tp_and_tp_btf_counts(loaded: BpfObject) -> None:
    for name in ("on_getppid", "on_raw_sys_enter", "on_fork"):
        loaded.attach(name)
    for _ in range(7):
        os.getppid()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert count(loaded, TRACEPOINT) == 7
    assert count(loaded, RAW_TP) == 7
    assert count(loaded, TP_BTF) == 1
    per_cpu = loaded.map("percpu_counts").lookup_per_cpu(U32.pack(0))
    assert per_cpu is not None and len(per_cpu) == possible_cpus()
    assert sum(U64.unpack(v)[0] for v in per_cpu) == 7


def test_ring_buffer_arrives_in_order_in_batches(object_path: Path) -> None:
    with open_test(object_path, burst=100) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(
            obj.map("events"), dtype.itemsize, lost_map=obj.map("gadget_lost_events")
        )
        obj.attach("on_getppid")
        for _ in range(10):
            os.getppid()
        events, polls = drain(reader, dtype, 1000)
        lost = reader.lost()
        reader.close()
    assert lost == 0
    assert events["seq"].tolist() == list(range(1000))
    assert set(events["pid"].tolist()) == {os.getpid()}
    assert set(events["tag"].tolist()) == {b"ring"}
    assert polls <= 20  # one Python call per batch, never one per event


def test_a_trickle_of_records_comes_in_few_batches(loaded: BpfObject) -> None:
    """Records below the watermark do not wake the reader: they wait for the poll's timeout."""
    dtype = loaded.struct_dtype("event")
    reader = Reader.ring(loaded.map("events"), dtype.itemsize)
    loaded.attach("on_getsid")

    def trickle() -> None:
        for _ in range(50):
            os.getsid(0)
            time.sleep(0.0002)

    thread = threading.Thread(target=trickle)
    thread.start()
    events, polls = drain(reader, dtype, 50)
    thread.join()
    reader.close()
    assert len(events) == 50
    assert polls <= 10  # with a wakeup per record, about one batch per record


def test_records_are_the_callers_and_reuse_memory_nobody_holds(object_path: Path) -> None:
    """A batch that is kept is never written over; once dropped (with every view of it), its
    memory takes the next batch instead of a fresh allocation."""
    with open_test(object_path, burst=10) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(obj.map("events"), dtype.itemsize)
        obj.attach("on_getppid")

        def batch() -> np.ndarray:
            os.getppid()
            got = reader.records(1000, dtype)
            assert got is not None and len(got) == 10
            return got

        first = batch()
        memory = weakref.ref(first.base)
        seq = first["seq"]  # a view keeps the batch's memory held too
        del first
        second = batch()
        assert seq.tolist() == list(range(10)) and second["seq"].tolist() == list(range(10, 20))
        assert not np.shares_memory(seq, second)
        del second, seq
        third = batch()
        assert third.base is memory()  # the first batch's memory again, not a fresh one
        assert third["seq"].tolist() == list(range(20, 30))
        reader.close()


def test_a_batch_in_reused_memory_shows_nothing_of_an_older_one(loaded: BpfObject) -> None:
    """Records land straight in a batch's memory, and a slot is cleared only past what the
    slot's previous record wrote: a short record where a long one was shows zeros after its
    end, and a batch that is held is never written into."""
    dtype = loaded.struct_dtype("event")
    reader = Reader.ring(loaded.map("events"), dtype.itemsize)
    loaded.attach("on_getsid")
    loaded.attach("on_getppid")
    os.getppid()
    first = reader.records(1000, dtype)
    assert first is not None and first["tag"].tolist() == [b"ring"]
    memory = weakref.ref(first.base)
    del first
    os.getsid(0)
    second = reader.records(1000, dtype)
    assert second is not None and second.base is memory()
    assert second["tag"].tolist() == [b""] and second["seq"].tolist() == [7]
    os.getppid()
    third = reader.records(1000, dtype)
    reader.close()
    assert third is not None and not np.shares_memory(second, third)
    assert second["tag"].tolist() == [b""] and third["tag"].tolist() == [b"ring"]


def test_a_slow_stream_costs_the_reader_one_wakeup_per_batch(object_path: Path) -> None:
    """A slow stream never passes the watermark: the reader sleeps a whole batch at once
    instead of waking for the first record and again for the rest (the reader's voluntary
    context switches, per batch, say how often it slept)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\nsys.stdin.readline()\n"
         "for _ in range(400):\n    os.getsid(0)\n    time.sleep(0.002)\n"],
        stdin=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        obj = BpfObject.open(object_path)
        obj.set_global("target_pid", child.pid)
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(obj.map("events"), dtype.itemsize)
        obj.attach("on_getsid")
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        wakeups, got = [], 0
        while got < 400:
            before = _voluntary_switches()
            batch = reader.records(100, dtype)
            if batch is not None:
                got += len(batch)
                wakeups.append(_voluntary_switches() - before)
        reader.close()
        obj.close()
    finally:
        child.kill()
        child.wait()
    steady = sorted(wakeups[1:])  # the first batch may have begun before the stream
    assert len(steady) >= 5 and steady[len(steady) // 2] == 1, wakeups


def test_a_buffer_past_its_watermark_wakes_the_reader_at_once(object_path: Path) -> None:
    """More than an eighth of the ring waiting wakes a long poll (BPF_RB_FORCE_WAKEUP), which
    hands its batch over early once it holds a quarter of the ring; less leaves the reader
    asleep until its timeout (BPF_RB_NO_WAKEUP)."""
    ring = 64 * 1024  # 24-byte events take 32 bytes each: 256 is an eighth, 512 a quarter
    # Half the ring: whatever the first wakeup's drain takes, either it is a quarter or more
    # than an eighth is left for a second wakeup.
    with open_test(object_path, burst=1024, ring_size=ring) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(obj.map("events"), dtype.itemsize)
        obj.attach("on_getppid")
        timer = threading.Timer(0.2, os.getppid)
        timer.start()
        start = time.monotonic()
        got = reader.records(5000, dtype)
        woken = time.monotonic() - start
        timer.join()
        rest = reader.records(0, dtype)  # what the burst wrote while the reader woke
        reader.close()
        assert got is not None and woken < 2.5, woken
        assert len(got) + (0 if rest is None else len(rest)) == 1024
    with open_test(object_path, burst=100, ring_size=ring) as obj:
        obj.load()
        reader = Reader.ring(obj.map("events"), dtype.itemsize)
        obj.attach("on_getppid")
        timer = threading.Timer(0.1, os.getppid)
        timer.start()
        start = time.monotonic()
        got = reader.records(1000, dtype)
        slept = time.monotonic() - start
        timer.join()
        assert got is not None and len(got) == 100 and slept >= 0.95, slept
        reader.close()


def test_a_busy_ring_comes_to_python_once_per_quarter_not_per_wakeup(object_path: Path) -> None:
    """A wakeup that leaves the batch under a quarter of the ring is drained in C and the
    poll sleeps on: two bursts of 300 events (each past the eighth that wakes the reader)
    come in one batch, long before the timeout; a batch per wakeup would have been 300."""
    ring = 64 * 1024  # 24-byte events take 32 bytes each: 256 is an eighth, 512 a quarter
    with open_test(object_path, burst=300, ring_size=ring) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(obj.map("events"), dtype.itemsize)
        obj.attach("on_getppid")
        with getppid_at(0.2, 0.4):
            start = time.monotonic()
            got = reader.records(5000, dtype)
            took = time.monotonic() - start
        assert got is not None and len(got) > 300 and took < 2.5, (took, got)  # > one wakeup
        batches = [got]
        while sum(map(len, batches)) < 600:  # the rest of the second burst, if it was cut
            more = reader.records(1000, dtype)
            assert more is not None
            batches.append(more)
        reader.close()
        assert np.concatenate(batches)["seq"].tolist() == list(range(600))


def seen_of(obj: BpfObject) -> tuple[int, int]:
    where = obj.global_location("gadget_ring_seen", 8)
    assert where is not None  # igrun/buffer.h declares it
    return where


def mapped(address: int) -> bool:
    """Whether ``address`` is in one of this process's mappings."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = (int(x, 16) for x in line.split()[0].split("-"))
        if start <= address < end:
            return True
    return False


def test_a_lent_batch_is_read_in_place_and_its_space_given_back(object_path: Path) -> None:
    """Lending hands over the records where they lie in the ring (read-only, every record
    whole), and the space comes back at give_back: a ring of 2048 slots carries 5000 events
    in lent batches, in order, none lost."""
    ring = 64 * 1024  # 24-byte events take 32 bytes each: 2048 of them
    with open_test(object_path, burst=500, ring_size=ring) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(
            obj.map("events"), dtype.itemsize, lost_map=obj.map("gadget_lost_events")
        )
        reader.watch_seen(*seen_of(obj))
        obj.attach("on_getppid")
        seqs: list[int] = []
        for _ in range(10):
            os.getppid()  # 500 events: more than the ring's free half would ever need
            while len(seqs) < 500 * (_ + 1):
                batch = reader.lend(100, dtype)
                assert batch is not None
                assert batch.strides == (32,) and not batch.flags.writeable
                with pytest.raises(ValueError):
                    batch["seq"][0] = 1
                assert reader.sizes(len(batch)).tolist() == [dtype.itemsize] * len(batch)
                seqs += batch["seq"].tolist()
                assert set(batch["tag"].tolist()) == {b"ring"}
                del batch
                assert reader.give_back() is False  # nothing kept it
        assert reader.lend(0, dtype) is None
        lost = reader.lost()
        reader.close()
    assert seqs == list(range(5000)) and lost == 0


def test_a_lent_batch_grows_past_the_watermark_once_the_bpf_side_knows_where_it_ends(
    object_path: Path,
) -> None:
    """Two bursts of 300 events, each past the eighth of the ring (256) that wakes the
    reader. With gadget_ring_seen written, the BPF side counts its watermark from the end of
    the lent batch, and the lend takes both bursts in one batch (it ends at its timeout, or
    at half the ring); without it, the batch goes at the first wakeup: the records already
    lent would otherwise count again at every new one."""
    ring = 64 * 1024
    for watch in (True, False):
        with open_test(object_path, burst=300, ring_size=ring) as obj:
            obj.load()
            dtype = obj.struct_dtype("event")
            reader = Reader.ring(obj.map("events"), dtype.itemsize)
            if watch:
                reader.watch_seen(*seen_of(obj))
            obj.attach("on_getppid")
            with getppid_at(0.2, 0.4):
                start = time.monotonic()
                batch = reader.lend(1500, dtype)
                took = time.monotonic() - start
                got = [] if batch is None else batch["seq"].tolist()
                del batch
                reader.give_back()
            if watch:
                assert got == list(range(600)) and took >= 1.4, (len(got), took)
            else:
                assert 256 < len(got) < 600 and took < 0.4, (len(got), took)
                rest = reader.lend(0, dtype)
                assert rest is not None
                assert got + rest["seq"].tolist() == list(range(600))
                del rest
                reader.give_back()
            reader.close()


def test_a_lent_batch_kept_past_give_back_is_copied_where_it_is(object_path: Path) -> None:
    """What still references a lent batch at give_back keeps reading its records after the
    ring has written over their old place many times; the copy goes once nothing refers to
    it any more."""
    ring = 64 * 1024
    with open_test(object_path, burst=400, ring_size=ring) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(obj.map("events"), dtype.itemsize)
        reader.watch_seen(*seen_of(obj))
        obj.attach("on_getppid")
        os.getppid()
        batch = reader.lend(0, dtype)
        assert batch is not None and len(batch) == 400
        kept = batch["seq"][10:20]  # a view, as an operator might keep
        address = batch.ctypes.data
        del batch
        assert reader.give_back() is True
        assert kept.tolist() == list(range(10, 20))
        seqs: list[int] = []
        for _ in range(25):  # 10,000 events through a ring of 2048 slots
            os.getppid()
            while len(seqs) < 400 * (_ + 1):
                more = reader.lend(100, dtype)
                assert more is not None
                seqs += more["seq"].tolist()
                del more
                assert reader.give_back() is False
        assert seqs == list(range(400, 10400))
        assert kept.tolist() == list(range(10, 20))
        assert mapped(address)
        del kept
        reader.give_back()  # nothing out: only drops the copies nothing refers to
        assert not mapped(address)
        reader.close()


def test_a_record_of_another_length_is_lent_as_a_copy(loaded: BpfObject) -> None:
    """A short record (a gadget that sends records of several lengths) cannot be read in
    place as one of the batch's events: the batch ends before it, and it comes copied and
    zero-padded, with its length, in a batch of its own and what follows it; then batches
    are lent again."""
    dtype = loaded.struct_dtype("event")
    reader = Reader.ring(loaded.map("events"), dtype.itemsize)
    loaded.attach("on_getsid")
    loaded.attach("on_getppid")
    os.getppid()
    os.getsid(0)
    os.getppid()
    first = reader.lend(0, dtype)
    assert first is not None and first["seq"].tolist() == [0] and not first.flags.writeable
    del first
    assert reader.give_back() is False
    copied = reader.lend(0, dtype)
    assert copied is not None and copied.flags.writeable  # a copy
    assert copied["seq"].tolist() == [7, 1] and copied["tag"].tolist() == [b"", b"ring"]
    assert reader.sizes(2).tolist() == [12, dtype.itemsize]
    del copied
    assert reader.give_back() is False
    os.getppid()
    last = reader.lend(0, dtype)
    assert last is not None and not last.flags.writeable and last["seq"].tolist() == [2]
    del last
    reader.give_back()
    reader.close()


def test_a_polled_buffer_outlives_the_next_poll_and_close(object_path: Path) -> None:
    with open_test(object_path, burst=5) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(obj.map("events"), dtype.itemsize)
        obj.attach("on_getppid")
        os.getppid()
        first = reader.poll(1000)
        os.getppid()
        second = reader.poll(1000)
        reader.close()
        assert first is not None and second is not None
        assert np.frombuffer(first, dtype)["seq"].tolist() == [0, 1, 2, 3, 4]
        assert np.frombuffer(second, dtype)["seq"].tolist() == [5, 6, 7, 8, 9]
        for call in (lambda: reader.poll(0), lambda: reader.sizes(0), reader.lost):
            with pytest.raises(BpfError, match="the reader is closed"):
                call()
        reader.close()  # twice is harmless


@pytest.mark.parametrize(
    ("type", "value_size"), [(MapType.PERCPU_ARRAY, 16), (MapType.ARRAY, 8), (MapType.HASH, 8)]
)
def test_a_drop_counter_of_another_shape_is_refused(
    loaded: BpfObject, type: MapType, value_size: int
) -> None:
    """The reader sums one 8-byte value per CPU: a bigger value would overflow its buffer."""
    counter = Map.create(type, "bad_lost", 4, value_size, 1)
    dtype = loaded.struct_dtype("event")
    with pytest.raises(BpfError, match="must be a per-CPU array of 1 entry, u32 key, u64 value"):
        Reader.ring(loaded.map("events"), dtype.itemsize, lost_map=counter)
    counter.close()


def test_the_last_batch_sizes_are_bounded(loaded: BpfObject) -> None:
    dtype = loaded.struct_dtype("event")
    reader = Reader.ring(loaded.map("events"), dtype.itemsize)
    loaded.attach("on_getsid")
    os.getsid(0)
    assert reader.records(1000, dtype) is not None
    with pytest.raises(BpfError, match="has 1 records, not 2"):
        reader.sizes(2)
    with pytest.raises(BpfError, match="read as 8"):
        reader.records(0, np.dtype("<u8"))
    reader.close()


def _voluntary_switches() -> int:
    """How often this thread has slept so far."""
    for line in Path("/proc/thread-self/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/thread-self/status")


def test_short_records_are_zero_padded(loaded: BpfObject) -> None:
    """Also in a slot where a longer record was before (only that record's bytes are
    cleared, not the whole slot)."""
    dtype = loaded.struct_dtype("event")
    reader = Reader.ring(loaded.map("events"), dtype.itemsize)
    loaded.attach("on_getsid")
    loaded.attach("on_getppid")
    os.getppid()
    longer = reader.poll(1000)
    assert longer is not None and np.frombuffer(longer, dtype)["tag"].tolist() == [b"ring"]
    os.getsid(0)
    view = reader.poll(1000)
    assert view is not None
    event = np.frombuffer(view, dtype=dtype)
    assert len(event) == 1
    assert event["seq"][0] == 7 and event["pid"][0] == os.getpid()
    assert event["cpu"][0] == 0 and event["tag"][0] == b""
    assert reader.sizes(1).tolist() == [12]
    reader.close()


def test_ring_buffer_drops_are_counted_exactly(object_path: Path) -> None:
    with open_test(object_path, burst=1000, ring_size=4096) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.ring(
            obj.map("events"), dtype.itemsize, lost_map=obj.map("gadget_lost_events")
        )
        obj.attach("on_getppid")
        os.getppid()  # 1000 events into a buffer that holds about a hundred
        events, _ = drain(reader, dtype, 1)
        lost = reader.lost()
        reader.close()
    assert 0 < len(events) < 1000
    assert len(events) + lost == 1000
    assert events["seq"].tolist() == list(range(len(events)))


@pytest.fixture
def one_cpu() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    yield
    os.sched_setaffinity(0, before)


def getpgid() -> None:
    libc.getpgid(0)


@pytest.mark.parametrize("wakeup_bytes", [0, 16384])
def test_perf_buffer_delivers_everything(
    object_path: Path, one_cpu: None, wakeup_bytes: int
) -> None:
    with open_test(object_path, burst=500) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.perf(
            obj.map("perf_events"), dtype.itemsize, pages=64, wakeup_bytes=wakeup_bytes
        )
        obj.attach("on_getpgid")
        for _ in range(3):
            getpgid()
        events, polls = drain(reader, dtype, 1500)
        lost = reader.lost()
        reader.close()
    assert events["seq"].tolist() == list(range(1500))
    assert set(events["tag"].tolist()) == {b"perf"}
    assert lost == 0 and polls <= 20


def test_perf_buffer_drops_counted_by_the_bpf_side(object_path: Path, one_cpu: None) -> None:
    with open_test(object_path, burst=2000) as obj:
        obj.set_global("counted", True)
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.perf(
            obj.map("perf_events"), dtype.itemsize, pages=1, lost_map=obj.map("gadget_lost_events")
        )
        obj.attach("on_getpgid")
        getpgid()
        events, _ = drain(reader, dtype, 1)
        lost = reader.lost()
        reader.close()
    assert 0 < len(events) < 2000
    assert len(events) + lost == 2000


def test_perf_buffer_lost_records(object_path: Path, one_cpu: None) -> None:
    """Without a BPF-side counter, perf's own lost records are counted; the kernel writes
    one when the buffer next has room, so a second burst brings the first one's count."""
    with open_test(object_path, burst=2000) as obj:
        obj.load()
        dtype = obj.struct_dtype("event")
        reader = Reader.perf(obj.map("perf_events"), dtype.itemsize, pages=1)
        obj.attach("on_getpgid")
        getpgid()
        first, _ = drain(reader, dtype, 1)
        getpgid()
        drain(reader, dtype, 1)
        lost = reader.lost()
        reader.close()
    assert len(first) < 2000
    assert lost >= 2000 - len(first)


def test_hash_map_operations_and_batch_lookup() -> None:
    m = Map.create(MapType.HASH, "test_hash", 4, 8, 10000)
    try:
        for i in range(5000):
            m.update(U32.pack(i), U64.pack(i * 3))
        assert m.lookup(U32.pack(42)) == U64.pack(126)
        assert m.lookup(U32.pack(99999)) is None
        assert m.delete(U32.pack(42)) and not m.delete(U32.pack(42))
        items = dict(m.items())
        assert len(items) == 4999 and items[U32.pack(7)] == U64.pack(21)
        assert sorted(U32.unpack(k)[0] for k in m.keys())  # noqa: SIM118 - Map is no dict == sorted(set(range(5000)) - {42})
        m.clear()
        assert list(m.keys()) == []
        assert (m.type, m.key_size, m.value_size, m.max_entries) == (1, 4, 8, 10000)
    finally:
        m.close()


@pytest.fixture
def pin_dir() -> Iterator[Path]:
    path = Path(f"/sys/fs/bpf/igrun-test-{os.getpid()}")
    path.mkdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_pin_and_reuse_maps(object_path: Path, loaded: BpfObject, pin_dir: Path) -> None:
    counts = loaded.map("counts")
    counts.update(U32.pack(6), U64.pack(0xABCD))
    counts.pin(pin_dir / "counts")
    pinned = Map.from_pin(pin_dir / "counts")
    assert pinned.lookup(U32.pack(6)) == U64.pack(0xABCD)
    pinned.close()
    for source in (counts, counts.fd, pin_dir / "counts"):
        with open_test(object_path) as other:
            other.reuse_map("counts", source)  # type: ignore[arg-type]
            other.load()
            assert other.map("counts").lookup(U32.pack(6)) == U64.pack(0xABCD)
    loaded.programs["on_getppid"].pin(pin_dir / "prog")
    assert (pin_dir / "prog").exists()


def test_iterator_reads_the_target_task(loaded: BpfObject) -> None:
    link = loaded.attach("dump_task")
    comm = Path("/proc/self/comm").read_text().strip()
    assert link.read() == f"{os.getpid()} {comm}\n".encode()


def test_socket_filter_counts_then_detaches(loaded: BpfObject) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(1)
    try:
        attached = loaded.programs["count_packets"].attach_socket(rx)
        for i in range(5):
            tx.sendto(b"x%d" % i, rx.getsockname())
            assert rx.recv(16) == b"x%d" % i
        assert count(loaded, SOCKET) == 5
        attached.destroy()
        dropper = loaded.programs["drop_packets"].attach_socket(rx)
        tx.sendto(b"dropped", rx.getsockname())
        with pytest.raises(TimeoutError):
            rx.recv(16)
        dropper.destroy()
        tx.sendto(b"after", rx.getsockname())
        assert rx.recv(16) == b"after"
        assert count(loaded, SOCKET) == 5
    finally:
        rx.close()
        tx.close()


def test_uprobe_on_libc_function(loaded: BpfObject) -> None:
    libc_path = next(
        line.split()[-1]
        for line in Path("/proc/self/maps").read_text().splitlines()
        if "/libc.so" in line or "/libc-" in line
    )
    link = loaded.programs["on_uprobe"].attach_uprobe(libc_path, "getpid", pid=os.getpid())
    loaded.keep(link)
    for _ in range(9):
        os.getpid()
    assert count(loaded, UPROBE) == 9


def test_close_detaches_and_unloads(object_path: Path) -> None:
    obj = open_test(object_path)
    obj.load()
    obj.attach_all()
    names = {p["name"] for p in bpftool_progs()}
    assert "on_getppid" in names
    obj.close()
    assert "on_getppid" not in {p["name"] for p in bpftool_progs()}


def bpftool_progs() -> list[dict[str, object]]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], check=True, capture_output=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_features() -> None:
    assert has_ktime_get_boot_ns() is True
    possible = Path("/sys/devices/system/cpu/possible").read_text().strip()
    last = int(possible.split("-")[-1])
    assert possible_cpus() == last + 1
