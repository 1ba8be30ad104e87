"""The commands around the gadgets: ``list``, a category alone, ``version``, ``completion``,
``man`` and ``list-containers``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from igrun.core.errors import (
    EnvironmentProblem,
    UsageError,
)
from igrun.core.gadget import Category

if TYPE_CHECKING:
    from igrun.core.plugins import PluginRegistry

from igrun.core.cli.flags import PROG, VERBOSE_HELP, Parser, version_text


def cmd_list(registry: PluginRegistry, argv: list[str], out: Any) -> int:
    """``igrun list [CATEGORY] [-o columns|json]``."""
    import json

    parser = Parser(prog=f"{PROG} list", description="the installed gadgets")
    parser.add_argument("category", nargs="?", choices=[c.value for c in Category])
    parser.add_argument("-o", "--output", choices=("columns", "json"), default="columns")
    args = parser.parse_args(argv)
    gadgets = sorted(registry.gadgets().values(), key=lambda g: (g.category.value, g.name))
    gadgets = [g for g in gadgets if args.category in (None, g.category.value)]
    if args.output == "json":
        records = [
            {
                "category": g.category.value,
                "name": g.name,
                "description": g.description,
                "package": registry.provider(g),
            }
            for g in gadgets
        ]
        out.write(json.dumps(records, indent=2) + "\n")
        return 0
    rows = [("CATEGORY", "GADGET", "DESCRIPTION", "PACKAGE")]
    rows += [(g.category.value, g.name, g.description, registry.provider(g)) for g in gadgets]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)))
        out.write(f"  {r[3]}\n")
    return 0


def cmd_category(registry: PluginRegistry, category: str, out: Any) -> int:
    """``igrun trace`` (or ``igrun trace --help``): the gadgets of that category."""
    gadgets = sorted(
        (g for g in registry.gadgets().values() if g.category.value == category),
        key=lambda g: g.name,
    )
    width = max([8, *(len(g.name) for g in gadgets)])
    out.write(f"usage: {PROG} {category} <gadget> [flags]\n\n{category} gadgets:\n")
    for g in gadgets:
        out.write(f"  {g.name:<{width}}  {g.description}\n")
    out.write(f"\n'{PROG} {category} <gadget> --help' lists the flags of one.\n")
    return 0


def cmd_version(argv: list[str], out: Any) -> int:
    """``igrun version``."""
    Parser(prog=f"{PROG} version", description="the version of igrun").parse_args(argv)
    out.write(f"{PROG} {version_text()}\n")
    return 0


def cmd_completion(argv: list[str], out: Any) -> int:
    """``igrun completion bash|zsh|fish``: a script that completes igrun's command line."""
    from igrun.core.cli import complete

    parser = Parser(
        prog=f"{PROG} completion",
        description="print a shell completion script; it asks igrun what to offer",
        epilog='bash: eval "$(igrun completion bash)"; zsh: source <(igrun completion zsh); '
        "fish: igrun completion fish | source",
    )
    parser.add_argument("shell", choices=complete.SHELLS)
    out.write(complete.script(parser.parse_args(argv).shell))
    return 0


def cmd_complete(registry: PluginRegistry, argv: list[str], out: Any) -> int:
    """``igrun __complete bash LINE WORD`` | ``igrun __complete words -- W1 … CURRENT``: the
    candidates, one a line (what the completion scripts call)."""
    from igrun.core.cli import complete

    if argv[:1] == ["bash"] and len(argv) == 3:
        found = complete.bash(registry, argv[1], argv[2])
    elif argv[:2] == ["words", "--"]:
        words = argv[2:] or [""]
        found = complete.candidates(registry, words[:-1], words[-1])
    else:
        raise UsageError(f"{PROG} __complete: bash LINE WORD | words -- WORD…")
    out.write("".join(f"{c}\n" for c in found))
    return 0


def cmd_man(registry: PluginRegistry, argv: list[str], out: Any) -> int:
    """``igrun man``: the manual page in roff (``igrun man | man -l -``)."""
    from igrun.core.cli import manpage

    Parser(
        prog=f"{PROG} man",
        description="print the manual page (roff); read it with: igrun man | man -l -",
    ).parse_args(argv)
    out.write(manpage.render(registry, version_text()))
    return 0


def cmd_list_containers(argv: list[str], out: Any) -> int:
    """``igrun list-containers [-w] [-o columns|json] [-r runtimes]``."""
    import json
    import time

    from igrun.core.containers.collection import Container, ContainerCollection
    from igrun.core.containers.discovery import Discovery, select_clients
    from igrun.core.output.printable import printable

    parser = Parser(prog=f"{PROG} list-containers", description="the containers of this host")
    parser.add_argument("-w", "--watch", action="store_true", help="then show them come and go")
    parser.add_argument("-o", "--output", choices=("columns", "json"), default="columns")
    parser.add_argument("-r", "--runtimes", default="", help="runtimes to ask (comma list)")
    parser.add_argument("--containerd-namespace", default="k8s.io")
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:  # other users' processes and runtime state: an empty table, wrongly
        raise EnvironmentProblem(f"{PROG} list-containers needs root to see containers (try sudo)")
    clients = select_clients(args.runtimes.split(","), args.containerd_namespace.split(","))
    collection = ContainerCollection()
    discovery = Discovery(collection, clients)
    widths = (10, 24, 13, 8, 11, 0)

    def line(event: str, c: Container) -> str:
        if args.output == "json":
            record = c.as_dict() if not args.watch else {"event": event, "container": c.as_dict()}
            return json.dumps(record, separators=(",", ":")) + "\n"
        values = (c.runtime, c.name, c.short_id, str(c.pid), str(c.mntns), c.image_name)
        cells = [printable(v) for v in values]  # runtime metadata: no terminal controls
        text = " ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip()
        return (f"{event.upper():<8} " if args.watch else "") + text + "\n"

    if args.output == "columns":
        header = " ".join(
            h.ljust(w)
            for h, w in zip(("RUNTIME", "NAME", "ID", "PID", "MNTNS", "IMAGE"), widths, strict=True)
        ).rstrip()
        out.write(("EVENT    " if args.watch else "") + header + "\n")
    discovery.first_scan()
    for c in collection.containers():
        out.write(line("running", c))
    out.flush()
    if not args.watch:
        return 0

    def show(event: str, c: Container) -> None:
        out.write(line(event, c))
        out.flush()

    collection.subscribe(show, replay=False)
    discovery.start()
    try:
        while True:
            time.sleep(3600)
    finally:
        discovery.stop()


def top_help(registry: PluginRegistry) -> str:
    lines = [
        f"usage: {PROG} [-v|-vv] <command> | {PROG} [-v|-vv] <category> <gadget> [flags]",
        "",
        "Run eBPF gadgets: what is this host, or this one container, doing right now?",
        "",
        "commands:",
        "  list [CATEGORY] [-o json]  the installed gadgets",
        "  list-containers [-w]   the containers igrun sees (-w: then watch them come and go)",
        "  run FILE.bpf.o         run a compiled CO-RE object: no Python needed (--help: flags)",
        "  --config FILE [flags]  start the runs of a config file (-t 10s and other runtime",
        "                         flags apply to each; with a gadget: its defaults)",
        "  serve [--listen ADDR]  the agent: run gadgets on request over gRPC (docs/agent.md)",
        "  --remote ADDR[,ADDR] <category> <gadget> [flags]",
        "                         run a gadget on agents (TCP: --tls-cert, --tls-key, --tls-ca)",
        "  config default|view    a complete config to start from | what igrun makes of yours",
        "  completion SHELL       a completion script for bash, zsh or fish",
        "  man                    the manual page (igrun man | man -l -)",
        "  version                the version of igrun",
        "  <category>             the gadgets of a category",
        "  <category> <gadget>    run a gadget; '<category> <gadget> --help' lists its flags",
        "",
        "gadgets:",
    ]
    for g in sorted(registry.gadgets().values(), key=lambda g: g.full_name()):
        lines.append(f"  {g.full_name():<22} {g.description}")
    lines += ["", f"example: {PROG} trace exec -o json --timeout 10s"]
    return "\n".join(lines) + "\n"
