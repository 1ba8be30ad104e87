"""``igrun run FILE.bpf.o [flags]``: the command that runs a bare object.

The gadget class is made from the object
(:func:`igrun.core.objectrun.declarations.gadget_from_object`);
which of several tracers it reads (``--buffer-map``) must be known before that, so it is taken
from the command line first. The rest of the flags are parsed and run as for any gadget.
"""

from __future__ import annotations

from pathlib import Path

from igrun.core.errors import UsageError
from igrun.core.objectrun.declarations import gadget_from_object
from igrun.core.objectrun.gadgets import PARAM_BUFFER_MAP

USAGE = "igrun run FILE.bpf.o [flags]  (igrun run FILE.bpf.o --help lists them)"


def buffer_map_flag(argv: list[str]) -> str | None:
    """The value of ``--buffer-map`` in ``argv`` (the last one given), or None."""
    flag = f"--{PARAM_BUFFER_MAP}"
    found = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == flag:
            if i + 1 >= len(argv):
                raise UsageError(f"{flag}: expected a map name")
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.removeprefix(flag + "=")
    return found


def cmd_run(argv: list[str]) -> int:
    """``igrun run FILE.bpf.o [flags]``."""
    from igrun.core.cli.main import STDOUT, run_gadget_class
    from igrun.core.plugins import registry

    if argv[:1] in (["-h"], ["--help"]):
        STDOUT.write(
            f"usage: {USAGE}\n\nRun a compiled CO-RE object that declares its "
            "events with GADGET_TRACER or GADGET_SNAPSHOTTER (igrun/macros.h).\n"
        )
        return 0
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"igrun run: name the object first: {USAGE}")
    gadget = gadget_from_object(Path(argv[0]), buffer_map_flag(argv[1:]))
    return run_gadget_class(registry(), gadget, argv[1:], prog=f"igrun run {argv[0]}")
