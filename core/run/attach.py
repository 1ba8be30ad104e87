"""Attaching a gadget to each selected container as it comes and goes.

The runtime side of :class:`~igrun.core.gadget.ContainerAttacher` (Inspektor Gadget's local
manager does the same for its ``Attacher``): once the gadget is initialised, it is attached
to every selected container already running, then to each one that starts, and detached from
each one that stops; when the run ends it is detached from every container still attached,
so nothing a gadget made per container outlives the run.

Calls come from the collection's change listener (the discovery thread, or the thread that
holds a starting container before its first instruction, so a gadget is attached before the
container runs), serialised by one lock: never two at once, never from the thread that reads
events. An attach that fails is logged with the container's name and the container is left
out; the run goes on, as Inspektor Gadget's does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from igrun.core.containers.collection import Container, SelectedContainers, host_container
from igrun.core.gadget import ContainerAttacher, GadgetContext


class Attachments:
    """Which containers one gadget is attached to, kept in step with the selection."""

    def __init__(self, ctx: GadgetContext, gadget: ContainerAttacher) -> None:
        self.ctx = ctx
        self.gadget = gadget
        self.selected = ctx.resources.require(
            SelectedContainers, by=f"gadget {ctx.gadget.full_name()!r} (it attaches to containers)"
        )
        self.attached: dict[str, Container] = {}
        """By container id: what :meth:`stop` detaches."""
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        """Attach to the host (with ``--host``) and to every selected container, and follow
        the collection from now on."""
        if self.selected.host:
            self._attach(host_container())
        self.selected.collection.subscribe(self._changed)

    def _changed(self, kind: str, c: Container) -> None:
        if kind == "removed":
            self._detach(c)
        elif self.selected.selector.matches(c):  # added, or changed (a better name)
            self._attach(c)
        else:  # changed to a name that is no longer selected
            self._detach(c)

    def _attach(self, c: Container) -> None:
        with self._lock:
            if self._stopped or c.id in self.attached:
                return
            try:
                self.gadget.attach_container(c)
            except Exception as exc:
                self.ctx.logger.warning(
                    "attach_failed", container=c.name, id=c.short_id, error=str(exc)
                )
                return
            self.attached[c.id] = c
            self.ctx.logger.debug(
                "attached", container=c.name, pid=c.pid, mntns=c.mntns, netns=c.netns
            )

    def _detach(self, c: Container) -> None:
        with self._lock:
            if self.attached.pop(c.id, None) is None:
                return
            self._call_detach(c)

    def _call_detach(self, c: Container) -> None:
        try:
            self.gadget.detach_container(c)
        except Exception as exc:
            self.ctx.logger.warning(
                "detach_failed", container=c.name, id=c.short_id, error=str(exc)
            )
            return
        self.ctx.logger.debug("detached", container=c.name, pid=c.pid)

    def stop(self) -> None:
        """Follow the collection no more, and detach from every container still attached
        (the host last)."""
        self.selected.collection.unsubscribe(self._changed)
        with self._lock:
            self._stopped = True
            left, self.attached = self.attached, {}
            for c in sorted(left.values(), key=lambda c: c.id == "host"):
                self._call_detach(c)


@contextmanager
def attached(ctx: GadgetContext, gadget: ContainerAttacher) -> Iterator[Attachments]:
    """Attach ``gadget`` to the run's selected containers for the length of the block."""
    attachments = Attachments(ctx, gadget)
    try:
        attachments.start()
        yield attachments
    finally:
        attachments.stop()
