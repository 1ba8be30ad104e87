"""``top block-io``: block device I/O per process, disk and direction, every interval.

Inspektor Gadget's ``top block-io`` needs kprobes (``blk_account_io_start``,
``blk_mq_start_request``, ``blk_account_io_done``). This one hooks the block layer's
tracepoints at the same places, as ``tp_btf`` programs that receive the ``struct request``
(``blockio.bpf.c``): the request is attributed to the task that submitted it, at
``block_io_start``, even when a worker issues it or an interrupt completes it. The rows are
summed in a hash map that is drained once per interval. ``block_io_start`` came with Linux
6.5: older kernels refuse to load the object.

As in ``ig``: the bytes are the request's size when issued (bios merged into it included), the
time runs from issue to completion, a request that is not a write counts as ``R`` (flushes and
discards too), and I/O submitted before the gadget started counts under pid 0. Buffered writes
are submitted by the kernel's writeback workers, so they show under those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from igrun.core import Batch, BpfTop, Category, Column, Field, Kind, Schema, fields, hookimpl

_RIGHT = Column(align="right")
SORT_BY_DEFAULT = ("-ops", "-bytes", "-time")
"""ig's ``SortByDefault`` for top block-io."""


def _direction(batch: Batch) -> Any:
    """``W`` for a write, ``R`` for anything else, as ``ig``'s ``r/w`` column."""
    return np.where(batch.member("write") != 0, "W", "R").astype(object)


class TopBlockIo(BpfTop):
    name = "block-io"
    category = Category.TOP
    description = "Periodically report block device I/O activity"
    bpf_object = "blockio.bpf.o"
    key_struct = "block_key"
    value_struct = "block_stats"
    param_defaults: ClassVar[Mapping[str, str]] = {
        **BpfTop.param_defaults,
        "sort": ",".join(SORT_BY_DEFAULT),  # shown in --help, as ig shows it
    }
    examples: ClassVar[tuple[str, ...]] = (
        "igrun top block-io",
        "igrun top block-io --interval 5s -m 10 --sort -bytes",
        "igrun top block-io -o json --timeout 10s",
        "igrun top block-io -F r/w:W -o columns=pid,comm,major,minor,bytes",
    )
    schema = Schema(
        [
            fields.mntns("mount namespace id of the process that submitted the I/O"),
            Field(
                "pid",
                Kind.UINT,
                "process id that submitted the I/O (0 when it was submitted before the gadget "
                "started)",
                column=Column(min_width=7, align="right"),
                omit_empty=True,
            ),
            Field(
                "comm",
                Kind.STR,
                "command name of that process",
                column=Column(max_width=16),
                omit_empty=True,
            ),
            Field(
                "r/w",
                Kind.STR,
                "W for writes, R for reads and every other operation",
                decode=_direction,
                json="-",
                column=Column(width=3, max_width=3, fixed=True),
            ),
            Field(
                "write",
                Kind.BOOL,
                "whether the I/O is a write (the r/w column)",
                column=Column(hidden=True),
                omit_empty=True,
            ),
            Field("major", Kind.UINT, "major number of the disk", column=_RIGHT, omit_empty=True),
            Field(
                "minor",
                Kind.UINT,
                "first minor number of the disk",
                column=_RIGHT,
                omit_empty=True,
            ),
            Field(
                "bytes",
                Kind.UINT,
                "bytes of the requests completed in the interval (their size when issued)",
                column=Column(width=10, align="right"),
                omit_empty=True,
            ),
            Field(
                "time",
                Kind.UINT,
                "microseconds from issue to completion, summed over those requests",
                member="us",
                json="us",
                column=Column(width=10, align="right"),
                omit_empty=True,
            ),
            Field(
                "ops",
                Kind.UINT,
                "requests completed in the interval",
                column=Column(width=6, align="right"),
                omit_empty=True,
            ),
        ],
    )

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return list(SORT_BY_DEFAULT)


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TopBlockIo)
