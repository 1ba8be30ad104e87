"""``--drop-root``: hide the events of uid 0, for every gadget whose events have a ``uid``.

A third-party igrun operator. It sees whole batches (numpy arrays), never one event at a
time, and it is not in the chain at all unless ``--drop-root`` is given.
"""

from __future__ import annotations

from collections.abc import Callable

from igrun.core import (
    PRIORITY_FILTER,
    Batch,
    Gadget,
    GadgetContext,
    Operator,
    ParamDesc,
    Params,
    TypeHint,
    hookimpl,
)


class DropRoot(Operator):
    name = "droproot"
    description = "hide events of uid 0"
    priority = PRIORITY_FILTER
    params = (
        ParamDesc(
            "drop-root",
            type_hint=TypeHint.BOOL,
            default="false",
            description="hide events of root (uid 0)",
        ),
    )

    @classmethod
    def can_operate_on(cls, gadget: type[Gadget]) -> bool:
        """Only gadgets with a ``uid`` field get the flag; elsewhere it would mean nothing."""
        return "uid" in gadget.schema

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        return cls(ctx, params) if params.get("drop-root") else None  # off: costs nothing

    def process(self, batch: Batch) -> Batch:
        keep = batch["uid"] != 0
        return batch if keep.all() else batch.take(keep)


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(DropRoot)
