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


def _flags(desc: ParamDesc) -> list[str]:
    names = [f"--{desc.key}"]
    if desc.alias:
        names.insert(0, f"-{desc.alias}" if len(desc.alias) == 1 else f"--{desc.alias}")
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
            group.add_argument(*_flags(desc), **kwargs)
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
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug details")
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
            raise UsageError(f"{PROG} {first}: name a gadget (see '{PROG} list')")
        return f"{first} {argv[1]}", argv[2:]
    if "_" in first:
        category, _, name = first.partition("_")
        return f"{category} {name}", argv[1:]
    raise UsageError(f"unknown command {first!r} (see '{PROG} --help')")


def cmd_list(registry: PluginRegistry, out: Any) -> int:
    gadgets = sorted(registry.gadgets().values(), key=lambda g: (g.category.value, g.name))
    rows = [("CATEGORY", "GADGET", "DESCRIPTION", "PACKAGE")]
    rows += [(g.category.value, g.name, g.description, registry.provider(g)) for g in gadgets]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        out.write("  ".join(v.ljust(w) for v, w in zip(r[:3], widths, strict=True)))
        out.write(f"  {r[3]}\n")
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
    parser.add_argument("-v", "--verbose", action="store_true")
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
        f"usage: {PROG} [-v] list | {PROG} [-v] <category> <gadget> [flags]",
        "",
        "Run eBPF gadgets: what is this host, or this one container, doing right now?",
        "",
        "commands:",
        "  list                   the installed gadgets",
        "  list-containers [-w]   the containers igrun sees (-w: then watch them come and go)",
        "  run FILE.bpf.o         run a compiled CO-RE object: no Python needed (--help: flags)",
        "  --config FILE          start the runs of a config file (with a gadget: its defaults)",
        "  config default|view    a complete config to start from | what igrun makes of yours",
        "  <category> <gadget>    run a gadget; '<category> <gadget> --help' lists its flags",
        "",
        "gadgets:",
    ]
    for g in sorted(registry.gadgets().values(), key=lambda g: g.full_name()):
        lines.append(f"  {g.full_name():<22} {g.description}")
    lines += ["", f"example: {PROG} trace exec -o json --timeout 10s"]
    return "\n".join(lines) + "\n"


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
        _configure_logging(True)
    spec = _spec_from_file(registry, gadget, config)
    runtime = Runtime(registry.operators(), chain=spec.chain)
    environment = cfg.from_environment(gadget, runtime.operators_for(gadget), RUNTIME_PARAMS)
    values = {**spec.values, **environment, **_values(args, routes)}
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


def run_config(registry: PluginRegistry, path: Path) -> int:
    """``igrun --config FILE``: every run of the file at once."""
    from igrun.core.config import runs as cfg
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime
    from igrun.core.run.many import run_all

    specs = _specs(registry, path)
    if not specs:
        raise UsageError(f"config {path}: no [[run]] to start")
    for spec in specs:
        ops = Runtime(registry.operators(), chain=spec.chain).operators_for(spec.gadget)
        spec.values.update(cfg.from_environment(spec.gadget, ops, RUNTIME_PARAMS))
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

    if not argv or argv[0] not in ("default", "view"):
        raise UsageError(f"{PROG} config: use 'config default [GADGET]' or 'config view [GADGET]'")
    action, name = argv[0], " ".join(argv[1:])
    if action == "default":
        gadget = registry.gadget(name or "trace exec")
        specs = [cfg.RunSpec(gadget)]
    else:
        file = path or cfg.default_path()
        specs = _specs(registry, file) if cfg.readable(file) else []
        if name:
            gadget = registry.gadget(name)
            specs = [s for s in specs if s.gadget is gadget][:1] or [cfg.RunSpec(gadget)]
        elif not specs:
            raise UsageError(f"no config file at {file} (see '{PROG} config default')")
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


def _configure_logging(verbose: bool) -> None:
    from igrun.core import log

    log.configure(verbose)
    if verbose:
        from igrun.core.bpf.objects import route_libbpf_logs

        route_libbpf_logs(verbose=True)


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
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while args and args[0] in ("-v", "--verbose"):
        verbose = True
        args.pop(0)
    verbose = verbose or "-v" in args or "--verbose" in args
    _configure_logging(verbose)
    _interrupt_on_stop_signals()
    try:
        from igrun.core.plugins import registry

        reg = registry()
        config, args = _take_config(args)
        if config is not None and all(a in ("-v", "--verbose") for a in args):
            return run_config(reg, config)
        if not args or args[0] in ("-h", "--help", "help"):
            STDOUT.write(_top_help(reg))
            return 0
        if args[0] == "--version":
            STDOUT.write(f"{PROG} {_version()}\n")
            return 0
        if args[0] == "list":
            return cmd_list(reg, STDOUT)
        if args[0] == "list-containers":
            return cmd_list_containers(args[1:], STDOUT)
        if args[0] == "run":
            from igrun.core.cli.run import cmd_run

            return cmd_run(args[1:])
        if args[0] == "config":
            return cmd_config(reg, args[1:], config, STDOUT)
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
