"""``snapshot process``: the processes running now (every thread with ``--threads``).

A ``iter/task`` iterator walks every task of the host once and writes one record per process
(per thread with ``--threads``): pid, thread id, parent, real user and group ids, mount
namespace and command name, read from the task itself (``igrun/process.h``). Tasks outside
the selected containers are skipped in the kernel, with the run's mount-ns filter; the
containers operator names each row's container by its mount namespace.

As ``ig``'s: the columns, JSON keys (``pid``, ``tid``, ``ppid``, ``uid``, ``gid`` and
``comm`` always written) and the default sort (container, then command, pid, thread id and
parent). Where ``ig`` v0.25 gives the parent's thread id, igrun gives its process id, as
``/proc/PID/status`` and ``ps`` do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from igrun.core import (
    BpfSnapshot,
    Category,
    Column,
    GadgetContext,
    ParamDesc,
    Schema,
    TypeHint,
    hookimpl,
    process_fields,
)

PARAM_THREADS = "threads"

_TID_SHOWN = Column(min_width=7, align="right")


class SnapshotProcess(BpfSnapshot):
    name = "process"
    category = Category.SNAPSHOT
    description = "Gather information about running processes"
    bpf_object = "process.bpf.o"
    params = (
        ParamDesc(
            PARAM_THREADS,
            type_hint=TypeHint.BOOL,
            default="false",
            description="show all threads (by default, only processes are shown)",
        ),
    )
    param_defaults: ClassVar[Mapping[str, str]] = {"max-rows": "50"}
    """As ``ig``'s snapshots: at most 50 rows unless ``-m`` says otherwise (0: all)."""
    examples: ClassVar[tuple[str, ...]] = (
        "igrun snapshot process --host",
        "igrun snapshot process -c mycontainer --threads",
        "igrun snapshot process --host -o json --sort -pid",
        "igrun snapshot process --host --interval 2s -F comm:bash",
    )
    schema = Schema(
        process_fields(
            "comm pid tid uid gid ppid mntns",
            comm={"omit_empty": False},
            pid={"omit_empty": False},
            tid={
                "description": "thread id (a column with --threads)",
                "omit_empty": False,
                "column": Column(min_width=7, hidden=True, align="right"),
            },
            uid={"description": "real user id", "column": Column(min_width=8, align="right")},
            gid={"description": "real group id", "column": Column(min_width=8, align="right")},
            ppid={
                "description": "process id of the parent",
                "omit_empty": False,
                "column": Column(min_width=7, hidden=True, align="right"),
            },
        ),
        struct="process_entry",
    )

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return ["k8s.node", "k8s.namespace", "k8s.pod", "k8s.container", "comm", "pid", "tid",
                "ppid"]  # fmt: skip

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {"show_threads": bool(ctx.gadget_params.get(PARAM_THREADS))}

    def init(self, ctx: GadgetContext) -> None:
        super().init(ctx)
        if ctx.gadget_params.get(PARAM_THREADS) and ctx.schema is not None:
            # --threads shows the thread id column, as ig's "param:threads" column tag does.
            ctx.schema = ctx.schema.with_column("tid", _TID_SHOWN)


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(SnapshotProcess)
