"""``snapshot openfiles``: the files every process holds open, right now.

A third-party igrun snapshot gadget, the shape of ``ig``'s snapshot gadgets: the BPF program
(``openfiles.bpf.c``) is a ``task_file`` iterator that writes one record per open file
descriptor with ``bpf_seq_write``, and :class:`~igrun.core.BpfSnapshot` reads it once (once per
``--interval``), one C read into one numpy array, and prints the rows sorted by process and
descriptor. It uses igrun's public API only (``igrun.core``).

Container selection is done in the kernel (``-c NAME`` reads only the container's processes)
and every row names its container, from the process's mount namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from igrun.core import (
    Batch,
    BpfSnapshot,
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
)

FILE_TYPES = {
    0o010000: "FIFO",
    0o020000: "CHR",
    0o040000: "DIR",
    0o060000: "BLK",
    0o100000: "REG",
    0o120000: "LNK",
    0o140000: "SOCK",
}
"""The file type bits of ``i_mode`` (``S_IFMT``), as ``lsof`` names them."""


def file_type(mode: int) -> str:
    return FILE_TYPES.get(mode & 0o170000, "?")


def file_types(batch: Batch) -> Any:
    # Once per distinct mode: a snapshot has many files but few modes.
    return fields.per_distinct(batch.member("mode"), file_type)


RIGHT = Column(min_width=5, align="right")


class SnapshotOpenfiles(BpfSnapshot):
    name = "openfiles"
    category = Category.SNAPSHOT
    description = "Show the files each process holds open"
    bpf_object = "openfiles.bpf.o"
    params = (
        ParamDesc(
            "pid",
            type_hint=TypeHint.UINT,
            default="0",
            description="show only this process's files; 0 shows every process's",
        ),
    )
    param_defaults: ClassVar[Mapping[str, str]] = {"max-rows": "50"}
    """Like ``ig``'s snapshots: 50 rows unless ``-m`` says otherwise (``-m 0``: all)."""
    examples: ClassVar[tuple[str, ...]] = (
        "igrun snapshot openfiles -c mycontainer",
        "igrun snapshot openfiles --host --pid 1 -m 0",
        "igrun snapshot openfiles --host -F type:SOCK -o json",
    )
    schema = Schema(
        [
            *process_fields("mntns pid uid comm", uid={"column": Column(hidden=True)}),
            Field("fd", Kind.UINT, "file descriptor", column=RIGHT),
            Field(
                "type",
                Kind.STR,
                "file type (REG, DIR, SOCK...)",
                decode=file_types,
                column=Column(width=4),
            ),
            Field("inode", Kind.UINT, "inode number", column=Column(width=10, align="right")),
            Field(
                "path",
                Kind.STR,
                "path as the process sees it (socket:[inode] for a socket)",
                column=Column(width=40),
            ),
        ],
        struct="open_file",
    )

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return ["pid", "fd"]

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """``--pid`` as the ``const volatile`` global of ``openfiles.bpf.c``."""
        return {"target_pid": int(ctx.gadget_params.get("pid"))}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(SnapshotOpenfiles)
