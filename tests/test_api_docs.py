"""Every Python example of docs/api.md runs as it is written, and checks its own results.

Each example runs in a fresh interpreter (as a reader would paste it), in an empty folder;
an example ends with ``assert`` lines, so a wrong event, a missing one or a map with the
wrong value fails here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
EXAMPLES = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.M | re.S)


def test_the_page_has_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.bpf
@pytest.mark.parametrize("source", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_example_runs(source: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", source], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
