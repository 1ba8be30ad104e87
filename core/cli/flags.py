"""A gadget's flags: its params, the runtime's and its operators' as one argparse parser, and
the help that lists every field a run can show."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from igrun.core.errors import (
    IgrunError,
    UsageError,
    output_failed,
)
from igrun.core.gadget import Category, Gadget
from igrun.core.params import ParamDesc, TypeHint

if TYPE_CHECKING:
    from igrun.core.operator import Operator
    from igrun.core.plugins import PluginRegistry


PROG = "igrun"
VERBOSE_HELP = (
    "show what igrun did: runtimes asked, containers selected, buffers, programs attached "
    "(-vv: libbpf's own messages too)"
)
TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-ca")
"""The flags that, with ``--remote``, come before the command: they run it on an agent."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one line (an exception), not usage plus exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")

    def _print_message(self, message: str, file: Any = None) -> None:
        """``--help`` to a full disk is an error (argparse would say nothing)."""
        if message:
            try:
                (file or sys.stderr).write(message)
            except OSError as exc:
                raise output_failed(exc) from None


def version_text() -> str:
    from importlib.metadata import version

    return version("igrun")


def flag_spellings(desc: ParamDesc, claimed: frozenset[str] = frozenset()) -> list[str]:
    """``--key`` and the alias, unless a flag added before (the gadget's own) claimed the
    alias: ``trace fsslower -m`` is its minimum latency, as in ``ig``, so max-rows keeps only
    ``--max-rows`` there."""
    names = [f"--{desc.key}"]
    if desc.alias:
        alias = f"-{desc.alias}" if len(desc.alias) == 1 else f"--{desc.alias}"
        if alias not in claimed:
            names.insert(0, alias)
    return names


def _help(desc: ParamDesc) -> str:
    text = desc.description or desc.key
    if desc.possible_values:
        text += f" (one of: {', '.join(desc.possible_values)})"
    if desc.default and desc.type_hint is not TypeHint.BOOL:
        text += f" [default: {desc.default}]"
    return text.replace("%", "%%")


def add_params(
    group: argparse._ArgumentGroup, descs: Sequence[ParamDesc], prefix: str
) -> dict[str, ParamDesc]:
    """One flag per param; returns argparse dest -> param, so values can be routed back."""
    dests = {}
    claimed = frozenset(opt for action in group._actions for opt in action.option_strings)
    for desc in descs:
        dest = f"{prefix}{desc.key}"
        kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": _help(desc)}
        kwargs["type"] = desc.flag_value  # a flag given empty is a mistake, not the default
        if desc.type_hint is TypeHint.BOOL:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        elif desc.repeatable:
            kwargs.update(action="append", metavar=desc.key.upper())
        else:
            kwargs.update(metavar=desc.key.upper())
        try:
            group.add_argument(*flag_spellings(desc, claimed), **kwargs)
        except argparse.ArgumentError as exc:
            raise IgrunError(f"two parameters claim the same flag: {exc}") from None
        dests[dest] = desc
    return dests


def _fields_help(gadget: type[Gadget], operators: Sequence[type[Operator]] = ()) -> str:
    """Every field a run can show: the gadget's, then those each operator adds, marked with
    the operator's name (a config file's chain must put a filter on them after it)."""
    lines = ["fields (for -F, --sort and -o columns=…; * = shown by default):"]
    rows = [(f, "") for f in gadget.schema.fields]
    names = set(gadget.schema.names())
    for op in operators:
        added = [f for f in op.fields if f.name not in names]
        names.update(f.name for f in added)
        rows += [(f, f" [operator {op.name}]") for f in added]
    width = max([18, *(len(f.name) for f, _ in rows)])
    for f, origin in rows:
        mark = " " if f.column.hidden else "*"
        lines.append(f"  {mark} {f.name:<{width}} {f.kind.value:<6} {f.description}{origin}")
    return "\n".join(lines)


def _formats_help(gadget: type[Gadget]) -> str:
    """The output formats the gadget adds to ``-o`` (its default marked), or ``""``."""
    from igrun.core.gadget import gadget_output_formats

    formats, default = gadget_output_formats(gadget)
    if not formats:
        return ""
    lines = ["output formats of this gadget (-o NAME; * = the default):"]
    width = max(len(name) for name in formats)
    for name, fmt in formats.items():
        mark = "*" if name == default else " "
        lines.append(f"  {mark} {name:<{width}}  {fmt.description}")
    return "\n".join(lines)


def join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--sort -pid`` means the value ``-pid``: argparse would read a flag, so write it as
    ``--sort=-pid`` for every option that takes a value."""
    takes_value = {}
    for action in parser._actions:
        if action.option_strings and action.nargs is None:
            long = max(action.option_strings, key=len)
            takes_value.update({opt: long for opt in action.option_strings})
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        dash_value = value.startswith("-") and not value.startswith("--")
        if token in takes_value and dash_value and value not in takes_value:
            out.append(f"{takes_value[token]}={value}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def gadget_parser(
    gadget: type[Gadget], registry: PluginRegistry
) -> tuple[Parser, dict[str, tuple[str, str]]]:
    from igrun.core.gadget import gadget_param_defaults
    from igrun.core.params import with_defaults
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime

    operators = Runtime(registry.operators()).operators_for(gadget)
    epilog = []
    if gadget.examples:
        epilog.append("examples:\n" + "\n".join(f"  {e}" for e in gadget.examples))
    formats = _formats_help(gadget)
    if formats:
        epilog.append(formats)
    epilog.append(_fields_help(gadget, operators))
    defaults = gadget_param_defaults(gadget)
    parser = Parser(
        prog=f"{PROG} {gadget.full_name()}",
        description=gadget.description,
        epilog="\n\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    routes: dict[str, tuple[str, str]] = {}
    if gadget.params:
        group = parser.add_argument_group("gadget")
        for dest, desc in add_params(group, gadget.params, "g.").items():
            routes[dest] = ("", desc.key)
    group = parser.add_argument_group("runtime")
    runtime_params = with_defaults(RUNTIME_PARAMS, defaults)
    for dest, desc in add_params(group, runtime_params, "r.").items():
        routes[dest] = ("runtime.", desc.key)
    for op in operators:
        if not op.params:
            continue
        group = parser.add_argument_group(f"operator {op.name}", op.description or None)
        op_params = with_defaults(op.params, defaults)
        for dest, desc in add_params(group, op_params, f"o.{op.name}.").items():
            routes[dest] = (f"operator.{op.name}.", desc.key)
    return parser, routes


def flag_values(args: argparse.Namespace, routes: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Parsed flags as the flat parameter map (``key``, ``runtime.key``, ``operator.x.key``)."""
    out = {}
    for dest, (prefix, key) in routes.items():
        value = getattr(args, dest)
        if value is None:
            continue
        out[prefix + key] = ",".join(value) if isinstance(value, list) else str(value)
    return out


def split_gadget_name(argv: list[str]) -> tuple[str, list[str]]:
    """``["trace", "exec", ...]`` or ``["trace_exec", ...]`` -> ``("trace exec", rest)``."""
    first = argv[0]
    categories = {c.value for c in Category}
    if first in categories and Category(first).standalone:  # igrun traceloop -c web
        return first, argv[1:]
    if first in categories:
        if len(argv) < 2 or argv[1].startswith("-"):
            raise UsageError(f"{PROG} {first}: name a gadget (see '{PROG} {first} --help')")
        return f"{first} {argv[1]}", argv[2:]
    if "_" in first:
        category, _, name = first.partition("_")
        return f"{category} {name}", argv[1:]
    raise UsageError(f"unknown command {first!r} (see '{PROG} --help')")
