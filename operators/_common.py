"""What the built-in operators share: finding a column by name, and knowing the run's mode."""

from __future__ import annotations

import difflib

from igrun.core.errors import ParamError
from igrun.core.gadget import GadgetContext
from igrun.core.schema import Field, Schema


def resolve_column(name: str, schema: Schema, what: str) -> Field:
    """The field called ``name`` (column or JSON name), or a :class:`ParamError` for ``what``.

    ``what`` is the user's whole expression (``filter "pidd:1"``), so the message can say
    which input was wrong.
    """
    if name in schema:
        return schema[name]
    lowered = {f.name.lower(): f for f in schema.fields}
    if name.lower() in lowered:
        return lowered[name.lower()]
    close = difflib.get_close_matches(name, schema.names(), n=3, cutoff=0.6)
    hint = " (did you mean " + " or ".join(f'"{c}"' for c in close) + "?)" if close else ""
    raise ParamError(f'invalid {what}: no column "{name}"{hint}')


def windowed(ctx: GadgetContext) -> bool:
    """Whether the run emits windows (``--interval``, or a gadget type that sorts) rather than
    one endless stream: sort holds and limit counts per window then."""
    interval = ctx.runtime_params.get("interval") if "interval" in ctx.runtime_params else 0
    return bool(interval) or ctx.gadget.type.can_sort
