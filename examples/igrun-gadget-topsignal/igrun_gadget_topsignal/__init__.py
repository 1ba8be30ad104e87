"""``top signal``: which process sends which signal to whom, and how often, every interval.

A third-party igrun interval gadget, the shape of ``ig``'s top gadgets: the BPF program
(``topsignal.bpf.c``) counts in a hash map, one row per sender, target and signal, and
:class:`~igrun.core.BpfTop` drains that map once per interval and prints the rows sorted by
count (one JSON array per interval with ``-o json``; on a terminal the screen is redrawn in
place, like ``top``). It uses igrun's public API only (``igrun.core``).

Hooks the ``signal/signal_generate`` tracepoint, which fires in the sender for every signal the
kernel generates: a stable ABI, no kprobe needed.
"""

from __future__ import annotations

import signal
from typing import Any, ClassVar

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
    fields,
    hookimpl,
    process_fields,
)


def signal_name(number: int) -> str:
    """``SIGUSR1`` for 10; the number itself for a signal Python has no name for."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def signal_names(batch: Batch) -> Any:
    # Once per distinct signal: an interval has many rows, few signals.
    return fields.per_distinct(batch.member("sig"), signal_name)


RIGHT = Column(min_width=7, align="right")


class TopSignal(BpfTop):
    name = "signal"
    category = Category.TOP
    description = "Show the signals sent, per sender, target and signal, every interval"
    bpf_object = "topsignal.bpf.o"
    key_struct = "signal_key"
    value_struct = "signal_counts"
    params = (
        ParamDesc(
            "signal",
            type_hint=TypeHint.INT,
            default="0",
            description="count only this signal number (e.g. 10 for SIGUSR1); 0 counts all",
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun top signal",
        "igrun top signal --interval 5s -m 10 -o json",
        "igrun top signal --signal 9",
    )
    schema = Schema(
        [
            *process_fields("mntns pid uid comm", about="of the sender"),
            Field("tpid", Kind.INT, "the task the signal was sent to", column=RIGHT),
            Field(
                "signal",
                Kind.STR,
                "the signal's name",
                member="sig",
                decode=signal_names,
                column=Column(width=10),
            ),
            Field("count", Kind.INT, "signals sent this interval", column=RIGHT),
        ],
    )

    @classmethod
    def sort_by_default(cls) -> list[str]:
        return ["-count", "pid", "tpid"]

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        """``--signal`` as the ``const volatile`` global of ``topsignal.bpf.c``."""
        return {"only_signal": int(ctx.gadget_params.get("signal"))}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TopSignal)
