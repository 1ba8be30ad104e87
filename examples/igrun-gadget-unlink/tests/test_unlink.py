"""The gadget's own tests: igrun.testing (installed with igrun) gives the ``bpf`` marker and
the ``igrun_trace`` and ``igrun_cli`` fixtures, with no conftest. Run as root:
``python -m pytest tests``."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf

UNLINK = "import os, sys; os.unlink(sys.argv[1])"
HOST = {"operator.containers.host": True}  # --host: this test's processes are in no container


def test_a_removal_is_one_exact_event(igrun_trace, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("x")
    child = {}

    def remove() -> None:
        proc = subprocess.Popen([sys.executable, "-c", UNLINK, str(victim)])
        child["pid"] = proc.pid
        assert proc.wait() == 0

    events = igrun_trace("trace unlink", remove, HOST)  # and nothing of the run is left
    (event,) = [e for e in events if e["pid"] == child["pid"]]
    assert (event["path"], event["ret"], event["error"]) == (str(victim), 0, "")
    assert event["uid"] == os.getuid()


def test_the_command_reports_a_failed_removal(igrun_cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    run = igrun_cli.start("trace", "unlink", "--host", "-o", "json")  # returns once ready
    proc = subprocess.Popen([sys.executable, "-c", UNLINK, str(missing)], stderr=subprocess.DEVNULL)
    proc.wait()
    out, err = run.stop()
    assert run.returncode == 0, err
    (event,) = [e for e in igrun_cli.events(out) if e["pid"] == proc.pid]
    assert (event["path"], event["ret"], event["error"]) == (
        str(missing),
        -errno.ENOENT,
        "ENOENT",
    )
    run.assert_released()  # its programs, maps, links and pin folder are gone
