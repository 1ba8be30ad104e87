"""No loss where a C tracer has none: ``trace exec`` under an exec storm with every CPU busy.

The storm (``bench/storm.c``) makes an exact number of execs, each with one argument that
marks it; a busy loop runs on each CPU at normal priority, so igrun's reader competes for
the CPU as it would on a loaded host. igrun, with its default buffer, must show every exec.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IGRUN, ROOT

from igrun.testing import READY_LINE

pytestmark = pytest.mark.bpf

STORM_SOURCE = ROOT / "bench" / "storm.c"
EXECS = 3000
WORKERS = 2
SETTLE = 1.0  # for the last batch to be drained before the stop


@pytest.fixture(scope="module")
def storm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("storm") / "storm"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(STORM_SOURCE)], check=True)
    return binary


@contextlib.contextmanager
def cpu_hogs() -> Iterator[None]:
    """A busy loop pinned to each CPU, at normal priority."""
    hogs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass",
            ]
        )
        for cpu in sorted(os.sched_getaffinity(0))
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def test_trace_exec_loses_nothing_under_a_storm_with_every_cpu_busy(
    storm: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:12]
    out_path = tmp_path / "out.json"
    with cpu_hogs(), out_path.open("w") as out:
        # Output to a file, as a pipe nobody reads during the storm would block igrun.
        proc = subprocess.Popen(
            [*IGRUN, "trace", "exec", "--host", "-o", "json", "-v"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if READY_LINE.search(line):
                    break
            else:
                pytest.fail(f"igrun did not start (exit {proc.wait()})")
            argv = [str(storm), "--count", str(EXECS), "--workers", str(WORKERS), "--tag", tag]
            made = json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)
            time.sleep(SETTLE)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert made["execs"] == EXECS
    marker = f"igrun-storm-{tag}"
    records = [json.loads(line) for line in out_path.read_text().splitlines()]
    # By the marker alone: the first exec of each worker may show an empty argv[0] (the
    # program reads the parent's argv, and a page that is not yet faulted in reads as empty).
    seen = [r for r in records if r.get("args", [])[-1:] == [marker]]
    assert not re.search(r"lost \d+ events", err)
    assert not [r for r in records if r.get("type") == "warn"]
    assert len(seen) == EXECS
    assert {r["comm"] for r in seen} == {"true"}
