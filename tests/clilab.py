"""The launcher as the CLI tests run it: in-process (``run``, with a fresh plugin registry)
and as a command (``igrun``)."""

from __future__ import annotations

import os
import subprocess

import pytest

import igrun.testing as testing
from igrun.core import plugins
from igrun.core.cli import main as cli

IGRUN = list(testing.IGRUN)


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test finds the plugins anew (a test may install one)."""
    monkeypatch.setattr(plugins, "_default", None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``igrun ARGV`` in this process: its exit code, stdout and stderr."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def igrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``igrun ARGS`` as a command, to its end."""
    return subprocess.run(
        [*IGRUN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
