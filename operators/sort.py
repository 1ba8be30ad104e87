"""``--sort -col,col``: order the events of each window.

Sorting needs a whole set of events to order. A stream never ends, so ``--sort`` on a plain
trace is refused (``ig`` has no ``--sort`` for trace gadgets); with ``--interval`` (or for
gadgets whose type sorts, like top and snapshot gadgets) the operator holds every batch of the
window and releases them sorted when the window ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.errors import ParamError
from igrun.core.events.schema import Array, Batch, Field, Kind, Schema, map_text
from igrun.core.gadget import GadgetContext
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import PRIORITY_SORT, Operator
from igrun.core.params import ParamDesc, Params
from igrun.operators._common import resolve_column, windowed

if TYPE_CHECKING:
    from igrun.core.operator import RunPlan
    from igrun.operators._common import _Run

SortKeys = list[tuple[Field, bool]]

STREAM_SORT = (
    "--sort needs --interval: a stream has no end to sort up to "
    "(e.g. --interval 1s sorts each second's events)"
)
"""Why a stream is not sorted: sorting each batch as it came looked sorted and was not."""


def parse_sort(spec: str, schema: Schema) -> SortKeys:
    """``"-pid,comm"`` -> [(pid, descending), (comm, ascending)]."""
    keys: SortKeys = []
    for part in (p.strip() for p in spec.split(",")):
        if not part or part == "-":
            raise ParamError(f'invalid sort "{spec}": empty column name')
        descending = part.startswith("-")
        name = part.lstrip("-+")
        keys.append((resolve_column(name, schema, f'sort "{spec}"'), descending))
    return keys


def _ranks(col: Array, f: Field) -> Array:
    """Integer ranks of a column, so any kind (strings too) sorts and reverses alike; a list
    by its text in the columns output."""
    if f.kind is Kind.LIST:
        show = f.column.text or " ".join
        col = np.array([show(v) for v in col], dtype=object)
    elif f.kind is Kind.MAP:
        col = np.array([map_text(v) for v in col], dtype=object)
    _, inverse = np.unique(col, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)


def sort_batch(batch: Batch, keys: SortKeys) -> Batch:
    """``batch`` reordered by ``keys`` (first key first), stable for equal keys."""
    if len(batch) < 2:
        return batch
    columns = []
    for f, descending in keys:
        ranks = _ranks(batch[f.name], f)
        columns.append(-ranks if descending else ranks)
    order = np.lexsort(columns[::-1])  # lexsort's last key is the primary one
    return batch.take(order)


class SortOperator(Operator):
    name = "sort"
    description = "order events by columns"
    priority = PRIORITY_SORT
    params = (
        ParamDesc(
            "sort",
            description="sort each window by these columns, '-' for descending "
            "(e.g. -pid,comm); a stream needs --interval",
        ),
    )

    def __init__(self, ctx: GadgetContext, params: Params, spec: str) -> None:
        super().__init__(ctx, params)
        self.spec = spec
        self.keys: SortKeys = []
        self.held: list[Batch] = []

    @staticmethod
    def spec_for(run: _Run, params: Params) -> str:
        """The columns to sort by: the user's, else the gadget's default for a windowed run,
        else none (empty)."""
        spec = params.raw("sort").strip()
        if not spec:
            default = getattr(run.gadget, "sort_by_default", None)
            if default is None or not windowed(run):
                return ""
            spec = ",".join(default())
        return spec

    @classmethod
    def check(cls, plan: RunPlan, params: Params, schema: Schema) -> None:
        spec = cls.spec_for(plan, params)
        if spec:
            parse_sort(spec, schema)
            if not windowed(plan):
                raise ParamError(STREAM_SORT)

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        spec = cls.spec_for(ctx, params)
        return cls(ctx, params, spec) if spec else None

    def pre_run(self, schema: Schema) -> None:
        self.keys = parse_sort(self.spec, schema)

    def process(self, batch: Batch) -> Batch:
        self.held.append(batch)
        return batch.take(np.zeros(0, dtype=np.int64))

    def flush(self) -> Batch | None:
        if not self.held:
            return None
        window, self.held = Batch.concat(self.held), []
        return sort_batch(window, self.keys)


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(SortOperator)
