"""The ``igrun`` launcher.

``igrun list`` shows the installed gadgets; ``igrun <category> <gadget> [flags]`` (or
``igrun <category>_<gadget>``) runs one, with flags generated from the params of the gadget, the
runtime and the operators that apply to it. Bad input gets one line on stderr and exit code 2;
a runtime failure one line and exit code 1; ``-v`` adds details. Data goes to stdout only.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from igrun.core.errors import (
    EnvironmentProblem,
    GadgetNotFound,
    IgrunError,
    OutputClosed,
    OutputError,
    UsageError,
    output_failed,
)
from igrun.core.gadget import Category, Gadget, GadgetContext
from igrun.core.params import ParamDesc, TypeHint

if TYPE_CHECKING:
    from igrun.core.config.runs import RunSpec
    from igrun.core.operator import Operator
    from igrun.core.plugins import PluginRegistry

PROG = "igrun"
VERBOSE_HELP = (
    "show what igrun did: runtimes asked, containers selected, buffers, programs attached "
    "(-vv: libbpf's own messages too)"
)


class _Parser(argparse.ArgumentParser):
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


def _version() -> str:
    from importlib.metadata import version

    return version("igrun")


def _flags(desc: ParamDesc, claimed: frozenset[str] = frozenset()) -> list[str]:
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


def _add_params(
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
            group.add_argument(*_flags(desc, claimed), **kwargs)
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


def _join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
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


def _gadget_parser(
    gadget: type[Gadget], registry: PluginRegistry
) -> tuple[_Parser, dict[str, tuple[str, str]]]:
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime

    operators = Runtime(registry.operators()).operators_for(gadget)
    epilog = []
    if gadget.examples:
        epilog.append("examples:\n" + "\n".join(f"  {e}" for e in gadget.examples))
    epilog.append(_fields_help(gadget, operators))
    parser = _Parser(
        prog=f"{PROG} {gadget.full_name()}",
        description=gadget.description,
        epilog="\n\n".join(epilog),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    routes: dict[str, tuple[str, str]] = {}
    if gadget.params:
        group = parser.add_argument_group("gadget")
        for dest, desc in _add_params(group, gadget.params, "g.").items():
            routes[dest] = ("", desc.key)
    group = parser.add_argument_group("runtime")
    for dest, desc in _add_params(group, RUNTIME_PARAMS, "r.").items():
        routes[dest] = ("runtime.", desc.key)
    for op in operators:
        if not op.params:
            continue
        group = parser.add_argument_group(f"operator {op.name}", op.description or None)
        for dest, desc in _add_params(group, op.params, f"o.{op.name}.").items():
            routes[dest] = (f"operator.{op.name}.", desc.key)
    return parser, routes


def _values(args: argparse.Namespace, routes: dict[str, tuple[str, str]]) -> dict[str, str]:
    """Parsed flags as the flat parameter map (``key``, ``runtime.key``, ``operator.x.key``)."""
    out = {}
    for dest, (prefix, key) in routes.items():
        value = getattr(args, dest)
        if value is None:
            continue
        out[prefix + key] = ",".join(value) if isinstance(value, list) else str(value)
    return out


def _split_gadget_name(argv: list[str]) -> tuple[str, list[str]]:
    """``["trace", "exec", ...]`` or ``["trace_exec", ...]`` -> ``("trace exec", rest)``."""
    first = argv[0]
    categories = {c.value for c in Category}
    if first in categories:
        if len(argv) < 2 or argv[1].startswith("-"):
            raise UsageError(f"{PROG} {first}: name a gadget (see '{PROG} {first} --help')")
        return f"{first} {argv[1]}", argv[2:]
    if "_" in first:
        category, _, name = first.partition("_")
        return f"{category} {name}", argv[1:]
    raise UsageError(f"unknown command {first!r} (see '{PROG} --help')")


def cmd_list(registry: PluginRegistry, argv: list[str], out: Any) -> int:
    """``igrun list [CATEGORY] [-o columns|json]``."""
    import json

    parser = _Parser(prog=f"{PROG} list", description="the installed gadgets")
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
    _Parser(prog=f"{PROG} version", description="the version of igrun").parse_args(argv)
    out.write(f"{PROG} {_version()}\n")
    return 0


def cmd_completion(argv: list[str], out: Any) -> int:
    """``igrun completion bash|zsh|fish``: a script that completes igrun's command line."""
    from igrun.core.cli import complete

    parser = _Parser(
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

    _Parser(
        prog=f"{PROG} man",
        description="print the manual page (roff); read it with: igrun man | man -l -",
    ).parse_args(argv)
    out.write(manpage.render(registry, _version()))
    return 0


def cmd_list_containers(argv: list[str], out: Any) -> int:
    """``igrun list-containers [-w] [-o columns|json] [-r runtimes]``."""
    import json
    import time

    from igrun.core.containers.collection import Container, ContainerCollection
    from igrun.core.containers.discovery import Discovery, select_clients
    from igrun.core.output.printable import printable

    parser = _Parser(prog=f"{PROG} list-containers", description="the containers of this host")
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


def _top_help(registry: PluginRegistry) -> str:
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


ADDED_TO_THE_FILE = ("operator.filter.filter",)
"""Values the command line adds to those of the config file, rather than replacing them."""


def run_gadget(
    registry: PluginRegistry, name: str, argv: list[str], config: Path | None = None
) -> int:
    """One gadget: values from its flags, then ``IGRUN_<KEY>``, then the config file's run of
    this gadget (``--config``, else the user's default file), then the defaults."""
    return run_gadget_class(registry, registry.gadget(name), argv, config)


def run_gadget_class(
    registry: PluginRegistry,
    gadget: type[Gadget],
    argv: list[str],
    config: Path | None = None,
    prog: str | None = None,
) -> int:
    """Parse ``argv`` against ``gadget``'s flags and run it (``prog`` names the command in
    help and errors, e.g. ``igrun run x.bpf.o``)."""
    from igrun.core.config import runs as cfg
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime

    parser, routes = _gadget_parser(gadget, registry)
    if prog is not None:
        parser.prog = prog
    args = parser.parse_args(_join_dash_values(parser, argv))
    if args.verbose:
        _configure_logging(args.verbose)
    spec = _spec_from_file(registry, gadget, config)
    runtime = Runtime(registry.operators(), chain=spec.chain)
    environment = cfg.from_environment(gadget, runtime.operators_for(gadget), RUNTIME_PARAMS)
    given = _values(args, routes)
    values = {**spec.values, **environment, **given}
    for key in ADDED_TO_THE_FILE:  # the file's filters hold, the command line's are added
        if key in given and spec.values.get(key):
            values[key] = f"{spec.values[key]},{given[key]}"
    gadget_params, runtime_params, operator_params = runtime.params_for(gadget, values)
    ctx = runtime.run(gadget, gadget_params, runtime_params, operator_params, hooks=registry.hook)
    _report_lost(ctx)
    return 0


def _report_lost(ctx: GadgetContext, whose: str = "") -> None:
    """A run that lost events says so once more as it ends, on stderr, with what to try: the
    warnings during the run may have scrolled away."""
    from igrun.core.run.local import lost_summary

    summary = lost_summary(ctx)
    if summary is not None:
        sys.stderr.write(f"{PROG}: {whose}{summary}\n")


def _specs(registry: PluginRegistry, path: Path) -> list[RunSpec]:
    """Every run of a config file, checked against the gadgets and operators it names."""
    from igrun.core.config import check as configfile
    from igrun.core.run.local import RUNTIME_PARAMS

    specs = []
    for i, entry in enumerate(configfile.load(path).run):
        try:
            gadget = registry.gadget(entry.gadget)
        except GadgetNotFound as exc:
            raise UsageError(f"config {path}: run[{i}].gadget: {exc}") from None
        try:
            spec = configfile.resolve(
                entry, f"run[{i}]", gadget, registry.operators(), RUNTIME_PARAMS
            )
        except UsageError as exc:
            raise UsageError(f"config {path}: {exc}") from None
        specs.append(spec)
    return specs


def _spec_from_file(registry: PluginRegistry, gadget: type[Gadget], path: Path | None) -> RunSpec:
    from igrun.core.config import runs as cfg

    if path is None:
        path = cfg.default_path()
        if not cfg.readable(path):
            return cfg.RunSpec(gadget)
    mine = [s for s in _specs(registry, path) if s.gadget is gadget]
    return mine[0] if mine else cfg.RunSpec(gadget)


def _config_flags(argv: list[str]) -> dict[str, str]:
    """``igrun --config FILE -t 10s``: the runtime flags, for every run of the file."""
    from igrun.core.run.local import RUNTIME_PARAMS

    parser = _Parser(
        prog=f"{PROG} --config FILE",
        description="start every run of a config file; these flags apply to each run",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    group = parser.add_argument_group("runtime")
    routes = {
        dest: ("runtime.", d.key) for dest, d in _add_params(group, RUNTIME_PARAMS, "r.").items()
    }
    return _values(parser.parse_args(_join_dash_values(parser, argv)), routes)


def run_config(registry: PluginRegistry, path: Path, argv: Sequence[str] = ()) -> int:
    """``igrun --config FILE [runtime flags]``: every run of the file at once."""
    from igrun.core.config import runs as cfg
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime
    from igrun.core.run.many import run_all

    flags = _config_flags(list(argv))
    specs = _specs(registry, path)
    if not specs:
        raise UsageError(f"config {path}: no [[run]] to start")
    for spec in specs:
        ops = Runtime(registry.operators(), chain=spec.chain).operators_for(spec.gadget)
        spec.values.update(cfg.from_environment(spec.gadget, ops, RUNTIME_PARAMS))
        spec.values.update(flags)
    _check_specs(registry, path, specs)
    if len(specs) == 1:
        spec = specs[0]
        runtime = Runtime(registry.operators(), chain=spec.chain)
        params = runtime.params_for(spec.gadget, spec.values)
        _report_lost(runtime.run(spec.gadget, *params, hooks=registry.hook))
        return 0

    def report(spec: RunSpec, exc: BaseException) -> None:
        whose = "" if isinstance(exc, OutputError) else f"{spec.gadget.full_name()}: "  # shared
        sys.stderr.write(failure_line(exc, whose))

    def ended(spec: RunSpec, ctx: GadgetContext) -> None:
        _report_lost(ctx, f"{spec.gadget.full_name()}: ")

    errors = run_all(
        specs, registry.operators(), hooks=registry.hook, on_error=report, on_end=ended
    )
    return 1 if errors else 0


def _check_specs(registry: PluginRegistry, path: Path, specs: list[RunSpec]) -> None:
    """Every run of the file checked before any starts (no root needed); an operator's
    refusal says where in the file that operator is."""
    from igrun.core.run.check import ChainError
    from igrun.core.run.local import Runtime

    for i, spec in enumerate(specs):
        runtime = Runtime(registry.operators(), chain=spec.chain)
        try:
            runtime.check(spec.gadget, *runtime.params_for(spec.gadget, spec.values))
        except ChainError as exc:
            where = f"run[{i}]"
            if spec.chain is not None and exc.operator in spec.chain:
                where += f".operators[{spec.chain.index(exc.operator)}]"
            raise UsageError(f"config {path}: {where}: {exc}") from None


def failure_line(exc: BaseException, whose: str = "") -> str:
    """The one line for an exception that ended a run: an :class:`IgrunError` says what it
    says; anything else raised in a plugin names the plugin's distribution and version; the
    rest is igrun's own bug, an internal error."""
    if isinstance(exc, IgrunError):
        return f"{PROG}: error: {whose}{exc}\n"
    from igrun.core.plugins import blame

    what = f"{type(exc).__name__}: {exc}"
    plugin = blame(exc)
    if plugin is not None:
        return f"{PROG}: error: {whose}{plugin}: {what} (-v for details)\n"
    return f"{PROG}: internal error: {whose}{what} (-v for details)\n"


def cmd_config(registry: PluginRegistry, argv: list[str], path: Path | None, out: Any) -> int:
    """``igrun config default [GADGET]``: a complete config to start from;
    ``igrun config view [GADGET]``: what the file and the environment make of it."""
    from igrun.core.config import runs as cfg
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime

    parser = _Parser(
        prog=f"{PROG} config",
        description="default: a complete config to start from; view: what the config file "
        "(--config FILE, else the user's default file) and the environment (IGRUN_<KEY>) "
        "make of a run",
    )
    parser.add_argument("action", choices=("default", "view"))
    parser.add_argument("gadget", nargs="*", help="CATEGORY GADGET (default: trace exec)")
    args = parser.parse_args(argv)
    action, name = args.action, " ".join(args.gadget)
    if action == "default":
        gadget = registry.gadget(name or "trace exec")
        specs = [cfg.RunSpec(gadget)]
    else:
        file = path or cfg.default_path()
        specs = _specs(registry, file) if cfg.readable(file) else []
        if name:
            gadget = registry.gadget(name)
            specs = [s for s in specs if s.gadget is gadget][:1] or [cfg.RunSpec(gadget)]
        elif not specs:  # no file: what the defaults and the environment give
            out.write(f"# no config file at {file}: the defaults, with IGRUN_<KEY> applied\n")
            specs = [cfg.RunSpec(registry.gadget("trace exec"))]
    for spec in specs:
        ops = Runtime(registry.operators(), chain=spec.chain).operators_for(spec.gadget)
        if action == "view":
            spec.values.update(cfg.from_environment(spec.gadget, ops, RUNTIME_PARAMS))
        out.write(cfg.to_toml(spec, ops, RUNTIME_PARAMS))
    return 0


def _take_config(args: list[str]) -> tuple[Path | None, list[str]]:
    """``--config FILE`` (or ``--config=FILE``) from anywhere in the arguments."""
    for i, arg in enumerate(args):
        if arg == "--config":
            if i + 1 >= len(args):
                raise UsageError(f"{PROG}: --config needs a file")
            return Path(args[i + 1]), args[:i] + args[i + 2 :]
        if arg.startswith("--config="):
            return Path(arg.removeprefix("--config=")), args[:i] + args[i + 1 :]
    return None, args


def _configure_logging(level: int) -> None:
    """``-v`` (1): igrun's debug lines; ``-vv`` (2): libbpf's own messages as well."""
    from igrun.core import log

    log.configure(level >= 1)
    if level >= 2:
        from igrun.core.bpf.objects import route_libbpf_logs

        route_libbpf_logs(verbose=True)


def _verbosity(args: Sequence[str]) -> int:
    """How many ``-v`` the arguments hold (``-v``, ``--verbose``, ``-vv``, ``-vvv``)."""
    level = 0
    for arg in args:
        if arg == "--":
            break
        if arg == "--verbose":
            level += 1
        elif len(arg) > 1 and arg.startswith("-") and set(arg[1:]) == {"v"}:
            level += len(arg) - 1
    return level


class _Stdout:
    """``sys.stdout`` for the commands that print tables and configs: a failed write (a
    full disk, a closed pipe) is an :class:`IgrunError`, so one line, not a traceback."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except OSError as exc:
            raise output_failed(exc) from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except OSError as exc:
            raise output_failed(exc) from None


STDOUT = _Stdout()
"""Where commands print what is not a gadget's output (gadgets write through ``-o``)."""


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _interrupt_on_stop_signals() -> None:
    """Until a run takes them over, SIGTERM and SIGHUP interrupt like Ctrl-C: igrun undoes
    what it started and exits 0, quietly (start-up, ``list-containers -w``)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) is signal.SIG_DFL:  # not when ignored (nohup)
                signal.signal(sig, signal.default_int_handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (tests call it directly)."""
    code = _main(argv)
    try:  # what is still buffered, while a failure can still be one line
        sys.stdout.flush()
    except OSError as exc:
        _quiet_stdout()
        if code == 0 and not isinstance(exc, BrokenPipeError):
            sys.stderr.write(f"{PROG}: error: {output_failed(exc)}\n")
            return 1
    return code


def _main(argv: Sequence[str] | None) -> int:
    _interrupt_on_stop_signals()
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = _verbosity(args)
    while args and _verbosity(args[:1]):
        args.pop(0)
    _configure_logging(verbose)
    try:
        from igrun.core.plugins import registry

        reg = registry()
        if args[:1] == ["__complete"]:  # its words are the line being typed, --config too
            return cmd_complete(reg, args[1:], STDOUT)
        config, args = _take_config(args)
        while args and _verbosity(args[:1]):  # igrun --config FILE -v trace exec
            args.pop(0)
        if config is not None and (not args or args[0].startswith("-")):
            if any(a in ("-h", "--help") for a in args):
                _config_flags(["--help"])
            return run_config(reg, config, args)
        if not args or args[0] in ("-h", "--help", "help"):
            STDOUT.write(_top_help(reg))
            return 0
        command, rest = args[0], args[1:]
        if command in ("list", "config", "version", "completion", "man"):  # -v is global
            rest = [a for a in rest if not _verbosity([a])]
        if command == "--version":
            return cmd_version(rest, STDOUT)
        commands = {
            "list": lambda: cmd_list(reg, rest, STDOUT),
            "list-containers": lambda: cmd_list_containers(rest, STDOUT),
            "config": lambda: cmd_config(reg, rest, config, STDOUT),
            "version": lambda: cmd_version(rest, STDOUT),
            "completion": lambda: cmd_completion(rest, STDOUT),
            "man": lambda: cmd_man(reg, rest, STDOUT),
        }
        if command in commands:
            return commands[command]()
        if command == "run":
            from igrun.core.cli.run import cmd_run

            return cmd_run(rest)
        if command in {c.value for c in Category} and rest[:1] in ([], ["-h"], ["--help"]):
            return cmd_category(reg, command, STDOUT)
        name, rest = _split_gadget_name(args)
        return run_gadget(reg, name, rest, config)
    except SystemExit as exc:  # argparse's --help
        return int(exc.code or 0)
    except (BrokenPipeError, OutputClosed):
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        return 0
    except IgrunError as exc:
        if verbose:
            traceback.print_exc()
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
    except Exception as exc:  # a plugin's failure, or igrun's bug: one line either way
        if verbose:
            traceback.print_exc()
        sys.stderr.write(failure_line(exc))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
