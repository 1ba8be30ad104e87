"""``trace unlink``: files and directories removed, by whom, and whether it worked.

A third-party igrun gadget: a BPF program (``unlink.bpf.c``, compiled when the package is
built) plus the class below, which names the fields of its event once. It uses igrun's
public API only (``igrun.core``); who removed the file is igrun's ``struct gadget_process``,
shown by ``process_fields``.

Hooks the ``syscalls`` tracepoints of ``unlinkat``, ``unlink`` and ``rmdir``, a stable ABI:
no kprobe is needed. ``unlink`` and ``rmdir`` are optional programs: arm64 and the other
architectures of the generic syscall table have only ``unlinkat``, so their tracepoints are
missing there and igrun skips those programs before load (one line at ``-v``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from igrun.core import (
    Batch,
    BpfTracer,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    ParamDesc,
    Schema,
    TypeHint,
    errno_field,
    fields,
    hookimpl,
    process_fields,
)

AT_REMOVEDIR = 0x200


def flag_names(flags: int) -> str:
    """unlinkat's flags as text: ``AT_REMOVEDIR``, empty for none, hex for unknown bits."""
    names = ["AT_REMOVEDIR"] if flags & AT_REMOVEDIR else []
    rest = flags & ~AT_REMOVEDIR
    if rest:
        names.append(hex(rest))
    return "|".join(names)


def flag_texts(batch: Batch) -> Any:
    # Decoded once per distinct value: a batch holds thousands of removals, few flag values.
    return fields.per_distinct(batch.member("flags"), flag_names)


RIGHT = Column(min_width=7, align="right")


class TraceUnlink(BpfTracer):
    name = "unlink"
    category = Category.TRACE
    description = "Trace files and directories removed"
    bpf_object = "unlink.bpf.o"
    optional_programs: ClassVar[tuple[str, ...]] = (
        "ig_unlink_e",
        "ig_unlink_x",
        "ig_rmdir_e",
        "ig_rmdir_x",
    )
    """unlink(2) and rmdir(2) exist on x86_64, not on arm64: only unlinkat is needed."""
    params = (
        ParamDesc(
            "failed",
            type_hint=TypeHint.BOOL,
            default="false",
            description="show only removals that failed",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace unlink",
        "igrun trace unlink --host -o json",
        "igrun trace unlink --failed -o columns=+error",
    )
    schema = Schema(
        [
            fields.timestamp("when the call returned"),
            *process_fields(
                "mntns pid tid uid comm",
                tid={"description": "thread id that called it", "column": RIGHT},
                uid={"column": Column(hidden=True, align="right")},
            ),
            Field(
                "dirfd",
                Kind.INT,
                "directory a relative path is relative to (-100: the working directory)",
                column=Column(width=5, hidden=True, align="right"),
            ),
            Field(
                "path",
                Kind.STR,
                "path as passed (up to 4095 bytes)",
                column=Column(min_width=24, width=32),
            ),
            Field(
                "flags",
                Kind.STR,
                "unlinkat's flags (AT_REMOVEDIR: a directory, as rmdir)",
                decode=flag_texts,
                column=Column(width=12, hidden=True),
            ),
            Field(
                "ret",
                Kind.INT,
                "what the call returned: 0, or -errno",
                column=Column(width=4, fixed=True, align="right"),
            ),
            errno_field("why it failed (errno name), empty when it worked"),
        ],
        struct="event",
    )

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """The params as the ``const volatile`` globals of ``unlink.bpf.c``."""
        return {"failed_only": bool(ctx.gadget_params.get("failed"))}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceUnlink)
