"""``profile cpu``: where the CPUs spend their time, as sampled stacks.

A software CPU-clock perf event on every online CPU (no hardware PMU needed) runs a BPF program
49 times a second on each CPU by default (``ig``'s rate); it counts each (process, user stack,
kernel stack) in the kernel, and nothing crosses to user space until the run ends (timeout,
Ctrl-C, SIGTERM). Then the counts and the stacks are read once and every frame is named: kernel
frames from ``/proc/kallsyms``, user frames from the ELF symbols of each binary, opened through
``/proc/<pid>/root`` (a container's own files); a frame that cannot be named reads
``module+0xoffset``. The result is one row per stack: ``ig``'s columns and JSON (``comm``,
``pid``, ``count``, ``userStack`` and ``kernelStack``, innermost frame first), or the gadget's
own formats: folded stacks, pprof, or an interactive flame-graph SVG (docs/profiling.md).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    ParamDesc,
    Schema,
    TypeHint,
    hookimpl,
)
from igrun.core.errors import IgrunError, ParamError
from igrun.core.events import fields
from igrun.core.gadget import PARAM_INTERVAL, Gadget, GadgetType, OutputFormat
from igrun.plugins.profile_cpu import formats
from igrun.plugins.profile_cpu.symbolize import UNKNOWN_MODULE, Symbolizer

DEFAULT_FREQUENCY = 49
"""Samples a second per CPU: ``ig`` v0.25's ``perfSampleFreq`` (a prime, so sampling does not
beat in step with timers)."""
MAX_STACK_DEPTH = 127
DEFAULT_STACK_STORAGE = 16384
"""Slots of the stack map (about 1 KiB of kernel memory each), as bcc's profile."""
MAX_STACK_STORAGE = 1 << 20
STACK_NOT_COLLECTED = 0x7FFFFFFF
"""A stack id the BPF side writes for the stack ``-U`` or ``-K`` leaves out."""
MODULES_COLUMN = "userModules"
"""The column beside the fields with each user frame's module (the metrics operator's
``MODULES_COLUMN``; not imported from it, which would cost every run its import)."""
EFAULT, EEXIST = 14, 17
REMEMBER_EVERY_S = 0.25
"""How often the run looks for processes not seen yet, to read their mappings while they
run (a process that exits before the end is still named)."""
TICK_S = 0.1


def _missing(batch: Batch) -> Any:
    """Stacks come with the batch (:meth:`ProfileCpu.result`); a batch without them has none."""
    out = np.empty(len(batch), dtype=object)
    out[:] = [[] for _ in range(len(batch))]
    return out


def _parse_storage(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ParamError(f"--stack-storage-size: {value!r} is not a whole number") from None
    if not 1 <= n <= MAX_STACK_STORAGE:
        raise ParamError(f"--stack-storage-size: {n} is outside 1-{MAX_STACK_STORAGE}")
    return n


def _parse_frequency(value: str) -> int:
    try:
        hz = int(value)
    except ValueError:
        raise ParamError(f"--frequency: {value!r} is not a whole number of Hz") from None
    if not 1 <= hz <= 10_000:
        raise ParamError(f"--frequency: {hz} Hz is outside 1-10000")
    return hz


ROW = np.dtype(
    {
        "names": ["mntns_id", "pid", "user_stack_id", "kern_stack_id", "comm", "count"],
        "formats": ["<u8", "<u4", "<i4", "<i4", "S16", "<u8"],
        "offsets": [0, 8, 12, 16, 20, 40],
        "itemsize": 48,
    }
)
"""One row: ``struct profile_key`` (profile.h, 40 bytes with its padding) then its count."""
KEY_PID = np.dtype(
    {
        "names": ["pid", "user_stack_id", "comm"],
        "formats": ["<u4", "<i4", "S16"],
        "offsets": [8, 12, 20],
        "itemsize": 40,
    }
)


class ProfileCpu(Gadget):
    """Inspektor Gadget's ``profile cpu``: same name, flags (``-U``, ``-K``), columns, JSON keys
    and order (ascending count), and user frames named (``ig`` v0.25 shows ``[unknown]``)."""

    name = "cpu"
    category = Category.PROFILE
    type = GadgetType.PROFILE
    description = "Analyze CPU performance by sampling stack traces"
    bpf_object = "profile.bpf.o"
    params = (
        ParamDesc(
            "user-stack",
            alias="U",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show stacks from user space only (no kernel space stacks)",
        ),
        ParamDesc(
            "kernel-stack",
            alias="K",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show stacks from kernel space only (no user space stacks)",
        ),
        ParamDesc(
            "frequency",
            type_hint=TypeHint.INT,
            default=str(DEFAULT_FREQUENCY),
            description="samples a second on each CPU (ig's 49)",
            check=_parse_frequency,
        ),
        ParamDesc(
            "stack-storage-size",
            type_hint=TypeHint.INT,
            default=str(DEFAULT_STACK_STORAGE),
            description="distinct stacks the kernel can keep (a stack whose slot is taken by "
            "another reads [stack lost: stack map collision]; a warning says how many)",
            check=_parse_storage,
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun profile cpu --timeout 10s",
        "igrun profile cpu -c mycontainer --timeout 30s -o svg > flame.svg",
        "igrun profile cpu --host -K --timeout 5s -o folded",
        "igrun profile cpu --host --timeout 60s -o pprof > cpu.pb.gz",
    )
    schema = Schema(
        [
            dataclasses.replace(fields.mntns(), json="-"),  # ig's MntnsID is json:"-"
            Field("comm", Kind.STR, "command name", column=Column(max_width=16), omit_empty=True),
            Field(
                "pid",
                Kind.UINT,
                "process id",
                column=Column(min_width=7, align="right"),
                omit_empty=True,
            ),
            Field(
                "userStack",
                Kind.LIST,
                "user frames, innermost first",
                decode=_missing,
                column=Column(hidden=True),
                omit_empty=True,
            ),
            Field(
                "kernelStack",
                Kind.LIST,
                "kernel frames, innermost first",
                decode=_missing,
                column=Column(hidden=True),
                omit_empty=True,
            ),
            Field(
                "count",
                Kind.UINT,
                "samples of this stack",
                column=Column(align="right"),
                omit_empty=True,
            ),
        ],
        struct="profile_key",
    )

    counts_entries: ClassVar[int] = 0
    """The counts map's ``max_entries`` (distinct stacks per run); 0 keeps the object's
    10,240, ``ig``'s ``MAX_ENTRIES``."""

    def __init__(self) -> None:
        self.obj: Any = None
        self.symbolizer = Symbolizer()
        self.frequency = DEFAULT_FREQUENCY
        self.started = 0.0
        self.duration_ns = 0
        self.lost_reported = 0
        self.collided = 0
        """Samples whose stack was lost to a collision in the stack map, this run."""
        self.result: Batch | None = None
        """The run's rows, once it has ended (what the output formats transform)."""

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return ["count"]  # ig prints the busiest stack last, nearest the prompt

    def output_formats(self) -> tuple[dict[str, OutputFormat], str]:
        """ig's table with the stacks under each row (the default, as ``ig`` prints it),
        folded stacks, pprof and a flame-graph SVG, from the run's rows (after sort, filter
        and limit); igrun's plain ``columns`` and ``json`` stay available."""
        period = 1_000_000_000 // self.frequency
        found = {
            "stacks": OutputFormat(
                "stacks",
                "ig's columns with each stack's frames under its row (ig's default output)",
                formats.to_stacks,
                requires_combined_result=True,
            ),
            "folded": OutputFormat(
                "folded",
                "folded stacks, one 'comm;frame;...;frame count' line per stack "
                "(flamegraph.pl, speedscope, inferno)",
                formats.to_folded,
                requires_combined_result=True,
            ),
            "pprof": OutputFormat(
                "pprof",
                "gzipped pprof profile.proto (go tool pprof, Grafana Pyroscope)",
                # The run's duration is known at its end, when the transform is called.
                lambda result: formats.to_pprof(
                    result, period_ns=period, duration_ns=self.duration_ns
                ),
                requires_combined_result=True,
            ),
            "svg": OutputFormat(
                "svg",
                "interactive flame graph (SVG: click to zoom, search), e.g. > flame.svg",
                functools.partial(formats.to_svg, title="CPU profile (igrun profile cpu)"),
                requires_combined_result=True,
            ),
        }
        return found, "stacks"

    # -- lifecycle

    def init(self, ctx: GadgetContext) -> None:
        import importlib.resources

        from igrun.core.bpf.objects import online_cpus
        from igrun.core.tracer import join_shared, open_object, pin_maps

        p = ctx.gadget_params
        user_only, kernel_only = bool(p.get("user-stack")), bool(p.get("kernel-stack"))
        if user_only and kernel_only:
            raise ParamError("--user-stack and --kernel-stack exclude each other")
        self.frequency = _parse_frequency(str(p.get("frequency") or DEFAULT_FREQUENCY))
        where = importlib.resources.files(__name__) / self.bpf_object  # subclasses too
        obj = self.obj = open_object(where)
        try:
            obj.set_global("user_stacks_only", user_only)
            obj.set_global("kernel_stacks_only", kernel_only)
            join_shared(ctx, obj)
            if self.counts_entries:
                obj.set_max_entries("counts", self.counts_entries)
            storage = _parse_storage(str(p.get("stack-storage-size") or DEFAULT_STACK_STORAGE))
            obj.set_max_entries("stacks", storage)
            key = obj.struct_dtype("profile_key", nested=True)
            if key.itemsize + 8 != ROW.itemsize:
                raise IgrunError(
                    f"struct profile_key is {key.itemsize} bytes, not {ROW.itemsize - 8}"
                )
            ctx.schema = self.schema.bind(ROW)
            obj.load()
            counts = obj.map("counts")
            if (counts.key_size, counts.value_size) != (key.itemsize, 8):
                raise IgrunError(
                    f"map counts holds {counts.key_size}-byte keys and {counts.value_size}-byte "
                    f"values, not struct profile_key ({key.itemsize}) and a u64"
                )
            pin_maps(ctx, obj, self.id())
            program = obj.programs["ig_prof_cpu"]
            for cpu in online_cpus():
                obj.keep(program.attach_perf_event(cpu, self.frequency))
        except BaseException:
            self.close()
            raise

    def run(self, ctx: GadgetContext) -> None:
        self.started = time.monotonic()
        due = self.started + REMEMBER_EVERY_S
        every = float(ctx.runtime_params.get(PARAM_INTERVAL) or 0.0)
        report_due = self.started + every if every else None
        while not ctx.done:
            ctx.heartbeat()
            time.sleep(ctx.remaining(TICK_S))
            if time.monotonic() >= due:
                ctx.logger.debug("processes_remembered", count=self.remember_processes())
                due = time.monotonic() + REMEMBER_EVERY_S
            if report_due is not None and time.monotonic() >= report_due:
                report_due += every
                self.report(ctx, interval=True)
                ctx.end_window()
        self.report(ctx, interval=bool(every))
        if self.collided:
            ctx.logger.warning(
                "stacks_lost",
                samples=self.collided,
                hint="two stacks hashed to one slot of the stack map: a larger "
                "--stack-storage-size keeps more",
            )

    def report(self, ctx: GadgetContext, interval: bool) -> None:
        """Emit the stacks counted so far, named. With ``--interval`` each report takes its
        counts out of the map (each interval counts from zero, as the histogram gadgets do,
        and a long run never fills the map)."""
        now = time.monotonic()
        self.duration_ns = int((now - self.started) * 1e9)
        self.started = now
        self.remember_processes()
        rows = self.read(delete=interval)
        rows = rows[np.argsort(rows["count"], kind="stable")]  # ig's order: ascending count
        self.result = self.rows_batch(ctx.schema or self.schema.bind(ROW), rows)
        self._report_lost(ctx)
        self.collided += int(
            rows["count"][
                (rows["user_stack_id"] == -EEXIST) | (rows["kern_stack_id"] == -EEXIST)
            ].sum()
        )  # warned about once, at the end (not every interval)
        ctx.emit(self.result)

    def remember_processes(self) -> int:
        """Read the mappings of the processes sampled so far (one batched read of the
        counts), while they still run; how many keys the counts map holds."""
        counts = self.obj.map("counts")
        keys, _, _ = counts.drain(delete=False)
        if len(keys):
            found = np.ascontiguousarray(keys).view(KEY_PID).reshape(-1)
            # Only processes with a user stack need their mappings (not kernel threads).
            seen = np.unique(found[["pid", "comm"]][_collected(found["user_stack_id"])])
            self.symbolizer.remember(seen["pid"].tolist(), seen["comm"].tolist())
        return len(keys)

    def read(self, delete: bool = False) -> np.ndarray[Any, Any]:
        """Every (key, count) of the counts map, in one batched read (``delete``: taken out
        of the map)."""
        counts = self.obj.map("counts")
        keys, values, _ = counts.drain(delete=delete)
        rows = np.empty(len(keys), ROW)
        raw = rows.view(np.uint8).reshape(len(keys), ROW.itemsize)
        raw[:, : counts.key_size] = keys
        raw[:, counts.key_size :] = values
        return rows

    def rows_batch(self, schema: Schema, rows: np.ndarray[Any, Any]) -> Batch:
        """The rows with their stacks named."""
        stacks = self.obj.map("stacks")
        user, kernel, modules = symbolize_rows(self.symbolizer, stacks, rows, modules=True)
        # The modules ride beside the fields, not as one: no output shows them; per-function
        # metrics label the frames with them (they follow the rows through filters and sort).
        columns = {"userStack": user, "kernelStack": kernel, MODULES_COLUMN: modules}
        return Batch(schema, rows, columns=columns)

    def _report_lost(self, ctx: GadgetContext) -> None:
        from igrun.core.tracer import LOST_EVENTS_MAP

        if not self.obj.has_map(LOST_EVENTS_MAP):
            return
        counts = self.obj.map(LOST_EVENTS_MAP).lookup_per_cpu((0).to_bytes(4, "little")) or []
        total = sum(int.from_bytes(c[:8], "little") for c in counts)
        if total > self.lost_reported:  # the map keeps the run's total: report what is new
            ctx.report_lost(total - self.lost_reported)
            self.lost_reported = total

    def close(self) -> None:
        self.symbolizer.close()
        if self.obj is not None:
            self.obj.close()
            self.obj = None


def _collected(ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Which stack ids point into the stack map (not an error, not left out)."""
    collected: np.ndarray[Any, Any] = (ids >= 0) & (ids != STACK_NOT_COLLECTED)
    return collected


def _lost_frame(stack_id: int) -> list[str]:
    if stack_id == STACK_NOT_COLLECTED or stack_id == -EFAULT:
        return []  # not asked for (-U, -K), or none (a kernel thread has no user stack)
    if stack_id == -EEXIST:
        return ["[stack lost: stack map collision]"]
    return [f"[stack lost: error {-stack_id}]"]


def stack_frames(
    stacks: Any, ids: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The addresses of each stack id (rows of :data:`MAX_STACK_DEPTH`, zero after the last
    frame; one C loop over the stack map) and whether each was there."""
    values, found = stacks.lookup_many(ids.astype("<u4"))
    depth = stacks.value_size // 8
    return values.view("<u8").reshape(len(ids), depth), found


def symbolize_rows(
    symbolizer: Symbolizer, stacks: Any, rows: np.ndarray[Any, Any], modules: bool = False
) -> Any:
    """Each row's user and kernel frames (lists of names, innermost first); with ``modules``
    a third array, the module of each user frame."""
    n = len(rows)
    user = np.empty(n, dtype=object)
    kernel = np.empty(n, dtype=object)
    user_modules = np.empty(n, dtype=object)
    kids, uids, pids = rows["kern_stack_id"], rows["user_stack_id"], rows["pid"]
    # Kernel stacks: one name per distinct address, the same for every process.
    valid = np.unique(kids[_collected(kids)])
    by_id: dict[int, list[str]] = {}
    if len(valid):
        frames, found = stack_frames(stacks, valid)
        names = _split(frames, symbolizer.kernel_names(frames[frames != 0]))
        by_id = {
            k: (names[i] if found[i] else ["[stack lost: evicted]"])
            for i, k in enumerate(valid.tolist())
        }
    for i, k in enumerate(kids.tolist()):
        kernel[i] = by_id[k] if k in by_id else _lost_frame(k)
    # User stacks: addresses mean something only in their process.
    valid = np.unique(uids[_collected(uids)])
    named: dict[tuple[int, int], list[str]] = {}
    named_modules: dict[tuple[int, int], list[str]] = {}
    if len(valid):
        frames, found = stack_frames(stacks, valid)
        slot = {k: i for i, k in enumerate(valid.tolist())}
        pairs = {(p, u) for p, u in zip(pids.tolist(), uids.tolist(), strict=True) if u in slot}
        per_pid: dict[int, list[int]] = {}
        for p, u in pairs:
            per_pid.setdefault(p, []).append(u)
        for p, ids in per_pid.items():
            sub = frames[[slot[u] for u in ids]]
            frame_names, frame_modules = symbolizer.user_frames(p, sub[sub != 0])
            names, mods = _split(sub, frame_names), _split(sub, frame_modules)
            for j, u in enumerate(ids):
                there = bool(found[slot[u]])
                named[(p, u)] = names[j] if there else ["[stack lost: evicted]"]
                named_modules[(p, u)] = mods[j] if there else [UNKNOWN_MODULE]
    for i, (p, u) in enumerate(zip(pids.tolist(), uids.tolist(), strict=True)):
        user[i] = named[(p, u)] if (p, u) in named else _lost_frame(u)
        user_modules[i] = (
            named_modules[(p, u)] if (p, u) in named else [UNKNOWN_MODULE] * len(user[i])
        )
    if modules:
        return user, kernel, user_modules
    return user, kernel


def _split(frames: np.ndarray[Any, Any], names: np.ndarray[Any, Any]) -> list[list[str]]:
    """``names`` (of the non-zero addresses of ``frames``, row by row) cut back into rows."""
    ends = np.cumsum((frames != 0).sum(axis=1)).tolist()
    flat = names.tolist()
    return [flat[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(ProfileCpu)
