"""Config files on the command line: ``--config FILE`` (every run), a gadget's defaults from
the user's file, and ``config default|view``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from igrun.core.errors import (
    GadgetNotFound,
    IgrunError,
    OutputError,
    UsageError,
)
from igrun.core.gadget import Gadget, GadgetContext

if TYPE_CHECKING:
    from igrun.core.config.runs import RunSpec
    from igrun.core.plugins import PluginRegistry

from igrun.core.cli.flags import (
    PROG,
    VERBOSE_HELP,
    Parser,
    add_params,
    flag_values,
    join_dash_values,
)


def report_lost(ctx: GadgetContext, whose: str = "") -> None:
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


def spec_from_file(registry: PluginRegistry, gadget: type[Gadget], path: Path | None) -> RunSpec:
    from igrun.core.config import runs as cfg

    if path is None:
        path = cfg.default_path()
        if not cfg.readable(path):
            return cfg.RunSpec(gadget)
    mine = [s for s in _specs(registry, path) if s.gadget is gadget]
    return mine[0] if mine else cfg.RunSpec(gadget)


def config_flags(argv: list[str]) -> dict[str, str]:
    """``igrun --config FILE -t 10s``: the runtime flags, for every run of the file."""
    from igrun.core.run.local import RUNTIME_PARAMS

    parser = Parser(
        prog=f"{PROG} --config FILE",
        description="start every run of a config file; these flags apply to each run",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    group = parser.add_argument_group("runtime")
    routes = {
        dest: ("runtime.", d.key) for dest, d in add_params(group, RUNTIME_PARAMS, "r.").items()
    }
    return flag_values(parser.parse_args(join_dash_values(parser, argv)), routes)


def run_config(registry: PluginRegistry, path: Path, argv: Sequence[str] = ()) -> int:
    """``igrun --config FILE [runtime flags]``: every run of the file at once."""
    from igrun.core.config import runs as cfg
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime
    from igrun.core.run.many import run_all

    flags = config_flags(list(argv))
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
        report_lost(runtime.run(spec.gadget, *params, hooks=registry.hook))
        return 0

    def report(spec: RunSpec, exc: BaseException) -> None:
        whose = "" if isinstance(exc, OutputError) else f"{spec.gadget.full_name()}: "  # shared
        sys.stderr.write(failure_line(exc, whose))

    def ended(spec: RunSpec, ctx: GadgetContext) -> None:
        report_lost(ctx, f"{spec.gadget.full_name()}: ")

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

    parser = Parser(
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
        readable = cfg.readable(file)
        specs = _specs(registry, file) if readable else []
        if name:
            gadget = registry.gadget(name)
            specs = [s for s in specs if s.gadget is gadget][:1] or [cfg.RunSpec(gadget)]
        elif not readable:  # no file: what the defaults and the environment give
            out.write(f"# no config file at {file}: the defaults, with IGRUN_<KEY> applied\n")
            specs = [cfg.RunSpec(registry.gadget("trace exec"))]
    for spec in specs:
        ops = Runtime(registry.operators(), chain=spec.chain).operators_for(spec.gadget)
        if action == "view":
            spec.values.update(cfg.from_environment(spec.gadget, ops, RUNTIME_PARAMS))
        out.write(cfg.to_toml(spec, ops, RUNTIME_PARAMS))
    return 0


def take_config(args: list[str]) -> tuple[Path | None, list[str]]:
    """``--config FILE`` (or ``--config=FILE``) from anywhere in the arguments."""
    for i, arg in enumerate(args):
        if arg == "--config":
            if i + 1 >= len(args):
                raise UsageError(f"{PROG}: --config needs a file")
            return Path(args[i + 1]), args[:i] + args[i + 2 :]
        if arg.startswith("--config="):
            return Path(arg.removeprefix("--config=")), args[:i] + args[i + 1 :]
    return None, args
