"""``trace exec``: every program started on the host (or in the selected containers).

Hooks the ``syscalls`` tracepoints of ``execve`` and ``execveat``; a stable ABI, so it loads on
any kernel with BTF, kprobes or not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

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
    fields,
    hookimpl,
    process_fields,
    uid_field,
)
from igrun.core.tracer import BpfTracer

_RIGHT = Column(align="right")
_HIDDEN_RIGHT = Column(hidden=True, align="right")
_AUDIT = Column(width=10, hidden=True, align="right")
_CWD_COLUMN = Column(width=40)


def _args(batch: Batch) -> Any:
    """The NUL-separated argument buffer of each event as a list of strings."""
    out = np.empty(len(batch), dtype=object)
    rows = []
    for buf, count in zip(
        batch.member("args").tolist(), batch.member("args_count").tolist(), strict=True
    ):
        parts = buf.split(b"\0")[:count]
        parts += [b""] * (count - len(parts))  # numpy drops trailing NULs: empty last args
        rows.append([p.decode("utf-8", "replace") for p in parts])
    out[:] = rows
    return out


class TraceExec(BpfTracer):
    name = "exec"
    category = Category.TRACE
    description = "Trace new processes"
    bpf_object = "exec.bpf.o"
    params = (
        ParamDesc(
            "cwd",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show the working directory of the process that exec'd (the cwd "
            "column; read in the kernel, as getcwd would say it)",
        ),
        ParamDesc(
            "ignore-errors",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only execs that succeeded",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace exec",
        "igrun trace exec -o json --timeout 10s",
        "igrun trace exec -F comm:bash --ignore-errors",
        "igrun trace exec -o columns=+uid,+timestamp",
        "igrun trace exec --cwd",
    )
    schema = Schema(
        [
            fields.timestamp("when the exec started"),
            *process_fields(
                "mntns pid tid ppid uid gid",
                pid={"column": _RIGHT},
                tid={"description": "thread id that called exec"},
                uid={"column": _HIDDEN_RIGHT},
                gid={"column": _HIDDEN_RIGHT},
            ),
            uid_field("loginuid", "audit login user id", column=_AUDIT),
            Field("sessionid", Kind.UINT, "audit session id", column=_AUDIT),
            *process_fields(
                "comm",
                comm={
                    "description": "command name (of the new program when exec succeeded)",
                    "column": Column(),
                },
            ),
            Field(
                "ret",
                Kind.INT,
                "return value of exec (0 or -errno)",
                member="retval",
                column=Column(width=7, align="right", errno="returned"),
                omit_empty=True,
            ),
            Field(
                "args",
                Kind.LIST,
                "path and arguments (up to 20 of up to 127 bytes)",
                decode=_args,
                column=Column(width=40, cut_by="truncated"),
                omit_empty=True,
            ),
            Field(
                "upperlayer",
                Kind.BOOL,
                "the program's file is in the upper (written) layer of an overlay, as a file "
                "a container wrote itself",
                member="upper_layer",
                column=Column(width=10, fixed=True, hidden=True),
            ),
            Field(
                "truncated",
                Kind.BOOL,
                "arguments were cut (more than 20, or one too long)",
                member="args_truncated",
                column=Column(hidden=True),
            ),
            Field(
                "cwd",
                Kind.STR,
                "working directory of the process that exec'd (with --cwd)",
                column=Column(width=40, hidden=True),
                omit_empty=True,
            ),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {
            "ignore_failed": bool(ctx.gadget_params.get("ignore-errors")),
            "get_cwd": bool(ctx.gadget_params.get("cwd")),
        }

    def init(self, ctx: GadgetContext) -> None:
        super().init(ctx)
        if ctx.gadget_params.get("cwd") and ctx.schema is not None:
            # --cwd shows the column by default, as ig's column tag does; without it the
            # kernel leaves the directory empty, and JSON omits the key.
            ctx.schema = ctx.schema.with_column("cwd", _CWD_COLUMN)


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceExec)
