"""Operators: the steps every batch of events passes through on its way out.

An operator class declares what it is (name, priority, params, fields it adds) and whether it
applies to a gadget; :meth:`Operator.instantiate` makes one for a run, or ``None`` when the
user's params leave it nothing to do, so an unused operator costs nothing per batch. The runtime
orders instances once, by dependencies and then priority (enrichers, filters, sort, limit,
output, as in Inspektor Gadget), and calls :meth:`process` on each with a whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from igrun.core.events.schema import Batch, Field, Schema
from igrun.core.gadget import ContainerAttacher, Gadget, GadgetContext
from igrun.core.params import ParamDesc, Params
from igrun.core.run.resources import MissingDependency, Resources, missing_message

# Priorities: lower runs earlier.
PRIORITY_ENRICH = 100
PRIORITY_FILTER = 200
PRIORITY_SORT = 300
PRIORITY_LIMIT = 400
PRIORITY_OUTPUT = 1000


@dataclass(frozen=True)
class RunPlan:
    """What one run will be, known before anything starts: what operator checks may look at.

    It has the :attr:`gadget` and :attr:`runtime_params` a :class:`GadgetContext` has, so a
    function that reads only those (the run's mode, say) takes either.
    """

    gadget: type[Gadget]
    gadget_params: Params
    runtime_params: Params
    operator_params: Mapping[str, Params]
    chain: tuple[type[Operator], ...]
    """The operators of the run, in the order batches pass through them."""
    available: tuple[type[Operator], ...] = ()
    """Every installed operator that applies to the gadget, in the chain or not."""


class Operator:
    """Base class of operators; subclasses override what they need."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    priority: ClassVar[int] = PRIORITY_ENRICH
    dependencies: ClassVar[tuple[str, ...]] = ()
    """Operators this one needs: they run before it, and a run whose chain lacks one is
    refused before anything loads (:class:`~igrun.core.run.resources.MissingDependency`)."""
    after: ClassVar[tuple[str, ...]] = ()
    """Operators that must run before this one when both are in the chain (order only)."""
    provides: ClassVar[tuple[type, ...]] = ()
    """Resource types this operator puts in ``ctx.resources`` (declared, so that a run
    missing them can say which operator to add)."""
    requires: ClassVar[tuple[type, ...]] = ()
    """Resource types this operator needs from an earlier one in the chain."""
    always: ClassVar[bool] = False
    """Runs whenever it applies, named in a config file's chain or not: it holds what the
    user selected (the containers), which a chain that forgets it must not silently drop."""
    params: ClassVar[tuple[ParamDesc, ...]] = ()
    """Declared params; on the command line they are flags, in the flat map
    ``operator.<name>.<key>``."""
    fields: ClassVar[tuple[Field, ...]] = ()
    """Fields this operator adds to every event (enrichers)."""

    def __init__(self, ctx: GadgetContext, params: Params) -> None:
        self.ctx = ctx
        self.values = params
        """This run's values of :attr:`params`."""

    @classmethod
    def can_operate_on(cls, gadget: type[Gadget]) -> bool:
        """Whether this operator applies to ``gadget`` at all."""
        return True

    @classmethod
    def check(cls, plan: RunPlan, params: Params, schema: Schema) -> None:
        """Check ``params`` before anything starts: no root, no kernel, nothing to undo.

        ``schema`` holds the fields events have when they reach this operator (the gadget's
        and those of the operators before it in the chain): resolve column names with
        :func:`igrun.core.resolve_column`, so a name that a later operator adds is reported
        with that operator's name. Raise :class:`ParamError` (exit code 2) for what the user
        must change. The types of :attr:`params` are already checked.
        """

    @classmethod
    def share(cls, process: Resources) -> None:
        """Provide in ``process`` what every run of this process shares (called once, before
        the runs of a config file start); each run's ``ctx.resources`` sees it."""

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        """An instance for one run, or ``None`` if the params leave nothing to do."""
        return cls(ctx, params)

    def pre_run(self, schema: Schema) -> None:
        """Called once before the gadget runs, with the final schema (all fields bound)."""

    def process(self, batch: Batch) -> Batch:
        """Transform one batch; return an empty batch to drop everything."""
        return batch

    def flush(self) -> Batch | None:
        """End of an interval or of the run: hand on what was held back (sort windows)."""
        return None

    def warn(self, message: str) -> None:
        """A warning for the user that belongs in the data stream (e.g. lost events)."""

    def result(self, data: bytes) -> bool:
        """A :class:`~igrun.core.gadget.ResultRunner`'s whole result, once, when the run
        ends; return whether this operator wrote it (the output does)."""
        return False

    def started(self) -> None:
        """Every program of the run is attached (just before the ``ready`` line): what a
        user waits for to know tracing has begun goes out here (the columns header)."""

    def post_run(self) -> None:
        """Called once after the gadget stopped, also after a failure (even one before
        :meth:`pre_run`): release what :meth:`instantiate` started."""


class Chain:
    """The ordered operators of one run; built once, called per batch."""

    def __init__(self, operators: list[Operator]) -> None:
        self.operators = operators

    def process(self, batch: Batch, start: int = 0) -> None:
        for op in self.operators[start:]:
            if len(batch) == 0:
                return
            batch = op.process(batch)

    def flush(self) -> None:
        """Flush every operator in order; what one releases goes through the ones after it."""
        for i, op in enumerate(self.operators):
            held = op.flush()
            if held is not None and len(held):
                self.process(held, i + 1)

    def warn(self, message: str) -> None:
        for op in self.operators:
            op.warn(message)

    def result(self, data: bytes) -> bool:
        """Hand a result gadget's result to the operators; whether one of them wrote it."""
        return any([op.result(data) for op in self.operators])

    def started(self) -> None:
        for op in self.operators:
            op.started()


def order(operators: list[type[Operator]]) -> list[type[Operator]]:
    """Sort operator classes by priority, then make every dependency come first."""
    by_name = {op.name: op for op in operators}
    ordered: list[type[Operator]] = []
    visiting: set[str] = set()

    def visit(op: type[Operator]) -> None:
        if op in ordered:
            return
        if op.name in visiting:
            raise ValueError(f"operator dependency cycle through {op.name!r}")
        visiting.add(op.name)
        for dep in (*op.dependencies, *op.after, *_providers_of(op, operators)):
            if dep in by_name:
                visit(by_name[dep])
        visiting.discard(op.name)
        ordered.append(op)

    for op in sorted(operators, key=lambda o: (o.priority, o.name)):
        visit(op)
    return ordered


def _providers_of(op: type[Operator], operators: list[type[Operator]]) -> list[str]:
    """Operators that provide what ``op`` requires: they run first."""
    return [p.name for p in operators if p is not op and set(p.provides) & set(op.requires)]


def requirements(gadget: type[Gadget]) -> tuple[type, ...]:
    """What ``gadget`` needs from the chain: what it declares, and the selected containers
    when it attaches to containers."""
    from igrun.core.containers.collection import SelectedContainers

    needs = gadget.requires
    if issubclass(gadget, ContainerAttacher) and SelectedContainers not in needs:
        needs = (*needs, SelectedContainers)
    return needs


def check_chain(
    gadget: type[Gadget], chain: list[type[Operator]], known: list[type[Operator]]
) -> None:
    """Refuse a chain that lacks what one of its members (or the gadget) needs: an
    operator's dependency, or a resource type no operator of the chain provides. ``known``
    (every installed operator) names the ones that would provide it."""
    names = {op.name for op in chain}
    for op in chain:
        for dep in op.dependencies:
            if dep not in names:
                raise MissingDependency(
                    f"operator {op.name!r} needs operator {dep!r}, which is not in this "
                    f"run's chain for {gadget.full_name()}"
                )
    provided = {kind for op in chain for kind in op.provides}
    needers: list[tuple[str, tuple[type, ...]]] = [
        (f"gadget {gadget.full_name()!r}", requirements(gadget)),
        *((f"operator {op.name!r}", op.requires) for op in chain),
    ]
    for who, needs in needers:
        for kind in needs:
            if kind not in provided:
                providers = [op.name for op in known if kind in op.provides]
                raise MissingDependency(missing_message(who, kind, providers))
