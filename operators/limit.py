"""``-m N``: at most N rows — in all for a stream (which then ends), or per window."""

from __future__ import annotations

from collections.abc import Callable

from igrun.core.events.schema import Batch
from igrun.core.gadget import GadgetContext
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import PRIORITY_LIMIT, Operator
from igrun.core.params import ParamDesc, Params, TypeHint
from igrun.operators._common import windowed


class LimitOperator(Operator):
    name = "limit"
    description = "show at most N rows"
    priority = PRIORITY_LIMIT
    after = ("sort",)
    params = (
        ParamDesc(
            "max-rows",
            alias="m",
            type_hint=TypeHint.UINT,
            default="0",
            description="at most this many rows: in all for a stream (then it stops), "
            "per interval otherwise; 0 for no limit",
        ),
    )

    def __init__(self, ctx: GadgetContext, params: Params) -> None:
        super().__init__(ctx, params)
        self.limit = int(params.get("max-rows"))
        self.windowed = windowed(ctx)
        self.seen = 0

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        return cls(ctx, params) if params.get("max-rows") else None

    def process(self, batch: Batch) -> Batch:
        remaining = self.limit - self.seen
        if remaining <= 0:
            return batch.head(0)
        batch = batch.head(remaining)
        self.seen += len(batch)
        if not self.windowed and self.seen >= self.limit:
            self.ctx.cancel()
        return batch

    def flush(self) -> Batch | None:
        if self.windowed:
            self.seen = 0
        return None


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(LimitOperator)
