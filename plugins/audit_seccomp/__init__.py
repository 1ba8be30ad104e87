"""``audit seccomp``: every syscall a seccomp filter acted on and logged, kprobe-free.

Source: the kernel's audit stream (:mod:`.auditlog`), the ``AUDIT_SECCOMP`` records the
kernel writes when a filter returns an action that logs: ``kill_process``, ``kill_thread``,
``trap``, ``log``, ``errno`` and ``trace``/``user_notif`` only when the filter was loaded
with ``SECCOMP_FILTER_FLAG_LOG`` (runc does so for profiles that ask for it), and each only
while its name is in ``/proc/sys/kernel/seccomp/actions_logged``. The gadget adds the
actions that should log (``kill_process kill_thread trap errno log``) to that sysctl when
one is missing and puts back what was there when it stops, on every exit path but SIGKILL.
``allow`` is never logged. What it misses: records the kernel drops (audit's backlog limit
or rate limit, a full socket buffer: reported as lost events), and 32-bit callers' syscall
numbers are shown as numbers of their own table (``compat`` is not decoded).

A record names the process (pid, the kernel's tgid, and comm), not the thread, and arrives
after the fact. The container is found by the process's mount namespace, looked up when the
record is read, in this order: the kernel side's record of a SIGSYS forced by seccomp (trap,
kill) on that process (signal/signal_generate: also gives the thread, ``tid``); its record
of the process exiting after the syscall (sched/sched_process_exit: a killed or short-lived
process); ``/proc/<pid>/ns/mnt`` of the live process. When none is known the event has no
mount namespace and no container: with a container filter it is dropped (``-v`` logs a
count). ``tid`` is only known for trap and kill (0, left out, otherwise).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import select
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    Gadget,
    GadgetContext,
    Kind,
    Schema,
    fields,
    hookimpl,
    process_fields,
)
from igrun.core.bpf.objects import BpfObject
from igrun.core.events.fields import per_distinct
from igrun.core.events.syscalls import syscall_name
from igrun.core.tracer import MntnsFilter, open_object, pin_maps
from igrun.plugins.audit_seccomp.auditlog import SeccompRecord, open_stream, read_records

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
        self.sock: Any = None
        self._saved_actions: str | None = None
        self._filter: Any = None
        self._unknown = 0

    def init(self, ctx: GadgetContext) -> None:
        try:
            self._log_actions(ctx)
            self.sock = open_stream()
            obj = self.obj = open_object(importlib.resources.files(__name__) / self.bpf_object)
            obj.load()
            pin_maps(ctx, obj, self.id())
            obj.attach_all()
        except BaseException:
            self.close()
            raise
        shared = ctx.resources.get(MntnsFilter)
        self._filter = shared.map if shared is not None else None
        ctx.schema = self.schema.bind(EVENT_DTYPE)

    def _log_actions(self, ctx: GadgetContext) -> None:
        """Make the kernel log every action worth reporting, remembering what it did before."""
        try:
            before = ACTIONS_LOGGED.read_text().split()
        except OSError:
            return  # a kernel without the sysctl logs what it always did
        wanted = [a for a in WANTED_ACTIONS if a not in before]
        if not wanted:
            return
        self._saved_actions = " ".join(before)
        ACTIONS_LOGGED.write_text(" ".join([*before, *wanted]))
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
            if not ready:
                ctx.heartbeat()
                continue
            # The kernel side sees the SIGSYS or the exit in the same moment the record is
            # queued; a short wait lets both land before they are looked up.
            time.sleep(0.01)
            records, overflowed = read_records(self.sock)
            if overflowed:
                ctx.logger.warning("audit_records_lost", reason="socket buffer full")
            if records:
                ctx.emit(self._batch(ctx, records))
        if self._unknown:
            ctx.logger.info("audit_records_without_namespace", count=self._unknown)

    def close(self) -> None:
        if self._saved_actions is not None:
            with contextlib.suppress(OSError):
                ACTIONS_LOGGED.write_text(self._saved_actions)
            self._saved_actions = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.obj is not None:
            self.obj.close()
            self.obj = None


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(AuditSeccomp)
