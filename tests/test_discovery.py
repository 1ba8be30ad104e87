"""Discovery's watcher: woken by a runtime's state folders, and by a folder that appears."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from igrun.core.containers import ContainerCollection
from igrun.core.discovery import Discovery, StateWatcher
from igrun.core.runtimes.oci import RuncClient


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
        assert waited(watcher, 10.0, later.mkdir) < 0.4  # its parent is watched, not polled
        assert waited(watcher, 5.0, lambda: (later / "c2").mkdir()) < 1.0  # now watched
    finally:
        watcher.close()


def test_a_deep_state_folder_is_followed_down_as_its_path_appears(tmp_path: Path) -> None:
    root = tmp_path / "containerd" / "tasks" / "k8s.io"
    watcher = StateWatcher([root])
    try:
        # Steps towards the root, and what else appears beside it, are not changes.
        assert waited(watcher, 0.5, (tmp_path / "containerd").mkdir) >= 0.45
        assert waited(watcher, 0.5, (tmp_path / "unrelated").mkdir) >= 0.45
        assert waited(watcher, 0.5, (tmp_path / "containerd" / "tasks").mkdir) >= 0.45
        assert waited(watcher, 10.0, root.mkdir) < 0.4
        assert waited(watcher, 5.0, lambda: (root / "c3").mkdir()) < 1.0
    finally:
        watcher.close()


def test_a_state_folder_removed_and_made_again_is_watched_again(tmp_path: Path) -> None:
    root = tmp_path / "runc"
    root.mkdir()
    watcher = StateWatcher([root])
    try:
        assert waited(watcher, 5.0, root.rmdir) < 1.0
        assert waited(watcher, 10.0, root.mkdir) < 0.4
        assert waited(watcher, 5.0, lambda: (root / "c4").mkdir()) < 1.0
    finally:
        watcher.close()


def test_stopping_discovery_does_not_wait_out_its_watcher(tmp_path: Path) -> None:
    """A run that ends (Ctrl-C, --timeout) is not held up by the watcher's long wait."""
    discovery = Discovery(ContainerCollection(), [RuncClient((tmp_path,))], interval=30.0)
    discovery.start()
    time.sleep(0.2)  # the watcher waits now
    start = time.monotonic()
    discovery.stop()
    assert time.monotonic() - start < 0.5
