"""Every hook igrun calls, in one place (the way pytest's ``hookspec.py`` reads).

Hooks are for wiring and lifecycle, never per event: a pluggy call costs microseconds, so the
runtime builds a plain list of operator instances once and calls it per batch.

A plugin is a module (or object) with functions marked ``@hookimpl``::

    from igrun.core import hookimpl

    @hookimpl
    def igrun_register_gadgets(register):
        register(MyGadget)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from igrun.core.gadget import Gadget, GadgetContext
    from igrun.core.operator import Operator

PROJECT = "igrun"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def igrun_register_gadgets(register: Callable[[type[Gadget]], None]) -> None:
    """Register gadget classes by calling ``register(cls)`` for each.

    Called when the plugin is loaded (from the ``igrun.gadgets`` entry-point group); each
    registration is checked at once, so a malformed gadget is reported against its plugin.
    """


@hookspec
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    """Register operator classes by calling ``register(cls)`` for each.

    Called when the plugin is loaded (from the ``igrun.operators`` entry-point group).
    """


@hookspec
def igrun_run_started(ctx: GadgetContext) -> None:
    """A gadget run has started: its BPF programs are attached and operators are ready."""


@hookspec
def igrun_run_finished(ctx: GadgetContext, error: BaseException | None) -> None:
    """A gadget run has ended and everything it started is stopped.

    ``error`` is the exception that ended it, or ``None`` for a normal end (timeout, Ctrl-C,
    a limit reached).
    """
