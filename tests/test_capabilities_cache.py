"""``trace capabilities`` reads the kernel's caller ranges from ``/proc/kallsyms`` once per
boot: later starts take them from the cache, which only a root-owned folder no one else may
write to is trusted with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from igrun.plugins.trace_capabilities import (
    MAX_CALLERS,
    cached_caller_ranges,
    caller_ranges,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="kernel addresses need root")


def test_first_start_reads_kallsyms_and_keeps_the_table(tmp_path: Path) -> None:
    cache_dir = tmp_path / "igrun"
    table = cached_caller_ranges(cache_dir)
    assert table == caller_ranges()
    assert any(table)
    (kept,) = cache_dir.iterdir()
    assert kept.name.startswith("capabilities-callers-")
    assert kept.read_bytes() == table
    assert cache_dir.stat().st_mode & 0o777 == 0o700


def test_later_starts_take_the_cache(tmp_path: Path) -> None:
    cache_dir = tmp_path / "igrun"
    cached_caller_ranges(cache_dir)
    (kept,) = cache_dir.iterdir()
    mark = bytes(range(256)) * (len(kept.read_bytes()) // 256)
    kept.write_bytes(mark)  # what a later start reads, not kallsyms
    assert cached_caller_ranges(cache_dir) == mark
    assert len(mark) == MAX_CALLERS * 24


def test_a_folder_others_may_write_to_is_not_trusted(tmp_path: Path) -> None:
    cache_dir = tmp_path / "igrun"
    cached_caller_ranges(cache_dir)
    (kept,) = cache_dir.iterdir()
    kept.write_bytes(b"\xff" * len(kept.read_bytes()))
    cache_dir.chmod(0o777)
    assert cached_caller_ranges(cache_dir) == caller_ranges()
