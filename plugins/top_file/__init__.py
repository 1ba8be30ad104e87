"""``top file``: reads and writes per process and file, every interval.

Inspektor Gadget counts calls of the kernel's ``vfs_read`` and ``vfs_write`` with kprobes;
this gadget needs none. It counts the ``read``, ``write``, ``pread64``, ``pwrite64``,
``readv``, ``writev``, ``preadv``, ``pwritev``, ``preadv2`` and ``pwritev2`` syscalls through
their ``syscalls`` tracepoints, resolves the file from the descriptor in the kernel, and adds
the bytes each call actually moved (its return value, where ``ig`` adds the bytes asked for).
The kernel aggregates per thread and file (``ig``'s key) in a hash map, which igrun drains
once per interval; a key the map had no room for is reported as lost.

Without ``--all-files`` only regular files are counted, as in ``ig``; with it sockets
(``T`` = ``S``), pipes, terminals and the rest (``O``) too.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    BpfTop,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    ParamDesc,
    Schema,
    TypeHint,
    hookimpl,
    process_fields,
)

PARAM_ALL_FILES = "all-files"

_COUNT = Column(width=7, align="right")
_BYTES = Column(width=8, align="right", units="bytes")


_LETTERS = np.array([chr(c) if c else "" for c in range(256)], dtype=object)


def _type_letter(batch: Batch) -> Any:
    """The ``T`` column: ``R``, ``S`` or ``O`` from the kernel's type byte, for every row at
    once."""
    return _LETTERS[batch.member("file_type").astype(np.uint8)]


class TopFile(BpfTop):
    name = "file"
    category = Category.TOP
    description = "Periodically report read/write activity by file"
    bpf_object = "filetop.bpf.o"
    key_struct: ClassVar[str] = "file_key"
    value_struct: ClassVar[str] = "file_stats"
    params = (
        ParamDesc(
            PARAM_ALL_FILES,
            alias="a",
            type_hint=TypeHint.BOOL,
            default="false",
            description="include non-regular file types (sockets, FIFOs, etc)",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun top file",
        "igrun top file --all-files --interval 5s",
        "igrun top file -c web -o json --timeout 10s",
        "igrun top file --sort -wbytes -m 10",
    )
    schema = Schema(
        [
            *process_fields(
                "mntns pid tid comm",
                tid={"description": "thread id that read or wrote"},
            ),
            Field("reads", Kind.UINT, "read calls", column=_COUNT, omit_empty=True),
            Field("writes", Kind.UINT, "write calls", column=_COUNT, omit_empty=True),
            Field(
                "rbytes",
                Kind.UINT,
                "bytes read (what the calls returned)",
                column=_BYTES,
                omit_empty=True,
            ),
            Field(
                "wbytes",
                Kind.UINT,
                "bytes written (what the calls returned)",
                column=_BYTES,
                omit_empty=True,
            ),
            Field(
                "T",
                Kind.STR,
                "file type: R regular file, S socket, O other (pipe, terminal...)",
                decode=_type_letter,
                json="-",
                column=Column(width=1, max_width=1, fixed=True),
            ),
            Field(
                "fileType",
                Kind.UINT,
                "file type as ig writes it in JSON: the letter's byte (82 R, 83 S, 79 O)",
                member="file_type",
                column=Column(width=3, hidden=True, align="right"),
                omit_empty=True,
            ),
            Field(
                "file",
                Kind.STR,
                "file name (the last component of its path)",
                member="filename",
                json="filename",
                column=Column(min_width=16, width=32),
                omit_empty=True,
            ),
        ]
    )

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return ["-reads", "-writes", "-rbytes", "-wbytes"]

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {"regular_file_only": not ctx.gadget_params.get(PARAM_ALL_FILES)}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TopFile)
