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
    OutputFormat,
    ParamDesc,
    Schema,
    TypeHint,
    hookimpl,
    process_fields,
)

PARAM_THREADS = "threads"
NO_CONTAINER = "(no container)"
"""The heading of the processes of no container in ``-o tree``."""


def write_tree(rows: list[dict[str, Any]]) -> bytes:
    """``-o tree``, as ``ig``'s: per container (its Kubernetes namespace and pod first, where
    it has them), each process under its parent, one tab deeper, as ``|-comm(pid)``.

    Rows come in the window's order (the default sort: comm, then pid), and so do siblings.
    A process whose parent is not in the container's rows starts a tree of its own: the host's
    processes are a forest (``ig`` refuses more than one root), and so is a container's whose
    first process is gone. Threads (``--threads``) are shown once, as their process."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["tid"] != row["pid"]:
            continue
        k8s, runtime = row.get("k8s", {}), row.get("runtime", {})
        key = (k8s.get("namespace", ""), k8s.get("podName", ""), runtime.get("containerName", ""))
        groups.setdefault(key, []).append(row)
    out: list[str] = []
    for (namespace, pod, name), procs in groups.items():
        by_pid = {p["pid"]: p for p in procs}
        children: dict[int, list[dict[str, Any]]] = {}
        for p in procs:
            children.setdefault(p["ppid"] if p["ppid"] in by_pid else 0, []).append(p)
        heading = f"{namespace}/" if namespace else ""
        heading += f"{pod}/" if pod and pod != name else ""
        out.append(heading + (name or NO_CONTAINER))
        stack = [(p, 0) for p in reversed(children.get(0, []))]
        while stack:
            p, depth = stack.pop()
            out.append(f"{chr(9) * depth}|-{p['comm']}({p['pid']})")
            stack += [(c, depth + 1) for c in reversed(children.get(p["pid"], []))]
    return "".join(line + "\n" for line in out).encode()


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
    def output_formats(cls) -> tuple[dict[str, OutputFormat], str]:
        """``-o tree``: each container's processes as a tree, as ``ig``'s ``pstree`` output."""
        tree = OutputFormat(
            "tree",
            "A pstree like output",
            lambda batch: write_tree(batch.to_dicts()),
            requires_combined_result=True,
        )
        return {"tree": tree}, "columns"

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
