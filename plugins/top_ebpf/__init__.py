"""``top ebpf``: every BPF program on the host, with its run time and run count each interval.

Each interval one C call lists the kernel's programs (``BPF_PROG_GET_NEXT_ID``, ``…_FD_BY_ID``,
``BPF_OBJ_GET_INFO_BY_FD``: three syscalls a program) into a numpy array, another the maps and
the bytes each is charged for (their fdinfo ``memlock``, where ``ig`` reads a map's memory), and
one read of this gadget's ``iter/task_file`` iterator names the processes holding each
program. Run time and run count are what the program did during the interval (deltas of the
kernel's totals, which count only while stats are on): the kernel's stats are turned on with
``BPF_ENABLE_STATS`` for as long as the gadget runs, and closing that fd at the end leaves them
as they were (``kernel.bpf_stats_enabled`` untouched). Like ``ig``, the gadget's own iterator
program is listed too.

Columns, JSON keys and the default sort (``-runtime,-runcount``) are ``ig`` v0.25's
(pkg/gadgets/top/ebpf/types). Two differences, both to report what happened in the interval:
the first interval has a baseline (``ig`` shows 0 for every program in its first interval), and
a program loaded during an interval counts its whole run count there (``ig`` shows it 0 until
its second interval). A process holding a program through several fds is listed once.
"""

from __future__ import annotations

import importlib.resources
import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    Schema,
    hookimpl,
)
from igrun.core.bpf.objects import (
    BpfObject,
    Link,
    MapMemory,
    RunTimeStats,
    map_memory,
    program_stats,
)
from igrun.core.events.schema import field_like
from igrun.core.gadget import PARAM_INTERVAL, PARAM_MAX_ROWS, PARAM_SORT, Gadget, GadgetType
from igrun.core.top import DEFAULT_INTERVAL
from igrun.operators.containers import ENRICHED, node_name

ITERATOR = "ig_top_ebpf_it"
SORT_BY_DEFAULT = ("-runtime", "-runcount")
"""``ig`` v0.25's ``SortByDefault``: the most run time in the interval first."""
ENTRY_STRUCT = "pid_iter_entry"
POLL_S = 0.1
"""How long the loop sleeps at most between looks at the clock and at cancellation."""
EARLY_S = 0.002
"""A tick this close is taken now: a tick due at the deadline of ``--timeout`` is not lost
to a wakeup a little early."""

PROGRAM_TYPES = (
    "UnspecifiedProgram",
    "SocketFilter",
    "Kprobe",
    "SchedCLS",
    "SchedACT",
    "TracePoint",
    "XDP",
    "PerfEvent",
    "CGroupSKB",
    "CGroupSock",
    "LWTIn",
    "LWTOut",
    "LWTXmit",
    "SockOps",
    "SkSKB",
    "CGroupDevice",
    "SkMsg",
    "RawTracepoint",
    "CGroupSockAddr",
    "LWTSeg6Local",
    "LircMode2",
    "SkReuseport",
    "FlowDissector",
    "CGroupSysctl",
    "RawTracepointWritable",
    "CGroupSockopt",
    "Tracing",
    "StructOps",
    "Extension",
    "LSM",
    "SkLookup",
    "Syscall",
)
"""``enum bpf_prog_type`` as ``ig`` v0.25 names it (cilium/ebpf v0.12.3's ``ProgramType``)."""


def program_type_name(code: int) -> str:
    """A program type's name, as cilium/ebpf's stringer writes it (a newer type than it knows
    as ``ProgramType(32)``)."""
    return PROGRAM_TYPES[code] if 0 <= code < len(PROGRAM_TYPES) else f"ProgramType({code})"


def go_duration(ns: int) -> str:
    """Nanoseconds as Go's ``time.Duration.String`` writes them (``0s``, ``750ns``,
    ``54.09µs``, ``1.265693ms``, ``1m2.5s``): ``ig``'s run time columns."""
    ns = int(ns)
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 1000:
        return f"{sign}{u}ns"
    if u < 1_000_000_000:
        prec, unit = (3, "µs") if u < 1_000_000 else (6, "ms")
        return f"{sign}{_fraction(u, prec)}{unit}"
    seconds = u // 1_000_000_000
    text = f"{_fraction(u % 60_000_000_000, 9)}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


def _fraction(value: int, prec: int) -> str:
    """``value / 10**prec`` with its fraction's trailing zeros (and a bare point) dropped."""
    whole, rest = divmod(value, 10**prec)
    digits = f"{rest:0{prec}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def _joined(values: list[Any]) -> str:
    return ",".join(str(v) for v in values)


STAT_DTYPE = np.dtype(
    [
        ("progid", "<u4"),
        ("type_code", "<u4"),
        ("name", "S16"),
        ("currentRuntime", "<i8"),
        ("currentRunCount", "<u8"),
        ("cumulRuntime", "<i8"),
        ("cumulRunCount", "<u8"),
        ("totalRuntime", "<i8"),
        ("totalRunCount", "<u8"),
        ("mapMemory", "<u8"),
        ("mapCount", "<u4"),
        ("totalCpuUsage", "<f8"),
        ("perCpuUsage", "<f8"),
    ]
)
"""One program's row in an interval: what the gadget computes from the kernel's totals."""

_TYPE_NAMES = np.array(PROGRAM_TYPES, dtype=object)


def _type(batch: Batch) -> Any:
    codes = batch.member("type_code").astype(np.int64)
    known = codes < len(PROGRAM_TYPES)
    out = np.empty(len(codes), dtype=object)
    out[known] = _TYPE_NAMES[codes[known]]
    out[~known] = [program_type_name(int(c)) for c in codes[~known]]
    return out


def _empty_strings(batch: Batch) -> Any:
    out = np.empty(len(batch), dtype=object)
    out[:] = ""
    return out


def _no_holders(batch: Batch) -> Any:
    """Programs no process holds (the gadget sets the real column with each batch)."""
    out = np.empty(len(batch), dtype=object)
    out[:] = [[] for _ in range(len(batch))]
    return out


def _node(batch: Batch) -> Any:
    out = np.empty(len(batch), dtype=object)
    out[:] = node_name()
    return out


def _false(batch: Batch) -> Any:
    return np.zeros(len(batch), dtype=bool)


def common_fields() -> list[Field]:
    """``ig``'s common keys of every row (its ``CommonData``): the node, and a container's
    keys, empty here (a program belongs to no container), all hidden columns as in ``ig``."""
    out = []
    for f, _ in ENRICHED:
        decode = _node if f.name == "k8s.node" else _false if f.kind is Kind.BOOL else None
        out.append(
            field_like(
                f,
                decode=decode or _empty_strings,
                column=replace(f.column, hidden=True),
                description=f.description if decode is _node else f"{f.description} (empty)",
            )
        )
    return out


_RUNTIME = Column(width=12, align="right", order=1001, text=go_duration)


class TopEbpf(Gadget):
    name = "ebpf"
    category = Category.TOP
    type = GadgetType.TRACE_INTERVALS
    description = "Periodically report ebpf runtime stats"
    bpf_object: ClassVar[str] = "ebpf.bpf.o"
    param_defaults: ClassVar[Mapping[str, str]] = {
        PARAM_INTERVAL: "1s",
        PARAM_MAX_ROWS: "50",
        PARAM_SORT: ",".join(SORT_BY_DEFAULT),
    }
    """``ig`` v0.25's: one interval a second, 50 rows, the most run time first."""
    examples: ClassVar[tuple[str, ...]] = (
        "igrun top ebpf",
        "igrun top ebpf --interval 5s -m 10",
        "igrun top ebpf -o columns=progid,type,name,pid,comm,cumulruntime,cumulruncount "
        "--sort -cumulruntime --timeout 60s",
        "igrun top ebpf -o json --timeout 3s",
    )
    schema = Schema(
        [
            Field(
                "progid",
                Kind.UINT,
                "the program's id",
                member="progid",
                column=Column(width=8, order=-30),
            ),
            Field(
                "type",
                Kind.STR,
                "the program's type (ig's names: TracePoint, SocketFilter, Tracing...)",
                decode=_type,
                column=Column(width=16, order=-20),
                omit_empty=True,
            ),
            Field(
                "name",
                Kind.STR,
                "the program's name (the kernel keeps 15 bytes of it)",
                column=Column(width=16, order=-10),
                omit_empty=True,
            ),
            Field(
                "pid",
                Kind.STR,
                "the processes holding the program (ids, comma separated)",
                json="-",
                decode=_empty_strings,
                column=Column(width=16, order=999),
            ),
            Field(
                "comm",
                Kind.STR,
                "the processes holding the program (names, comma separated)",
                json="-",
                decode=_empty_strings,
                column=Column(width=16, order=1000),
            ),
            Field(
                "processes",
                Kind.LIST,
                "the processes holding the program, each {pid, comm}",
                decode=_no_holders,
                column=Column(
                    width=32,
                    hidden=True,
                    order=1000,
                    text=lambda ps: _joined([f"{p['pid']}:{p['comm']}" for p in ps]),
                ),
                omit_empty=True,
            ),
            Field(
                "runtime",
                Kind.INT,
                "ns the program ran during the interval",
                member="currentRuntime",
                json="currentRuntime",
                column=_RUNTIME,
                omit_empty=True,
            ),
            Field(
                "runcount",
                Kind.UINT,
                "times the program ran during the interval",
                member="currentRunCount",
                json="currentRunCount",
                column=Column(width=10, order=1002),
                omit_empty=True,
            ),
            Field(
                "cumulruntime",
                Kind.INT,
                "ns the program ran since the gadget started",
                member="cumulRuntime",
                json="cumulRuntime",
                column=Column(width=12, align="right", order=1003, hidden=True, text=go_duration),
                omit_empty=True,
            ),
            Field(
                "cumulruncount",
                Kind.UINT,
                "times the program ran since the gadget started",
                member="cumulRunCount",
                json="cumulRunCount",
                column=Column(width=13, order=1004, hidden=True),
                omit_empty=True,
            ),
            Field(
                "totalruntime",
                Kind.INT,
                "ns the program ran since it was loaded, while the kernel's stats were on",
                member="totalRuntime",
                json="totalRuntime",
                column=Column(width=12, align="right", order=1005, hidden=True, text=go_duration),
                omit_empty=True,
            ),
            Field(
                "totalRunCount",
                Kind.UINT,
                "times the program ran since it was loaded, while the kernel's stats were on",
                member="totalRunCount",
                json="totalRunCount",
                column=Column(width=13, align="right", order=1006, hidden=True),
                omit_empty=True,
            ),
            Field(
                "mapmemory",
                Kind.UINT,
                "bytes the kernel charges for the maps the program uses (their memlock; a map "
                "several programs use counts in each)",
                member="mapMemory",
                json="mapMemory",
                column=Column(width=10, align="right", order=1007, units="bytes"),
                omit_empty=True,
            ),
            Field(
                "mapcount",
                Kind.UINT,
                "how many maps the program uses",
                member="mapCount",
                json="mapCount",
                column=Column(width=8, order=1008),
                omit_empty=True,
            ),
            Field(
                "totalcpu",
                Kind.FLOAT,
                "% of one CPU the program took during the interval (over 100 on several CPUs)",
                member="totalCpuUsage",
                json="totalCpuUsage",
                column=Column(align="right", order=1009, hidden=True, text="{:.4f}".format),
                omit_empty=True,
            ),
            Field(
                "percpu",
                Kind.FLOAT,
                "totalcpu divided by the number of online CPUs",
                member="perCpuUsage",
                json="perCpuUsage",
                column=Column(align="right", order=1010, hidden=True, text="{:.4f}".format),
                omit_empty=True,
            ),
            *common_fields(),
        ]
    )

    def __init__(self) -> None:
        self.stats: RunTimeStats | None = None
        self.obj: BpfObject | None = None
        self.iterator: Link | None = None
        self.entry_dtype: np.dtype[Any] | None = None
        self.interval = 1.0
        self.cpus = online_cpus()
        self._start: dict[str, Any] | None = None
        self._prev: dict[str, Any] | None = None
        self._maps: MapMemory | None = None
        """The last interval's maps: those sized once are not read again."""

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return list(SORT_BY_DEFAULT)

    # -- lifecycle

    def init(self, ctx: GadgetContext) -> None:
        self.interval = float(ctx.runtime_params.get(PARAM_INTERVAL) or DEFAULT_INTERVAL)
        try:
            self.stats = RunTimeStats()
            with importlib.resources.as_file(
                importlib.resources.files(type(self).__module__) / self.bpf_object
            ) as path:
                self.obj = BpfObject.open(path)
            self.entry_dtype = self.obj.struct_dtype(ENTRY_STRUCT)
            ctx.schema = self.schema.bind(STAT_DTYPE)
            self.obj.load()
            self.iterator = self.obj.programs[ITERATOR].attach()
        except BaseException:
            self.close()
            raise
        ctx.logger.debug("bpf_stats", on=True, how="BPF_ENABLE_STATS")

    def close(self) -> None:
        if self.iterator is not None:
            self.iterator.destroy()
            self.iterator = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None
        if self.stats is not None:
            self.stats.close()
            self.stats = None

    def run(self, ctx: GadgetContext) -> None:
        """One window per interval, on a clock that starts with the run: with ``--timeout``
        a multiple of ``--interval``, the last tick falls on the deadline and is kept."""
        now = time.monotonic()
        start = now
        if ctx.timeout:
            start = now + ctx.remaining(float(ctx.timeout)) - float(ctx.timeout)
        self.sample()
        tick = start + self.interval
        while True:
            now = time.monotonic()
            if now >= tick - EARLY_S:
                ctx.emit(self.sample())
                ctx.end_window()
                while tick <= now + EARLY_S:
                    tick += self.interval
            if ctx.done:
                break
            time.sleep(max(0.0, min(tick - now, POLL_S)))
            ctx.heartbeat()

    # -- one interval

    def sample(self) -> Batch:
        """The rows of the interval since the last call (the first call sets the baseline),
        from the kernel's totals: a handful of C calls, no Python per program."""
        assert self.iterator is not None and self.entry_dtype is not None
        now = time.monotonic()
        self._maps = map_memory(self._maps)
        rows = program_stats(self._maps, room=len(self._prev["id"]) + 64 if self._prev else 256)
        holders = np.frombuffer(self.iterator.read(), dtype=self.entry_dtype)
        current: dict[str, Any] = {
            "id": rows["id"].copy(),
            "runtime": rows["run_time_ns"].astype(np.int64),
            "runcount": rows["run_cnt"].copy(),
            "at": now,
        }
        prev, self._prev = self._prev, current
        if self._start is None:
            self._start = current
        out = np.zeros(len(rows), dtype=STAT_DTYPE)
        out["progid"] = rows["id"]
        out["type_code"] = rows["type"]
        out["name"] = rows["name"]
        out["totalRuntime"] = current["runtime"]
        out["totalRunCount"] = current["runcount"]
        out["mapMemory"] = rows["map_memory"]
        out["mapCount"] = rows["map_count"]
        base = prev if prev is not None else current
        out["currentRuntime"], out["currentRunCount"] = _since(current, base)
        out["cumulRuntime"], out["cumulRunCount"] = _since(current, self._start)
        elapsed_ns = (now - base["at"]) * 1e9
        if elapsed_ns > 0:
            out["totalCpuUsage"] = 100.0 * out["currentRuntime"] / elapsed_ns
            out["perCpuUsage"] = out["totalCpuUsage"] / self.cpus
        return Batch(self.schema, out, holder_columns(rows["id"], holders))


def _since(current: dict[str, Any], base: dict[str, Any]) -> tuple[Any, Any]:
    """Run time and run count since ``base`` for each program of ``current`` (both ascend by
    id): a program that ``base`` does not have was loaded since, so all it did counts."""
    ids, base_ids = current["id"], base["id"]
    at = np.searchsorted(base_ids, ids)
    found = at < len(base_ids)
    found[found] = base_ids[at[found]] == ids[found]
    runtime = current["runtime"].copy()
    runcount = current["runcount"].copy()
    runtime[found] -= base["runtime"][at[found]]
    runcount[found] -= base["runcount"][at[found]]
    return runtime, runcount


def holder_columns(ids: Any, holders: Any) -> dict[str, Any]:
    """The ``pid``, ``comm`` and ``processes`` columns for programs ``ids`` (ascending), from
    the iterator's records: each process once per program, by pid. Python work is per
    program held by some process, not per program or per file."""
    n = len(ids)
    pid_col = np.empty(n, dtype=object)
    comm_col = np.empty(n, dtype=object)
    procs_col = np.empty(n, dtype=object)
    pid_col[:] = ""
    comm_col[:] = ""
    procs_col[:] = [[] for _ in range(n)]
    if len(holders) and n:
        order = np.lexsort((holders["pid"], holders["id"]))
        held = holders[order]
        keep = np.ones(len(held), dtype=bool)
        keep[1:] = (held["id"][1:] != held["id"][:-1]) | (held["pid"][1:] != held["pid"][:-1])
        held = held[keep]
        row = np.searchsorted(ids, held["id"])
        known = row < n
        known[known] = ids[row[known]] == held["id"][known]
        held, row = held[known], row[known]
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]]) if len(row) else row
        pids = held["pid"].tolist()
        comms = [c.partition(b"\0")[0].decode("utf-8", "replace") for c in held["comm"].tolist()]
        bounds = [*starts.tolist(), len(row)]
        for first, end in itertools.pairwise(bounds):
            r = int(row[first])
            group_pids, group_comms = pids[first:end], comms[first:end]
            pid_col[r] = _joined(group_pids)
            comm_col[r] = ",".join(group_comms)
            procs_col[r] = [
                {"pid": p, "comm": c} for p, c in zip(group_pids, group_comms, strict=True)
            ]
    return {"pid": pid_col, "comm": comm_col, "processes": procs_col}


def online_cpus() -> int:
    """CPUs online now (``/sys/devices/system/cpu/online``, as ``ig`` counts them)."""
    try:
        text = Path("/sys/devices/system/cpu/online").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        first, _, last = part.partition("-")
        count += int(last) - int(first) + 1 if last else 1
    return max(count, 1)


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TopEbpf)
