"""The gadget's own tests: igrun.testing (installed with igrun) gives the ``bpf`` marker and
the ``igrun_cli`` fixture, with no conftest. Run as root: ``python -m pytest tests``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf

HOLD = "import os, sys; print(os.open(sys.argv[1], os.O_RDONLY), flush=True); sys.stdin.read()"


def test_a_snapshot_shows_a_held_file_exactly(igrun_cli, tmp_path: Path) -> None:
    held = tmp_path / "held"
    held.write_text("x")
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        fd = int(child.stdout.readline())
        # --host: the test's processes are in no container; -m 0: every row, not ig's 50.
        done = igrun_cli.run(
            "snapshot", "openfiles", "--host", "--pid", str(child.pid), "-m", "0", "-o", "json"
        )
    finally:
        child.kill()
        child.wait()
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    (row,) = [r for r in rows if r["fd"] == fd]
    assert (row["pid"], row["path"], row["type"]) == (child.pid, str(held), "REG")
    assert row["inode"] == held.stat().st_ino and row["uid"] == os.getuid()
    assert [r["fd"] for r in rows] == sorted(r["fd"] for r in rows)  # sorted by pid, then fd


def test_an_interval_run_writes_one_array_per_snapshot(igrun_cli) -> None:
    run = igrun_cli.start(
        "snapshot", "openfiles", "--host", "--pid", str(os.getpid()), "--interval", "1s",
        "--timeout", "1500ms", "-o", "json",
    )  # fmt: skip
    out, err = run.communicate()
    assert run.returncode == 0, err
    windows = [json.loads(line) for line in out.splitlines()]
    assert len(windows) == 2 and all(isinstance(w, list) and w for w in windows)
    run.assert_released()  # its programs, maps, links and pin folder are gone
