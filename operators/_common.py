"""What the built-in operators share: finding a column by name, and knowing the run's mode."""

from __future__ import annotations

from typing import Protocol

from igrun.core.gadget import Gadget
from igrun.core.params import Params
from igrun.core.run.check import resolve_column

__all__ = ["by_interval", "resolve_column", "windowed"]


class _Run(Protocol):
    """A run's context, or its plan in the check phase: both say which gadget, which params."""

    @property
    def gadget(self) -> type[Gadget]: ...

    @property
    def runtime_params(self) -> Params: ...


def windowed(ctx: _Run) -> bool:
    """Whether the run emits windows (``--interval``, or a gadget type that sorts) rather than
    one endless stream: sort holds and limit counts per window then."""
    interval = ctx.runtime_params.get("interval") if "interval" in ctx.runtime_params else 0
    return bool(interval) or ctx.gadget.type.can_sort


def by_interval(ctx: _Run) -> bool:
    """Whether windows end on a clock (``--interval``, or a gadget that reports every
    interval): the output then writes each window whole, as one array or one block."""
    interval = ctx.runtime_params.get("interval") if "interval" in ctx.runtime_params else 0
    return bool(interval) or ctx.gadget.type.is_periodic
