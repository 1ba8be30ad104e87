"""The check phase: everything a user gave a run, checked before anything starts.

It runs before the host check (root, BTF), before the run's pin folder exists and before any
BPF object loads, and it needs no kernel: a typo in ``-F``, ``--sort`` or ``-o columns=`` is
one line for any user, root or not. Every param of the gadget, the runtime and the operators
is validated, then each operator of the chain checks its params (:meth:`Operator.check`)
against the fields events have when they reach it: the gadget's, plus those of the operators
before it. So a filter on a field that an operator adds later in the chain, or that an
operator outside the chain adds, is refused with a line that names that operator, instead of
failing at the first event.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from igrun.core.errors import MissingColumn, ParamError
from igrun.core.events.schema import Field, Schema
from igrun.core.operator import Operator, RunPlan
from igrun.core.params import Params


class ChainError(ParamError):
    """An operator of the chain refused its params; :attr:`operator` names it, so a config
    file's error can say where in the file it sits."""

    def __init__(self, message: str, operator: str) -> None:
        super().__init__(message)
        self.operator = operator


def resolve_column(name: str, schema: Schema, what: str) -> Field:
    """The field called ``name`` (column or JSON name, any case), or a :class:`MissingColumn`
    for ``what``.

    ``what`` is the user's whole expression (``filter "pidd:1"``), so the message can say which
    input was wrong. Operators call it from :meth:`Operator.check`, where ``schema`` holds only
    the fields that reach them: the check phase then names the operator that adds a field too
    late or is not in the chain.
    """
    if name in schema:
        return schema[name]
    lowered = {f.name.lower(): f for f in schema.fields}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, schema.names(), n=3, cutoff=0.6)
    hint = " (did you mean " + " or ".join(f'"{c}"' for c in close) + "?)" if close else ""
    raise MissingColumn(f'invalid {what}: no column "{name}"{hint}', column=name, what=what)


def _adder(name: str, operators: Sequence[type[Operator]]) -> type[Operator] | None:
    """The first of ``operators`` that adds a field called ``name``."""
    for op in operators:
        if op.fields:
            try:
                resolve_column(name, Schema(op.fields), "")
            except MissingColumn:
                continue
            return op
    return None


def check_operator(plan: RunPlan, op: type[Operator], schema: Schema, position: int) -> None:
    """``op``'s check against ``schema`` (the fields reaching it at ``position`` in the
    chain), its failure worded as a :class:`ChainError`."""
    params = plan.operator_params.get(op.name) or Params(op.params)
    try:
        op.check(plan, params, schema)
    except MissingColumn as exc:
        later = _adder(exc.column, plan.chain[position + 1 :])
        if later is not None:
            raise ChainError(
                f'invalid {exc.what}: column "{exc.column}" is added by operator '
                f'"{later.name}", which comes after {op.name} in this chain',
                op.name,
            ) from None
        outside = _adder(exc.column, [o for o in plan.available if o not in plan.chain])
        if outside is not None:
            raise ChainError(
                f'invalid {exc.what}: column "{exc.column}" is added by operator '
                f'"{outside.name}", which is not in this chain',
                op.name,
            ) from None
        raise ChainError(str(exc), op.name) from None
    except ParamError as exc:
        if isinstance(exc, ChainError):
            raise
        raise ChainError(str(exc), op.name) from None


def check_run(plan: RunPlan) -> None:
    """Every param, then every operator of the chain in order; the first problem is raised
    as a :class:`ParamError` (exit code 2)."""
    for params in (plan.gadget_params, plan.runtime_params, *plan.operator_params.values()):
        params.validate()
    plan.gadget.check_params(plan)
    schema = plan.gadget.schema
    for position, op in enumerate(plan.chain):
        check_operator(plan, op, schema, position)
        schema = schema.extend(op.fields)
