"""The command line of remote runs: ``igrun serve`` (the agent) and ``igrun --remote``.

``igrun --remote ADDR[,ADDR...] [--tls-cert C --tls-key K --tls-ca CA] <gadget> [flags]``
parses the gadget's flags here, as a local run does (the same errors), and runs it on every
agent (:func:`~igrun.core.remote.fan_out`); what the agents print comes to stdout. With
several agents and no ``-o``, the columns add ``K8S.NODE``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from igrun.core.cli.flags import PROG, TLS_FLAGS
from igrun.core.errors import UsageError
from igrun.core.remote import protocol as p

if TYPE_CHECKING:
    from igrun.core.plugins import PluginRegistry


@dataclass
class RemoteTarget:
    """Where ``--remote`` sends a run."""

    addresses: list[str]
    tls: p.Tls | None


def _tls_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls-cert", help="this side's certificate (PEM)")
    parser.add_argument("--tls-key", help="this side's private key (PEM)")
    parser.add_argument("--tls-ca", help="the CA that signs the other side's certificate (PEM)")


def take_remote(args: list[str]) -> tuple[RemoteTarget | None, list[str]]:
    """``--remote ADDRS`` and the TLS flags, from before the gadget's name."""
    values: dict[str, str] = {}
    rest = list(args)
    while rest and rest[0].split("=", 1)[0] in ("--remote", *TLS_FLAGS):
        flag, equals, value = rest[0].partition("=")
        if equals:
            rest = rest[1:]
        else:
            if len(rest) < 2:
                raise UsageError(f"{flag} needs a value")
            value, rest = rest[1], rest[2:]
        values[flag] = value
    if "--remote" not in values:
        if values:
            raise UsageError(f"{next(iter(values))} is for --remote runs")
        return None, args
    addresses = [a.strip() for a in values["--remote"].split(",") if a.strip()]
    if not addresses:
        raise UsageError("--remote needs an address: unix:///run/igrun.sock or HOST:PORT")
    tls = p.Tls.from_flags(
        values.get("--tls-cert"), values.get("--tls-key"), values.get("--tls-ca")
    )
    for a in addresses:
        p.check_address(a, tls)
    return RemoteTarget(addresses, tls), rest


def run_remote_gadget(
    registry: PluginRegistry, target: RemoteTarget, args: list[str], config: Path | None
) -> int:
    """``igrun --remote ... <gadget> [flags]``: the flags parsed here, the run on the agents."""
    from igrun.core.cli.flags import split_gadget_name
    from igrun.core.cli.main import gadget_values
    from igrun.core.config.runs import RunSpec
    from igrun.core.log import get_logger
    from igrun.core.remote.client import OUTPUT_KEY, RemoteRun, fan_out

    if not args or args[0].startswith("-"):
        raise UsageError(f"--remote runs one gadget: {PROG} --remote ADDR trace exec [flags]")
    name, rest = split_gadget_name(args)
    gadget = registry.gadget(name)
    spec = RunSpec(gadget)
    values = gadget_values(registry, gadget, rest, config, spec=spec)
    if OUTPUT_KEY not in values and len(target.addresses) > 1:
        values[OUTPUT_KEY] = "columns=+k8s.node"

    def ready(runs: list[RemoteRun]) -> None:
        nodes = ",".join(r.node or r.address for r in runs)
        get_logger(gadget=gadget.full_name()).info("ready", nodes=nodes)

    values.setdefault(OUTPUT_KEY, "columns")
    runs = fan_out(
        target.addresses, gadget.full_name(), values, spec.chain, tls=target.tls, on_ready=ready
    )
    for run in runs:
        if run.summary:
            sys.stderr.write(f"{PROG}: {run.node or run.address}: {run.summary}\n")
    return 0


def cmd_serve(argv: Sequence[str]) -> int:
    """``igrun serve``: the agent, until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} serve",
        description="Run gadgets on request over gRPC (see docs/agent.md). A unix socket by "
        "default; a TCP address (HOST:PORT) needs mutual TLS.",
    )
    parser.add_argument(
        "--listen",
        action="append",
        help=f"unix:///PATH or HOST:PORT, repeatable (default {p.DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or os.uname().nodename,
        help="this node's name, k8s.node of every event (default $NODE_NAME, else the host name)",
    )
    _tls_parser(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(list(argv))
    from igrun.core.remote.agent import serve

    tls = p.Tls.from_flags(args.tls_cert, args.tls_key, args.tls_ca)
    return serve(args.listen or [p.DEFAULT_ADDRESS], args.node_name, tls)
