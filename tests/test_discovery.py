"""Discovery's watcher: woken by a runtime's state folders, and by a folder that appears."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from igrun.core.discovery import ROOT_CHECK_SECONDS, StateWatcher


def waited(watcher: StateWatcher, timeout: float, change: object = None) -> float:
    """Seconds ``watcher.wait(timeout)`` took, with ``change()`` run 0.1 s into it."""
    if callable(change):
        threading.Timer(0.1, change).start()
    start = time.monotonic()
    watcher.wait(timeout)
    return time.monotonic() - start


def test_a_new_container_folder_wakes_the_watcher_at_once(tmp_path: Path) -> None:
    root = tmp_path / "runc"
    root.mkdir()
    watcher = StateWatcher([root])
    try:
        assert waited(watcher, 5.0, lambda: (root / "c1").mkdir()) < 1.0
        assert waited(watcher, 5.0, lambda: (root / "c1" / "state.json").write_text("{}")) < 1.0
        assert 0.25 <= waited(watcher, 0.3) < 1.0  # nothing happens: the timeout
    finally:
        watcher.close()


def test_a_state_folder_that_appears_later_is_a_change(tmp_path: Path) -> None:
    present, later = tmp_path / "present", tmp_path / "later"
    present.mkdir()
    watcher = StateWatcher([present, later])
    try:
        took = waited(watcher, 10.0, later.mkdir)
        assert took < 0.1 + ROOT_CHECK_SECONDS + 0.5  # looked for every half second
        assert waited(watcher, 5.0, lambda: (later / "c2").mkdir()) < 1.0  # now watched
    finally:
        watcher.close()
