"""Running gadgets on other hosts: the agent (``igrun serve``) and its clients.

An agent runs gadgets on request over gRPC (a unix socket by default, TCP with mutual TLS
when asked); :func:`run_remote` runs one gadget on one agent and :func:`fan_out` runs it on
several at once, merging their output, each event tagged with its agent's node
(``k8s.node``). ``grpcio`` comes with the ``agent`` extra: ``pip install 'igrun[agent]'``.
See docs/agent.md.
"""

from igrun.core.remote.client import RemoteError, RemoteRun, fan_out, run_remote
from igrun.core.remote.protocol import Tls

__all__ = ["RemoteError", "RemoteRun", "Tls", "fan_out", "run_remote"]
