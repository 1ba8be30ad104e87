"""``igrun man``: the manual page, written from the parsers the commands use.

Every gadget's section lists the flags its parser takes, with the parser's help text, so the
page says what this installation accepts (third-party gadgets included). Read it with
``igrun man | man -l -``; install it with ``igrun man > /usr/local/share/man/man1/igrun.1``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from igrun.core.plugins import PluginRegistry

COMMANDS = (
    ("list [CATEGORY] [-o columns|json]", "the installed gadgets (of one category)"),
    ("CATEGORY", "the gadgets of a category (igrun trace)"),
    ("CATEGORY GADGET [flags]", "run a gadget (also CATEGORY_GADGET)"),
    ("list-containers [-w] [-o columns|json] [-r RUNTIMES]", "the containers igrun sees"),
    ("run FILE.bpf.o [flags]", "run a compiled CO-RE object"),
    ("--config FILE [runtime flags]", "start every run of a config file"),
    ("serve [--listen ADDR] [--node-name NAME]", "the agent: run gadgets on request over gRPC"),
    ("--remote ADDR[,ADDR] CATEGORY GADGET [flags]", "run a gadget on agents, merged"),
    ("config default|view [CATEGORY GADGET]", "a complete config | what igrun makes of yours"),
    ("completion bash|zsh|fish", "a shell completion script"),
    ("man", "this page, in roff"),
    ("version", "the version of igrun"),
)


def _text(value: str) -> str:
    """Plain text for roff: backslashes and hyphens escaped, no line read as a request."""
    out = value.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + ln if ln[:1] in (".", "'") else ln) for ln in out.splitlines())


def flag_spellings(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(f"\\fB{_text(o)}\\fR" for o in action.option_strings)
        if action.nargs != 0 and action.metavar:
            names += f" \\fI{_text(str(action.metavar))}\\fR"
        lines += [".TP", names, _text(action.help or "")]
    return lines


def render(registry: PluginRegistry, version: str) -> str:
    """The page, for the gadgets and operators installed."""
    from igrun.core.cli.flags import gadget_parser

    lines = [
        f'.TH IGRUN 1 "" "igrun {_text(version)}" "User Commands"',
        ".SH NAME",
        "igrun \\- run eBPF gadgets: what is this host, or this one container, doing right now",
        ".SH SYNOPSIS",
        "\\fBigrun\\fR [\\fB\\-v\\fR|\\fB\\-vv\\fR] \\fICATEGORY\\fR \\fIGADGET\\fR "
        "[\\fIflags\\fR]",
        ".br",
        "\\fBigrun\\fR \\fICOMMAND\\fR [\\fIargs\\fR]",
        ".SH COMMANDS",
    ]
    for usage, what in COMMANDS:
        lines += [".TP", f"\\fBigrun {_text(usage)}\\fR", _text(what)]
    lines += [".SH GADGETS"]
    for gadget in sorted(registry.gadgets().values(), key=lambda g: g.full_name()):
        parser, _ = gadget_parser(gadget, registry)
        lines += [f".SS igrun {_text(gadget.full_name())}", _text(gadget.description) + "."]
        lines += flag_spellings(parser)
    lines += [
        ".SH VERBOSITY",
        "\\fB\\-v\\fR: the container runtimes asked and what each answered, the containers "
        "selected, the events buffer, each program attached and where. \\fB\\-vv\\fR: also "
        "libbpf's own messages.",
        ".SH ENVIRONMENT",
        ".TP",
        "\\fBIGRUN_\\fR\\fIKEY\\fR",
        "the value of a param (\\fBIGRUN_OUTPUT=json\\fR, \\fBIGRUN_TIMEOUT=10s\\fR): "
        "over the config file, under the command line",
        ".TP",
        "\\fBIGRUN_PIN_ROOT\\fR",
        "the bpffs folder runs pin their maps under (default /sys/fs/bpf/gadget)",
        ".SH FILES",
        ".TP",
        "\\fI$XDG_CONFIG_HOME/igrun/config.toml\\fR, \\fI~/.config/igrun/config.toml\\fR",
        "defaults for the gadgets (\\fBigrun config default\\fR prints a complete one)",
        ".SH EXIT STATUS",
        "0: done, or stopped by Ctrl\\-C, SIGTERM or SIGHUP; 1: a runtime problem; "
        "2: a usage mistake (one line on stderr).",
    ]
    return "\n".join(lines) + "\n"
