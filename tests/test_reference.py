"""docs/gadgets.md is generated from the gadgets: it must say what they are now."""

from __future__ import annotations

from pathlib import Path

from igrun.core.cli.reference import builtin, hooks
from igrun.plugins.trace_exec import TraceExec

DOC = Path(__file__).resolve().parent.parent / "docs" / "gadgets.md"


def test_reference_is_current() -> None:
    assert DOC.read_text() == builtin(), "docs/gadgets.md is stale: run `nox -s docs`"


def test_hooks_come_from_the_compiled_object() -> None:
    assert hooks(TraceExec) == [
        "tracepoint/syscalls/sys_enter_execve",
        "tracepoint/syscalls/sys_enter_execveat",
        "tracepoint/syscalls/sys_exit_execve",
        "tracepoint/syscalls/sys_exit_execveat",
    ]
