"""``audit seccomp``: every syscall a seccomp filter acted on and logged, kprobe-free.

Two sources, merged:

- The kernel's audit stream (:mod:`.auditlog`): the ``AUDIT_SECCOMP`` records the kernel
  writes when a filter's action logs. ``kill_process``, ``kill_thread`` and ``log`` always
  do; ``trap``, ``errno``, ``trace`` and ``user_notif`` only for a filter loaded with
  ``SECCOMP_FILTER_FLAG_LOG``; each only while its name is in
  ``/proc/sys/kernel/seccomp/actions_logged``. The gadget adds the actions that should log
  (``kill_process kill_thread trap errno log``) to that sysctl when one is missing and puts
  back what was there when it stops (on every exit path but SIGKILL). ``allow`` is never
  logged. Misses: records the kernel drops (audit's backlog or rate limit, a full socket
  buffer: a warning says so) and every action of a filter without the log flag but kill
  and log.
- ``signal/signal_generate`` (a raw tracepoint, in BPF): the SIGSYS a filter forces on the
  thread for ``trap`` (and for a kill that dumps core), with the syscall from the siginfo.
  It catches traps of filters without the log flag, which the audit stream never shows,
  and names the thread (``tid``). A SIGSYS that no audit record claims within 0.3 s is
  reported on its own as ``trap``. Misses: ``errno``, ``log``, ``trace`` and
  ``user_notif`` (no signal) and a ``kill_thread`` of a thread that is not the last (it
  exits without a signal).

A record names the process (pid, the kernel's tgid, and comm), not the thread, and arrives
after the fact. The container is found by the process's mount namespace, looked up when the
record is read, in this order: the kernel side's record of a SIGSYS seccomp forced on that
process (also gives the thread); its record of the process exiting after the syscall
(sched/sched_process_exit: a killed or short-lived process); ``/proc/<pid>/ns/mnt`` of the
live process. When none is known the event has no mount namespace and no container: with a
container filter it is dropped (``-v`` logs a count). ``tid`` is known only with a SIGSYS
(0, left out, otherwise). 32-bit callers' syscalls are named from the native table.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    EnvironmentProblem,
    Field,
    Gadget,
    GadgetContext,
    Kind,
    Schema,
    fields,
    hookimpl,
    process_fields,
)
from igrun.core.bpf.objects import BpfObject, Reader
from igrun.core.events.fields import per_distinct
from igrun.core.events.syscalls import syscall_name
from igrun.core.run.headstart import take_head_start
from igrun.core.tracer import (
    MntnsFilter,
    head_start_differs,
    join_shared,
    open_object,
    package_object,
    pin_maps,
)
from igrun.plugins.audit_seccomp.auditlog import SeccompRecord, read_records
from igrun.plugins.audit_seccomp.stream import open_stream

ACTIONS_LOGGED = Path("/proc/sys/kernel/seccomp/actions_logged")
WANTED_ACTIONS = ("kill_process", "kill_thread", "trap", "errno", "log")
POLL_S = 0.1
EXIT_SLACK_NS = 5_000_000
"""An exit record counts for an audit record when it is no older than this before it (audit
time stamps have millisecond resolution)."""

SECCOMP_RET_ACTION_FULL = 0xFFFF0000
ACTION_NAMES = {
    0x80000000: "kill_process",
    0x00000000: "kill_thread",
    0x00030000: "trap",
    0x00050000: "errno",
    0x7FC00000: "user_notif",
    0x7FF00000: "trace",
    0x7FFC0000: "log",
    0x7FFF0000: "allow",
}
"""``SECCOMP_RET_*`` by name, as ``ig``'s ``codeToName``."""

EVENT_DTYPE = np.dtype(
    [
        ("timestamp", "<u8"),
        ("proc.mntns_id", "<u8"),
        ("proc.pid", "<u4"),
        ("proc.tid", "<u4"),
        ("proc.comm", "S16"),
        ("syscall_nr", "<u4"),
        ("code_value", "<u4"),
    ]
)
SEEN_DTYPE = np.dtype([("mntns_id", "<u8"), ("when", "<u8"), ("tid", "<u4"), ("pad", "<u4")])
SIGSYS_DTYPE = np.dtype(
    [
        ("timestamp", "<u8"),
        ("mntns_id", "<u8"),
        ("pid", "<u4"),
        ("tid", "<u4"),
        ("comm", "S16"),
        ("syscall", "<u4"),
        ("data", "<i4"),
        ("arch", "<u4"),
        ("pad", "<u4"),
    ]
)
"""``struct sigsys_event`` (``audit_seccomp.h``)."""
SECCOMP_RET_TRAP = 0x00030000
SIGSYS_WAIT_NS = 300_000_000
"""How long a SIGSYS waits for the audit record of the same call before it is reported on
its own, as a trap."""


def action_name(code: int) -> str:
    """``log`` for 0x7ffc0000: the action of a ``SECCOMP_RET_*`` value (its data bits off)."""
    return ACTION_NAMES.get(code & SECCOMP_RET_ACTION_FULL, "unknown")


def _syscall(batch: Batch) -> Any:
    return per_distinct(batch.member("syscall_nr"), syscall_name)


def _code(batch: Batch) -> Any:
    return per_distinct(batch.member("code_value"), action_name)


def boot_offset_ns() -> int:
    """Wall time minus boot time, now: turns an audit record's wall time into boot time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def proc_mntns(pid: int) -> int:
    """The mount namespace of a live process, 0 when it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return 0


class AuditSeccomp(Gadget):
    name = "seccomp"
    category = Category.AUDIT
    description = "Audit syscalls according to the seccomp profile"
    bpf_object: ClassVar[str] = "audit_seccomp.bpf.o"
    examples: ClassVar[tuple[str, ...]] = (
        "igrun audit seccomp",
        "igrun audit seccomp -c mycontainer -o json",
    )
    schema = Schema(
        [
            fields.timestamp("when the filter acted (audit time, millisecond resolution)"),
            *process_fields(
                "mntns pid tid comm",
                pid={"description": "process id (the kernel's tgid) that made the syscall"},
                tid={
                    "description": "thread that made the syscall (trap and kill only)",
                    "column": Column(min_width=7, hidden=True, align="right"),
                    "omit_empty": True,
                },
            ),
            Field(
                "syscall",
                Kind.STR,
                "the syscall the filter acted on, by name",
                decode=_syscall,
                column=Column(width=16),
                omit_empty=True,
            ),
            Field(
                "code",
                Kind.STR,
                "the filter's action: kill_process, kill_thread, trap, errno, log ...",
                decode=_code,
                column=Column(width=12, fixed=True),
                omit_empty=True,
            ),
        ],
    )

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.sock: socket.socket | None = None
        self._saved_actions: str | None = None
        self._filter: Any = None
        self._unknown = 0
        self.reader: Reader | None = None
        self._pending = np.zeros(0, dtype=SIGSYS_DTYPE)
        """SIGSYS events not yet matched with an audit record."""

    def init(self, ctx: GadgetContext) -> None:
        # The launcher's head start, when it ran: the audit stream opened and the object
        # attached while igrun was importing (records and SIGSYS events wait meanwhile).
        head = take_head_start(self.id())
        try:
            self._log_actions(ctx)
            opened = head.take_opened() if head is not None else None
            self.sock = opened if isinstance(opened, socket.socket) else None
            if self.sock is None:
                self.sock = self._open_stream()
            where = package_object(__name__, self.bpf_object)
            why = head_start_differs(ctx, head, where) if head is not None else "none"
            if head is not None and why is None:
                obj = self.obj = head.obj
            else:
                if head is not None:
                    head.discard()
                obj = self.obj = open_object(where)
                join_shared(ctx, obj)
                obj.load()
            if head is not None:
                ctx.logger.debug("head_start", used=why is None, why=why or "")
            assert obj is not None
            pin_maps(ctx, obj, self.id())
            self.reader = Reader.ring(
                obj.map("events"), SIGSYS_DTYPE.itemsize, lost_map=obj.map("gadget_lost_events")
            )
            if why is not None:
                obj.attach_all()
        except BaseException:
            if head is not None and head.obj is not None and head.obj is not self.obj:
                head.discard()  # not taken: its programs go now, not at the process's end
            self.close()
            raise
        shared = ctx.resources.get(MntnsFilter)
        self._filter = shared.map if shared is not None else None
        ctx.schema = self.schema.bind(EVENT_DTYPE)

    @staticmethod
    def _open_stream() -> socket.socket:
        try:
            return open_stream()
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot read the kernel's audit stream (needs CAP_AUDIT_READ and a "
                f"kernel with CONFIG_AUDIT): {exc.strerror or exc}"
            ) from None

    def _log_actions(self, ctx: GadgetContext) -> None:
        """Make the kernel log every action worth reporting, remembering what it did before."""
        try:
            before = ACTIONS_LOGGED.read_text().split()
        except OSError:
            return  # a kernel without the sysctl logs what it always did
        wanted = [a for a in WANTED_ACTIONS if a not in before]
        if not wanted:
            return
        try:
            ACTIONS_LOGGED.write_text(" ".join([*before, *wanted]))
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot make seccomp log {', '.join(wanted)} ({ACTIONS_LOGGED}): "
                f"{exc.strerror or exc}"
            ) from None
        self._saved_actions = " ".join(before)
        ctx.logger.info("seccomp_actions_logged", added=",".join(wanted))

    def _mntns_tid(self, record: SeccompRecord, offset: int) -> tuple[int, int]:
        assert self.obj is not None
        key = record.pid.to_bytes(4, "little")
        value = self.obj.map("sigsys").lookup(key)
        boot_ns = record.wall_ns - offset
        if value is not None:
            seen = np.frombuffer(value, dtype=SEEN_DTYPE)[0]
            if int(seen["when"]) + EXIT_SLACK_NS >= boot_ns:
                return int(seen["mntns_id"]), int(seen["tid"])
        value = self.obj.map("exited").lookup(key)
        if value is not None:
            seen = np.frombuffer(value, dtype=SEEN_DTYPE)[0]
            if int(seen["when"]) + EXIT_SLACK_NS >= boot_ns:
                return int(seen["mntns_id"]), 0
        return proc_mntns(record.pid), 0

    def _batch(self, ctx: GadgetContext, records: list[SeccompRecord]) -> Batch:
        assert ctx.schema is not None
        offset = boot_offset_ns()
        raw = np.zeros(len(records), dtype=EVENT_DTYPE)
        keep = np.ones(len(records), dtype=bool)
        for i, record in enumerate(records):  # records are few: a filter that logs is rare
            mntns, tid = self._mntns_tid(record, offset)
            tid = self._claim(record, record.wall_ns - offset) or tid
            if self._filter is not None and (
                not mntns or self._filter.lookup(mntns.to_bytes(8, "little")) is None
            ):
                keep[i] = False
                self._unknown += not mntns
                continue
            raw[i] = (
                record.wall_ns - offset,
                mntns,
                record.pid,
                tid,
                record.comm.encode()[:15],
                record.syscall,
                record.code,
            )
        return Batch(ctx.schema, raw[keep])

    def run(self, ctx: GadgetContext) -> None:
        assert self.sock is not None
        while not ctx.done:
            ready, _, _ = select.select([self.sock], [], [], ctx.remaining(POLL_S))
            self._step(ctx, bool(ready), final=False)
        self._step(ctx, True, final=True)
        if self._unknown:
            ctx.logger.info("audit_records_without_namespace", count=self._unknown)

    def _step(self, ctx: GadgetContext, readable: bool, final: bool) -> None:
        """Read what came (audit records, SIGSYS events), match them, emit one batch."""
        assert self.sock is not None and self.reader is not None
        records: list[SeccompRecord] = []
        if readable:
            # The kernel side sees the SIGSYS or the exit in the same moment the record is
            # queued; a short wait lets both land before they are looked up.
            time.sleep(0.01)
            records, overflowed = read_records(self.sock)
            if overflowed:
                ctx.logger.warning("audit_records_lost", reason="socket buffer full")
        signals = self.reader.records(0, SIGSYS_DTYPE)
        if signals is not None:
            self._pending = np.concatenate([self._pending, signals])
        lost = self.reader.lost()
        if lost:
            ctx.report_lost(lost)
        batch = self._batch(ctx, records)
        alone = self._unmatched(final)
        if len(alone):
            batch = Batch.concat([batch, self._trap_batch(ctx, alone)])
        if len(batch):
            ctx.emit(batch)
        else:
            ctx.heartbeat()

    def _unmatched(self, final: bool) -> Any:
        """SIGSYS events no audit record claimed in time (all of them at the end)."""
        if not len(self._pending):
            return self._pending
        now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        due = np.ones(len(self._pending), dtype=bool) if final else (
            self._pending["timestamp"] + SIGSYS_WAIT_NS <= now
        )  # fmt: skip
        out, self._pending = self._pending[due], self._pending[~due]
        return out

    def _claim(self, record: SeccompRecord, boot_ns: int) -> int:
        """The thread of the SIGSYS this record is about (0 when none): that SIGSYS is not
        reported again."""
        pending = self._pending
        if not len(pending):
            return 0
        hit = np.flatnonzero(
            (pending["pid"] == record.pid)
            & (pending["syscall"] == record.syscall)
            & (pending["timestamp"] <= boot_ns + SIGSYS_WAIT_NS)
        )
        if not len(hit):
            return 0
        tid = int(pending["tid"][hit[0]])
        self._pending = np.delete(pending, hit[0])
        return tid

    def _trap_batch(self, ctx: GadgetContext, alone: Any) -> Batch:
        """SIGSYS events without an audit record, as trap events (a filter without the log
        flag logs no trap; a kill is always logged once igrun set actions_logged)."""
        assert ctx.schema is not None
        raw = np.zeros(len(alone), dtype=EVENT_DTYPE)
        raw["timestamp"] = alone["timestamp"]
        raw["proc.mntns_id"] = alone["mntns_id"]
        raw["proc.pid"] = alone["pid"]
        raw["proc.tid"] = alone["tid"]
        raw["proc.comm"] = alone["comm"]
        raw["syscall_nr"] = alone["syscall"]
        raw["code_value"] = SECCOMP_RET_TRAP | (alone["data"].astype(np.uint32) & 0xFFFF)
        return Batch(ctx.schema, raw)

    def close(self) -> None:
        if self._saved_actions is not None:
            with contextlib.suppress(OSError):
                ACTIONS_LOGGED.write_text(self._saved_actions)
            self._saved_actions = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(AuditSeccomp)
