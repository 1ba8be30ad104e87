"""What the container tests share: checks for the tools, markers, and reading igrun's events."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import IgrunCli

IMAGE = "localhost/igrun-test-busybox:latest"


def needs(*tools: str) -> None:
    """Skip without the tools, or fail when BPF tests are required (CI installs them)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing and os.environ.get("IGRUN_REQUIRE_BPF") != "1":
        pytest.skip(f"needs {', '.join(missing)}")
    assert not missing, f"{missing} must be installed (scripts/install.sh does it)"


@dataclass
class Running:
    name: str
    id: str
    pid: int
    runtime: str

    @property
    def mntns(self) -> int:
        return os.stat(f"/proc/{self.pid}/ns/mnt").st_ino


def marker() -> str:
    return f"igrun-{uuid.uuid4().hex[:8]}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def stop_and_read(cli: IgrunCli, proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Let the last events drain, end the run with Ctrl-C, and return its JSON events."""
    time.sleep(0.5)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return cli.events(out)


def with_arg(events: list[dict[str, Any]], arg: str) -> list[dict[str, Any]]:
    """The echo of ``arg`` itself (not the command that asked for it)."""
    return [e for e in events if e["args"] == ["/bin/echo", arg]]
