"""The socket enricher: which process owns each socket, kept in the kernel without kprobes.

Gadgets whose events fire outside the owning process (retransmits from timers, drops in
softirq) look the owner up by socket cookie in the ``gadget_sockets`` map that this object
fills (see ``igrun/sockets.h``). Its cgroup programs are attached with links at the cgroup v2
root, so they see every socket on the host and leave other programs attached there alone;
iterator passes at start record the owners of the sockets that are already open.
"""

from __future__ import annotations

import importlib.resources

from igrun.core.bpf.objects import BpfObject, Link, Map
from igrun.core.containers.collection import cgroup2_root
from igrun.core.errors import EnvironmentProblem

SOCKETS_MAP = "gadget_sockets"


class SocketEnricher:
    """Loads and attaches the enricher; :attr:`sockets` is the map to hand to gadgets."""

    def __init__(self) -> None:
        root = cgroup2_root()
        if root is None:
            raise EnvironmentProblem("no cgroup v2 hierarchy is mounted")
        resource = importlib.resources.files(__name__) / "sockets.bpf.o"
        with importlib.resources.as_file(resource) as path:
            self.obj = BpfObject.open(path)
        try:
            self.obj.load()
            for prog in self.obj.programs.values():
                if prog.is_cgroup:
                    self.obj.keep(prog.attach_cgroup(root))
            self._scan_existing()
        except BaseException:
            self.obj.close()
            raise
        self.sockets: Map = self.obj.map(SOCKETS_MAP)

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
