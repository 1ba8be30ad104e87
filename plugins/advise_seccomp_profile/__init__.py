"""``advise seccomp-profile``: the seccomp profile that allows what each container called.

The kernel side (``seccomp.bpf.c``) keeps one bitmap of syscall numbers per mount namespace,
set from the raw tracepoint ``sys_enter`` for the selected containers (the run's mount-ns
filter; every namespace with ``--host``). Nothing is sent per call: at the end of the run (on
``-t``, Ctrl-C or SIGTERM) each selected container's bitmap is read once and turned into the
OCI seccomp profile Docker, podman (``--security-opt seccomp=FILE``) and Kubernetes accept:
``defaultAction`` ``SCMP_ACT_ERRNO`` (errno EPERM), the syscalls seen allowed by name, the
architectures of the host as containerd and Inspektor Gadget list them. A container that
stops during the run has its bitmap read when it stops (its mount namespace's number may be
handed to another one soon after) and is printed at the end like the others.

runc's own work in the container (mounts, pivot_root ...) is left out: a runc process is
recorded only from the point where runc 1.x is about to load the container's seccomp filter
(see ``seccomp.bpf.c``); what it calls from there up to the container's program (setgroups,
capset, execve ...) is in the profile, as it must be. With runc 1.1 and podman, recording
``busybox true`` gives 40 syscalls of which busybox itself makes 13; the rest are runc's
between that point and the exec (its Go runtime included): capget, capset, setgroups,
setgid, setuid, prctl, chdir, getppid, getpid, getcwd, openat, getdents64, fcntl, close,
read, write, fstat, fstatfs, newfstatat, faccessat2, pipe2, epoll_ctl, epoll_pwait, futex,
nanosleep, sched_yield, tgkill, rt_sigreturn. Record from the container's start (start
igrun first: runc is held at each start until the container is known) for a profile that
lets it start; a container that runs already when the run begins has its start-up calls
missing.

A container that stops during the run is named while igrun still remembers it (the
containers operator keeps stopped containers for a while); after that its profile is
printed under its mount namespace's number.

Output: ``-o profile`` (the default) prints one profile per container, pretty-printed JSON,
ready to save as a file; with several containers each is preceded by a line
``--- <container name> ---``. ``-o json`` prints, per container, its name and the raw list of
syscall names (``syscalls``).
"""

from __future__ import annotations

import importlib.resources
import json
import platform
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    Gadget,
    GadgetContext,
    GadgetType,
    Kind,
    OutputFormat,
    Schema,
    fields,
    hookimpl,
)
from igrun.core.bpf.objects import BpfObject
from igrun.core.containers.collection import Container
from igrun.core.events.syscalls import syscall_table
from igrun.core.tracer import join_shared, open_object, pin_maps

SYSCALLS_MAP = "syscalls_per_mntns"
BLANK_MAP = "blank"
BITMAP_BYTES = 128
"""``struct syscalls`` (``seccomp.h``): 1024 bits."""

ARCHITECTURES: dict[str, list[str]] = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
}
"""The ``architectures`` of a profile made on each machine (containerd's and Inspektor
Gadget's ``Arches()``): the native one and those its kernel runs as compat."""
ARCHITECTURES["arm64"] = ARCHITECTURES["aarch64"]

PROFILE_FORMAT = "profile"

ROW_DTYPE = np.dtype([("timestamp", "<u8"), ("mntns_id", "<u8")])


def syscall_names(bitmap: bytes, table: Mapping[int, str]) -> list[str]:
    """The names of the syscalls whose bit is set, sorted (``syscall<N>`` for a number the
    table has no name for, as ``ig`` names it)."""
    bits = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")
    return sorted(table.get(int(n), f"syscall{int(n)}") for n in np.flatnonzero(bits))


def seccomp_profile(names: list[str], machine: str | None = None) -> dict[str, Any]:
    """The OCI seccomp profile that allows ``names`` and refuses everything else with EPERM."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ARCHITECTURES.get(machine or platform.machine(), []),
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}],
    }


def _name(row: Mapping[str, Any]) -> str:
    runtime = row.get("runtime") or {}
    return str(runtime.get("containerName") or row.get("mntns") or "")


def write_profiles(rows: list[dict[str, Any]]) -> bytes:
    """``-o profile``: one profile per container (a name line before each when several)."""
    parts = []
    for row in rows:
        text = json.dumps(seccomp_profile(list(row.get("syscalls") or [])), indent=2) + "\n"
        parts.append(f"--- {_name(row)} ---\n{text}" if len(rows) > 1 else text)
    return "".join(parts).encode()


def _syscalls(batch: Batch) -> Any:
    """Set by the gadget as a column (the rows are made in Python)."""
    return np.empty(len(batch), dtype=object)


class AdviseSeccompProfile(Gadget):
    name = "seccomp-profile"
    category = Category.ADVISE
    type = GadgetType.PROFILE
    description = "Generate seccomp profiles based on recorded syscalls activity"
    bpf_object: ClassVar[str] = "seccomp.bpf.o"
    param_defaults: ClassVar[Mapping[str, str]] = {"output": PROFILE_FORMAT}
    examples: ClassVar[tuple[str, ...]] = (
        "igrun advise seccomp-profile -c mycontainer -t 30s > profile.json",
        "igrun advise seccomp-profile -c mycontainer -o json",
    )
    schema = Schema(
        [
            fields.timestamp("when the container started (or was first seen)"),
            fields.mntns(),
            Field(
                "syscalls",
                Kind.LIST,
                "the syscalls the container made, by name, sorted",
                decode=_syscalls,
                column=Column(width=60),
            ),
        ],
    )

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self._lock = threading.Lock()
        self._containers: dict[str, tuple[Container, list[str] | None]] = {}
        """Each attached container by id, with its syscalls once read (when it stopped)."""
        self._attached: dict[str, int] = {}
        """Boot time each container was attached at (a time it surely ran)."""
        self._table = syscall_table()

    @classmethod
    def output_formats(cls) -> tuple[dict[str, OutputFormat], str]:
        """``-o profile``: the OCI seccomp profile of each container."""
        profile = OutputFormat(
            PROFILE_FORMAT,
            "an OCI seccomp profile per container",
            lambda batch: write_profiles(batch.to_dicts()),
            requires_combined_result=True,  # the whole run's rows, once
        )
        return {PROFILE_FORMAT: profile}, PROFILE_FORMAT

    def init(self, ctx: GadgetContext) -> None:
        obj = self.obj = open_object(importlib.resources.files(__name__) / self.bpf_object)
        try:
            join_shared(ctx, obj)
            obj.load()
            obj.map(BLANK_MAP).update(b"\0" * 4, b"\0" * BITMAP_BYTES)
            pin_maps(ctx, obj, self.id())
            obj.attach_all()
        except BaseException:
            self.close()
            raise
        ctx.schema = self.schema.bind(ROW_DTYPE)

    def attach_container(self, container: Container) -> None:
        with self._lock:
            self._containers[container.id] = (container, None)
            self._attached[container.id] = time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def detach_container(self, container: Container) -> None:
        """Read the container's syscalls now and forget its namespace's bitmap: the number
        may soon belong to another container."""
        names = self._read(container.mntns, delete=True)
        with self._lock:
            if container.id in self._containers:
                self._containers[container.id] = (container, names)

    def _read(self, mntns: int, delete: bool = False) -> list[str]:
        if self.obj is None or not mntns:
            return []
        key = mntns.to_bytes(8, "little")
        seen = self.obj.map(SYSCALLS_MAP)
        bitmap = seen.lookup(key)
        if delete and bitmap is not None:
            seen.delete(key)
        return syscall_names(bitmap, self._table) if bitmap is not None else []

    def run(self, ctx: GadgetContext) -> None:
        while not ctx.done:
            time.sleep(ctx.remaining(0.1))
        with self._lock:
            held = list(self._containers.values())
        rows = [(c, names if names is not None else self._read(c.mntns)) for c, names in held]
        rows.sort(key=lambda row: row[0].name)
        assert ctx.schema is not None
        raw = np.zeros(len(rows), dtype=ROW_DTYPE)
        raw["mntns_id"] = [c.mntns for c, _ in rows]
        # Its start names the container (a stopped one too, while igrun remembers it): the
        # containers operator matches a time in its life to its mount namespace.
        raw["timestamp"] = [c.started_ns or self._attached.get(c.id, 0) for c, _ in rows]
        column = np.empty(len(rows), dtype=object)
        for i, (_, names) in enumerate(rows):  # one list per cell, never a 2-D array
            column[i] = names
        ctx.emit(Batch(ctx.schema, raw, {"syscalls": column}))

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(AdviseSeccompProfile)
