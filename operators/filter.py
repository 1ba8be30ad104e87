"""``-F col:value``: keep only the events that match, decided for a whole batch at once.

The syntax is ``ig``'s: ``col:value`` (equal), ``col:!value`` (not equal), ``col:>value``,
``col:>=value``, ``col:<value``, ``col:<=value``, ``col:~regex`` and ``col:!~regex``. Several
filters must all match. Values are typed by the field: numbers compare as numbers, strings as
strings, a list (exec's args) as its space-joined text and bytes as their hex text.

Repeated ``-F`` flags reach the operator as one comma-separated value. It is split only where
what follows a comma looks like another filter (``name:``), so ``-F 'args:~a,b'`` works.
"""

from __future__ import annotations

import operator as op
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.errors import ParamError
from igrun.core.gadget import GadgetContext

if TYPE_CHECKING:
    from igrun.core.operator import RunPlan
from igrun.core.events.schema import Array, Batch, Field, Kind, Schema, map_text
from igrun.core.hookspecs import hookimpl
from igrun.core.operator import PRIORITY_FILTER, Operator
from igrun.core.params import ParamDesc, Params
from igrun.operators._common import resolve_column

_COMPARISONS: list[tuple[str, Callable[[Any, Any], Any]]] = [
    (">=", op.ge),
    ("<=", op.le),
    (">", op.gt),
    ("<", op.lt),
    ("!", op.ne),
    ("", op.eq),
]
_NEXT_FILTER = re.compile(r",(?=[A-Za-z_][\w.]*:)")
_NUMERIC = (Kind.INT, Kind.UINT, Kind.TIME, Kind.BOOL)


def split_filters(raw: str) -> list[str]:
    """One comma-joined ``-F`` value back into the filters the user gave."""
    return [part for part in _NEXT_FILTER.split(raw) if part.strip()]


@dataclass(frozen=True)
class Filter:
    """One parsed filter, ready to build a mask for a whole batch."""

    field: Field
    compare: Callable[[Any, Any], Any] | None
    value: Any
    regex: re.Pattern[str] | None = None
    negate: bool = False

    def mask(self, batch: Batch) -> Array:
        distinct = batch.distinct(self.field.name)
        if distinct is not None:  # decided once per distinct value
            values, index = distinct
            return self._test(values)[index]
        return self._test(batch[self.field.name])

    def _test(self, col: Array) -> Array:
        if self.field.kind is Kind.LIST:  # as the columns show it
            show = self.field.column.text or " ".join
            col = np.array([show(v) for v in col], dtype=object)
        elif self.field.kind is Kind.MAP:  # as the columns show it: k=v,k2=v2
            col = np.array([map_text(v) for v in col], dtype=object)
        elif self.field.kind is Kind.BYTES:  # as the columns show them: hex
            col = np.array([bytes(v).hex() for v in col], dtype=object)
        if self.regex is not None:
            search = self.regex.search
            hits = np.fromiter((search(str(v)) is not None for v in col), bool, len(col))
            return ~hits if self.negate else hits
        assert self.compare is not None
        return np.asarray(self.compare(col, self.value), dtype=bool)


def _typed(field: Field, text: str, expr: str) -> Any:
    if field.kind in _NUMERIC:
        lowered = text.strip().lower()
        if field.kind is Kind.BOOL and lowered in ("true", "false"):
            return lowered == "true"
        try:
            return int(text, 0)
        except ValueError:
            raise ParamError(
                f'invalid filter "{expr}": {field.name} is a number, not "{text}"'
            ) from None
    if field.kind is Kind.FLOAT:
        try:
            return float(text)
        except ValueError:
            raise ParamError(
                f'invalid filter "{expr}": {field.name} is a number, not "{text}"'
            ) from None
    return text


def parse_filter(expr: str, schema: Schema) -> Filter:
    """Parse one ``col:value`` expression against ``schema``."""
    name, sep, rest = expr.partition(":")
    if not sep or not name.strip():
        raise ParamError(f'invalid filter "{expr}": expected column:value (e.g. comm:bash)')
    field = resolve_column(name.strip(), schema, f'filter "{expr}"')
    for prefix, negate in (("!~", True), ("~", False)):
        if rest.startswith(prefix):
            try:
                with warnings.catch_warnings():  # "possible nested set": a line of noise
                    warnings.simplefilter("ignore", FutureWarning)
                    pattern = re.compile(rest[len(prefix) :])
            except (re.error, OverflowError, RecursionError) as exc:
                # re says "too large" (a{99999999999}) and "too deep" (nested groups) with
                # other exceptions than re.error: all are the user's pattern.
                raise ParamError(
                    f'invalid filter "{expr}": bad regular expression: {exc}'
                ) from None
            return Filter(field, None, None, regex=pattern, negate=negate)
    for prefix, compare in _COMPARISONS:
        if rest.startswith(prefix):
            value = _typed(field, rest[len(prefix) :], expr)
            if field.kind is Kind.FLOAT and not isinstance(value, float):
                value = float(value)
            return Filter(field, compare, value)
    raise AssertionError("unreachable: the empty prefix always matches")


class FilterOperator(Operator):
    name = "filter"
    description = "keep only events that match every -F col:value"
    priority = PRIORITY_FILTER
    params = (
        ParamDesc(
            "filter",
            alias="F",
            repeatable=True,
            description="keep events where col:value (also col:!v, col:>v, col:>=v, col:<v, "
            "col:<=v, col:~regex, col:!~regex); repeat to require several",
        ),
    )

    def __init__(self, ctx: GadgetContext, params: Params) -> None:
        super().__init__(ctx, params)
        self.exprs = split_filters(params.raw("filter"))
        self.filters: list[Filter] = []

    @classmethod
    def check(cls, plan: RunPlan, params: Params, schema: Schema) -> None:
        for expr in split_filters(params.raw("filter")):
            parse_filter(expr, schema)

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        if not params.raw("filter").strip():
            return None
        return cls(ctx, params)

    def pre_run(self, schema: Schema) -> None:
        self.filters = [parse_filter(e, schema) for e in self.exprs]

    def process(self, batch: Batch) -> Batch:
        mask = self.filters[0].mask(batch)
        for f in self.filters[1:]:
            mask &= f.mask(batch)
        return batch if mask.all() else batch.take(mask)


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(FilterOperator)
