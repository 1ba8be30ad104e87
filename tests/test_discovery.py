"""Discovery's watcher: woken by a runtime's state folders, and by a folder that appears."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from igrun.core.containers.collection import Container, ContainerCollection, boot_ns, from_process
from igrun.core.containers.discovery import Discovery, StateWatcher
from igrun.core.containers.engines.oci import RuncClient


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


# ---- the collection under a start hold: added one by one, while scans run -----------------


def _me(id: str, name: str, runtime: str = "runc") -> Container:
    import os

    c = from_process(id, name, runtime, os.getpid())
    assert c is not None
    return c


def test_a_reused_mount_namespace_retires_the_stale_container_at_the_new_start() -> None:
    """Two containers cannot share a mount-ns id at once: the kernel reused the id, so the
    older one is gone, whatever the last scan said."""
    collection = ContainerCollection()
    heard: list[tuple[str, str]] = []
    collection.subscribe(lambda kind, c: heard.append((kind, c.id)))
    old = _me("old", "old")
    collection.sync([old])
    new = replace(_me("new", "new"), started_ns=old.started_ns + 1000)
    collection.add(new)
    assert [c.id for c in collection.containers()] == ["new"]
    (gone, live) = collection.candidates(new.mntns)
    assert (gone.id, gone.removed_ns, live.id) == ("old", new.started_ns, "new")
    assert heard == [("added", "old"), ("removed", "old"), ("added", "new")]


def test_a_held_container_outlives_scans_that_do_not_show_it_yet() -> None:
    """runc writes state.json just after the hold: a scan that began earlier, or that read
    the folder first, must not remove a container whose init still runs."""
    collection = ContainerCollection()
    before = boot_ns()
    held = _me("held", "web")
    collection.add(held)
    collection.sync([], since=before)  # began before the add
    collection.sync([], since=boot_ns())  # began after, state not written yet: init runs
    assert [c.id for c in collection.containers()] == ["held"]
    ended = replace(held, pid=held.pid, started_ns=held.started_ns - 1)  # "another" process
    collection = ContainerCollection()
    collection.add(ended)
    collection.sync([], since=boot_ns())
    assert collection.containers() == []


def test_a_manager_name_that_arrives_later_renames_the_container() -> None:
    """A container first claimed under its id (its manager's list unreadable for a moment)
    is renamed when the manager knows it; no removal in between."""
    collection = ContainerCollection()
    heard: list[tuple[str, str]] = []
    collection.subscribe(lambda kind, c: heard.append((kind, c.name)))
    by_id = _me("0123456789abcdef" * 4, "0123456789abcdef" * 4, "runc")
    collection.sync([by_id])
    named = replace(by_id, name="web", runtime="podman")
    collection.sync([named])
    assert [(c.name, c.runtime) for c in collection.containers()] == [("web", "podman")]
    assert heard == [("added", by_id.name), ("changed", "web")]


def test_runcs_record_never_takes_back_a_managers_name() -> None:
    """A held container, named by podman, then seen by a scan in which podman's list did not
    show it yet but runc's state did: it keeps its name (no change is told, so it never
    leaves a by-name kernel filter); a rename by the manager itself still goes through."""
    collection = ContainerCollection()
    heard: list[tuple[str, str]] = []
    collection.subscribe(lambda kind, c: heard.append((kind, c.name)))
    id = "0123456789abcdef" * 4
    named = _me(id, "web", "podman")
    collection.add(named)
    collection.sync([replace(named, name=id, runtime="runc")], partial=True)
    collection.sync([replace(named, name=id, runtime="crun")])
    assert [(c.name, c.runtime) for c in collection.containers()] == [("web", "podman")]
    collection.sync([replace(named, name="web2")])
    assert heard == [("added", "web"), ("changed", "web2")]


def test_a_runc_state_whose_pid_went_to_another_process_is_not_a_container(
    tmp_path: Path,
) -> None:
    import json
    import os

    from igrun.core.containers.collection import CLK_TCK, process_start_ns

    ticks = process_start_ns(os.getpid()) * CLK_TCK // 1_000_000_000
    for id, start in (("mine", ticks), ("reused", ticks - 7)):
        (tmp_path / id).mkdir()
        state = {"id": id, "init_process_pid": os.getpid(), "init_process_start": start}
        (tmp_path / id / "state.json").write_text(json.dumps(state))
    assert [c.id for c in RuncClient((tmp_path,)).containers()] == ["mine"]


def test_a_manager_that_cannot_answer_for_a_moment_names_nothing_by_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """podman's list caught mid-write: runc's view of the same container is not taken (it
    would name it by its 64-character id); the scan is retried and podman names it."""
    import json
    import os

    from igrun.core.containers.collection import CLK_TCK, process_start_ns
    from igrun.core.containers.engines import storage

    store, run, root = tmp_path / "store", tmp_path / "run", tmp_path / "runc"
    for folder in (store, run, root):
        folder.mkdir()
    monkeypatch.setattr(storage, "STORAGE", store)
    monkeypatch.setattr(storage, "RUN_STORAGE", run)
    id = "ab" * 32
    ticks = process_start_ns(os.getpid()) * CLK_TCK // 1_000_000_000
    (root / id).mkdir()
    state = {"id": id, "init_process_pid": os.getpid(), "init_process_start": ticks}
    (root / id / "state.json").write_text(json.dumps(state))
    (run / id / "userdata").mkdir(parents=True)
    (run / id / "userdata" / "pidfile").write_text(str(os.getpid()))
    (store / "containers.json").write_text(f'[{{"id": "{id}", "names": ["we')
    collection = ContainerCollection()
    discovery = Discovery(collection, [storage.PodmanClient(), RuncClient((root,))])
    discovery.refresh()
    assert discovery.incomplete
    assert collection.containers() == []
    (store / "containers.json").write_text(json.dumps([{"id": id, "names": ["web"]}]))
    discovery.refresh()
    assert [(c.name, c.runtime) for c in collection.containers()] == [("web", "podman")]


def test_a_manager_that_never_answers_does_not_hide_runc_containers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os

    from igrun.core.containers.engines import storage

    store, root = tmp_path / "store", tmp_path / "runc"
    store.mkdir()
    root.mkdir()
    monkeypatch.setattr(storage, "STORAGE", store)
    (store / "containers.json").write_text("[")  # broken for good
    (root / "plain").mkdir()
    state = {"id": "plain", "init_process_pid": os.getpid()}
    (root / "plain" / "state.json").write_text(json.dumps(state))
    collection = ContainerCollection()
    discovery = Discovery(collection, [storage.PodmanClient(), RuncClient((root,))])
    for _ in range(4):  # three quick retries, then the scan counts
        discovery.refresh()
    assert [(c.name, c.runtime) for c in collection.containers()] == [("plain", "runc")]
