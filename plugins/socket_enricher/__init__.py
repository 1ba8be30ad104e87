"""The socket enricher: which process owns each socket, kept in the kernel without kprobes.

Gadgets whose events fire outside the owning process (retransmits from timers, drops in
softirq) look the owner up by socket cookie in the ``gadget_sockets`` map that this object
fills (see ``igrun/sockets.h``). Its cgroup programs are attached with links at the cgroup v2
root, so they see every socket on the host and leave other programs attached there alone;
iterator passes at start record the owners of the sockets that are already open.
"""

from __future__ import annotations

import os

from igrun.core.bpf.objects import BpfObject, Link, Map
from igrun.core.containers.procfs import cgroup2_root
from igrun.core.errors import EnvironmentProblem
from igrun.core.run.headstart import SOCKETS_MAP as SOCKETS_MAP  # named where the head start is


def _open_object() -> BpfObject:
    """The enricher's object, next to this module (without importing ``importlib.resources``,
    about 13 ms, when the package is on disk: the head start loads it while igrun imports)."""
    path = os.path.join(os.path.dirname(__file__), "sockets.bpf.o")
    if os.path.isfile(path):
        return BpfObject.open(path)
    import importlib.resources

    resource = importlib.resources.files(__name__) / "sockets.bpf.o"
    with importlib.resources.as_file(resource) as found:
        return BpfObject.open(found)


class SocketEnricher:
    """Loads and attaches the enricher; :attr:`sockets` is the map to hand to gadgets.

    ``sockets``, when given, is the map to fill instead of the object's own (made with
    :meth:`~igrun.core.bpf.objects.BpfObject.new_map_like` so that a gadget's object can
    load with it at the same time); the enricher closes it when it closes."""

    def __init__(self, sockets: Map | None = None) -> None:
        root = cgroup2_root()
        if root is None:
            raise EnvironmentProblem("no cgroup v2 hierarchy is mounted")
        self.obj = _open_object()
        try:
            if sockets is not None:
                self.obj.reuse_map(SOCKETS_MAP, sockets)
            self.obj.load()
            for prog in self.obj.programs.values():
                if prog.is_cgroup:
                    self.obj.keep(prog.attach_cgroup(root))
            self._scan_existing()
        except BaseException:
            self.obj.close()
            raise
        self._given = sockets
        self.sockets: Map = sockets if sockets is not None else self.obj.map(SOCKETS_MAP)

    def _scan_existing(self) -> None:
        """Run the start-up iterators in order: the TCP and UDP ones give sockets cookies, so
        the task_file one, which records owners, can key most of them by cookie."""
        for name in ("ig_cookie_tcp", "ig_cookie_udp", "ig_existing_sockets"):
            link: Link = self.obj.programs[name].attach()
            try:
                link.read()
            finally:
                link.destroy()

    def close(self) -> None:
        self.obj.close()
        if self._given is not None:
            self._given.close()
