"""The throughput benchmark still runs: one short cell per ring consumer, every event counted.

Figures are not asserted (speed is measured by ``nox -s bench``, not by tests); what is checked
is that the benchmark's C reference and igrun's consumer (a gadget and an operator of its own,
through the public API) both drain the burst program and account for every event, so the
README's table can always be remade.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_the_throughput_benchmark_runs_and_loses_nothing_at_100k_events_per_s(
    tmp_path: Path, busy: bool
) -> None:
    """Also with a busy loop on every CPU: igrun's reader then waits for its CPU like any
    other process, while its batches (read in place in the ring, see docs/architecture.md)
    hold ring space until the JSON of each is written."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rates", "100000", "--duration",
         "0.5", "--only", "C ring|ring, null sink|ring, JSON", "--no-exec", "--out",
         str(tmp_path), *(["--busy"] if busy else [])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (report,) = tmp_path.glob("*.json")
    cells = json.loads(report.read_text())["cells"]
    assert [c["consumer"] for c in cells] == [
        "C ring",
        "igrun ring, null sink",
        "igrun ring, JSON to a file",
    ]
    for cell in cells:
        # MIN_EVENTS per cell, as far as the generator got (less when it shares its CPU).
        assert cell["expected"] > (50_000 if busy else 90_000)
        assert (cell["received"], cell["lost"]) == (cell["expected"], 0), cell
        assert cell["cpu_seconds"] > 0
