"""The ``igrun`` launcher.

``igrun list`` shows the installed gadgets; ``igrun <category> <gadget> [flags]`` (or
``igrun <category>_<gadget>``) runs one, with flags generated from the params of the gadget, the
runtime and the operators that apply to it. Bad input gets one line on stderr and exit code 2;
a runtime failure one line and exit code 1; ``-v`` adds details. Data goes to stdout only.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from igrun.core.errors import (
    IgrunError,
    OutputClosed,
    output_failed,
)
from igrun.core.gadget import Category, Gadget
from igrun.core.run.headstart import discard as discard_head_start

if TYPE_CHECKING:
    from igrun.core.config.runs import RunSpec
    from igrun.core.plugins import PluginRegistry

from igrun.core.cli.commands import (
    cmd_category,
    cmd_complete,
    cmd_completion,
    cmd_list,
    cmd_list_containers,
    cmd_man,
    cmd_version,
    top_help,
)
from igrun.core.cli.configs import (
    cmd_config,
    config_flags,
    failure_line,
    report_lost,
    run_config,
    spec_from_file,
    take_config,
)
from igrun.core.cli.flags import (
    PROG,
    TLS_FLAGS,
    flag_values,
    gadget_parser,
    join_dash_values,
    split_gadget_name,
)

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
    from igrun.core.config.runs import RunSpec
    from igrun.core.run.local import Runtime

    spec = RunSpec(gadget)
    values = gadget_values(registry, gadget, argv, config, prog, spec)
    runtime = Runtime(registry.operators(), chain=spec.chain)
    gadget_params, runtime_params, operator_params = runtime.params_for(gadget, values)
    ctx = runtime.run(gadget, gadget_params, runtime_params, operator_params, hooks=registry.hook)
    report_lost(ctx)
    return 0


def gadget_values(
    registry: PluginRegistry,
    gadget: type[Gadget],
    argv: list[str],
    config: Path | None = None,
    prog: str | None = None,
    spec: RunSpec | None = None,
) -> dict[str, str]:
    """The flat param map of a run of ``gadget``: its flags, then ``IGRUN_<KEY>``, then the
    config file (whose chain, if any, goes into ``spec``)."""
    from igrun.core.config import runs as cfg
    from igrun.core.run.local import RUNTIME_PARAMS, Runtime

    parser, routes = gadget_parser(gadget, registry)
    if prog is not None:
        parser.prog = prog
    args = parser.parse_args(join_dash_values(parser, argv))
    if args.verbose:
        _configure_logging(args.verbose)
    found = spec_from_file(registry, gadget, config)
    if spec is not None:
        spec.chain = found.chain
    runtime = Runtime(registry.operators(), chain=found.chain)
    environment = cfg.from_environment(gadget, runtime.operators_for(gadget), RUNTIME_PARAMS)
    given = flag_values(args, routes)
    values = {**found.values, **environment, **given}
    for key in ADDED_TO_THE_FILE:  # the file's filters hold, the command line's are added
        if key in given and found.values.get(key):
            values[key] = f"{found.values[key]},{given[key]}"
    return values


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
    what it started and exits 0, quietly (start-up, ``list-containers -w``). The handler
    the package set while the launcher was being imported is replaced too (SIGINT's by
    Python's own)."""
    import signal
    import threading

    from igrun.core.cli import note_stop

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            current = signal.getsignal(sig)
            if current is note_stop or (current is signal.SIG_DFL and sig != signal.SIGINT):
                signal.signal(sig, signal.default_int_handler)  # not when ignored (nohup)


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
    try:
        return _dispatch(argv)
    finally:
        # A head start no run took (bad flags, --help, a failure); after a second stop
        # signal, the process's end releases it as well.
        with contextlib.suppress(KeyboardInterrupt):
            discard_head_start()


def _dispatch(argv: Sequence[str] | None) -> int:
    from igrun.core.cli import stopped

    try:  # from here a stop signal is a KeyboardInterrupt: nothing started yet, exit 0
        _interrupt_on_stop_signals()
        if stopped:  # a stop signal while the launcher was imported: nothing was started
            return 0
        args = list(sys.argv[1:] if argv is None else argv)
        verbose = _verbosity(args)
        while args and _verbosity(args[:1]):
            args.pop(0)
        _configure_logging(verbose)
    except KeyboardInterrupt:
        return 0
    try:
        from igrun.core.plugins import registry

        reg = registry()
        if args[:1] == ["__complete"]:  # its words are the line being typed, --config too
            return cmd_complete(reg, args[1:], STDOUT)
        config, args = take_config(args)
        while args and _verbosity(args[:1]):  # igrun --config FILE -v trace exec
            args.pop(0)
        if args[:1] and args[0].split("=", 1)[0] in ("--remote", *TLS_FLAGS):
            from igrun.core.cli.remote import run_remote_gadget, take_remote

            target, args = take_remote(args)
            if target is not None:
                return run_remote_gadget(reg, target, args, config)
        if config is not None and (not args or args[0].startswith("-")):
            if any(a in ("-h", "--help") for a in args):
                config_flags(["--help"])
            return run_config(reg, config, args)
        if not args or args[0] in ("-h", "--help", "help"):
            STDOUT.write(top_help(reg))
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
        if command == "serve":
            from igrun.core.cli.remote import cmd_serve

            return cmd_serve(rest)
        if command == "run":
            from igrun.core.cli.run import cmd_run

            return cmd_run(rest)
        standalone = {c.value for c in Category if c.standalone}
        if command in {c.value for c in Category} - standalone and rest[:1] in (
            [],
            ["-h"],
            ["--help"],
        ):
            return cmd_category(reg, command, STDOUT)
        name, rest = split_gadget_name(args)
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
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return exc.exit_code
    except Exception as exc:  # a plugin's failure, or igrun's bug: one line either way
        if _stopped(exc):
            return 0
        if verbose:
            import traceback

            traceback.print_exc()
        sys.stderr.write(failure_line(exc))
        return 1


def _stopped(exc: BaseException) -> bool:
    """Whether a stop signal's KeyboardInterrupt is behind ``exc``: Python wraps one raised in
    some places in an error of its own (``RuntimeError: Error calling __set_name__`` when it
    comes while a module being imported creates a class)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
