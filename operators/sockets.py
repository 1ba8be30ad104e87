"""Socket owners for the gadgets that need them.

For a gadget that says ``socket_owners = True`` (its events fire outside the owning process),
this operator starts igrun's socket enricher before the gadget loads and hands it the
enricher's ``gadget_sockets`` map. When the enricher cannot start (no cgroup v2, a kernel
that refuses a hook) the gadget still runs, and says "owner unknown" on the events it cannot
attribute: a network gadget never fails for want of process names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from igrun.core.errors import IgrunError
from igrun.core.gadget import Gadget, GadgetContext
from igrun.core.hookspecs import hookimpl
from igrun.core.log import get_logger
from igrun.core.operator import PRIORITY_ENRICH, Operator
from igrun.core.params import Params
from igrun.core.run.headstart import take_socket_enricher
from igrun.core.tracer import SharedMaps

if TYPE_CHECKING:
    from igrun.plugins.socket_enricher import SocketEnricher


class SocketsOperator(Operator):
    name = "sockets"
    description = "which process owns each socket, for network gadgets"
    priority = PRIORITY_ENRICH
    provides = (SharedMaps,)
    enricher: SocketEnricher | None = None

    @classmethod
    def can_operate_on(cls, gadget: type[Gadget]) -> bool:
        return bool(getattr(gadget, "socket_owners", False))

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        from igrun.plugins.socket_enricher import SOCKETS_MAP, SocketEnricher

        try:
            enricher = take_socket_enricher() or SocketEnricher()
        except IgrunError as exc:
            get_logger().warning("socket_enricher_unavailable", error=str(exc),
                                 note="events whose owner is unknown say so")  # fmt: skip
            return None
        self = cls(ctx, params)
        self.enricher = enricher
        maps = ctx.resources.get(SharedMaps)
        if maps is None:
            maps = SharedMaps()
            ctx.resources.provide(maps, by=cls.name)
        maps.maps[SOCKETS_MAP] = enricher.sockets
        ctx.resources.provide(enricher, by=cls.name)
        return self

    def post_run(self) -> None:
        if self.enricher is not None:
            maps = self.ctx.resources.get(SharedMaps)
            if maps is not None:
                maps.maps.pop("gadget_sockets", None)
            self.ctx.resources.withdraw(type(self.enricher))
            self.enricher.close()
            self.enricher = None


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(SocketsOperator)
