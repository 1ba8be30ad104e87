"""Keeping the container collection current, without kprobes.

Discovery asks each selected runtime client for its running containers at start, then again
whenever one of the runtimes' state folders changes (inotify) and, as a fallback, every five
seconds. Watching folders alone is late by a scan, so where fanotify permission events work
(root in the host pid namespace) runc is also held at each container's start until the
container is described and in the collection (:mod:`igrun.core.containers.starthold`): a container
that
runc starts is in the filter map, with its name, before its first instruction. A state folder that
does not exist yet (a runtime started after igrun) is waited for through inotify on its
nearest existing parent, and its appearance is a change. Each rescan syncs the collection (a
few hundred microseconds of Python: the fallback is rare, and nothing is looked for on a
shorter timer, so that an idle run costs next to nothing). Nothing a runtime does can crash a
running gadget: every failure becomes one warning, once. The first scan asks the runtimes all
at once and waits at most two seconds for each, so a runtime that hangs (a Docker socket that
never answers) delays a run's start by that much, and Ctrl-C during the wait ends the run.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from igrun.core.containers.collection import (
    LOW_LEVEL,
    Container,
    ContainerCollection,
    boot_ns,
)
from igrun.core.containers.engines import (
    RUNTIME_NAMES,
    RuntimeClient,
    RuntimeUnavailable,
    all_clients,
)
from igrun.core.containers.starthold import Birth, StartHold
from igrun.core.errors import EnvironmentProblem, ParamError
from igrun.core.log import get_logger

POLL_SECONDS = 5.0
STARTUP_SECONDS = 2.0
"""How long a run's start waits for each runtime's first answer, at most."""
CANCEL_CHECK_S = 0.05
"""How often that wait looks whether the run was cancelled (Ctrl-C)."""
RETRY_SECONDS = 0.05
RETRIES = 3
SETTLE_MS = 10  # let a burst of state writes arrive before rescanning
# inotify's flags (linux/inotify.h: a stable ABI), here rather than from inotify_simple, whose
# import (ctypes and subprocess, about 30 ms) waits until a watch is made.
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
WATCHED = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR
APPEARING = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR
"""What a missing state folder's nearest existing parent is watched for: something new in it,
which may be the folder or a step towards it."""


def runtime_names(runtimes: Iterable[str]) -> list[str]:
    """The runtimes asked for, lower-cased, or a :class:`ParamError` for one igrun does not
    know (a check that asks no runtime anything)."""
    wanted = [r.strip().lower() for r in runtimes if r.strip()]
    unknown = [r for r in wanted if r not in RUNTIME_NAMES]
    if unknown:
        raise ParamError(
            f"--runtimes: unknown runtime {unknown[0]!r} (one of: {', '.join(RUNTIME_NAMES)})"
        )
    return wanted


def select_clients(
    runtimes: Iterable[str] = (), containerd_namespaces: Iterable[str] = ("k8s.io",)
) -> list[RuntimeClient]:
    """The clients for ``runtimes`` (all present ones when empty), checking names and
    presence: an absent runtime that was asked for is a warning, or an error when it was the
    only one asked for."""
    wanted = runtime_names(runtimes)
    clients = all_clients(containerd_namespaces)
    if not wanted:
        present = [c for c in clients if c.available()]
        absent = [c.name for c in clients if c not in present]
        get_logger().debug(
            "runtimes_asked",
            asked=",".join(c.name for c in present) or "none",
            not_present=",".join(absent) or "none",
        )
        return present
    chosen = [c for c in clients if c.name in wanted]
    for c in chosen:
        c.requested = True
    missing = [c.name for c in chosen if not c.available()]
    if missing and len(wanted) == 1:
        raise EnvironmentProblem(f"container runtime {missing[0]} is not available on this host")
    for name in missing:
        get_logger().warning("runtime_unavailable", runtime=name)
    asked = [c for c in chosen if c.available()]
    get_logger().debug("runtimes_asked", asked=",".join(c.name for c in asked) or "none")
    return asked


class Discovery:
    """Polls runtime clients and keeps a :class:`ContainerCollection` in sync.

    The first scan asks every client at once and waits for each at most
    :data:`STARTUP_SECONDS` (a runtime that does not answer by then is asked again in the
    background), and stops waiting as soon as the run is cancelled: a slow runtime neither
    holds a run's start nor makes Ctrl-C wait. The only runtime asked for by name must answer
    (or the run ends with why)."""

    def __init__(
        self,
        collection: ContainerCollection,
        clients: list[RuntimeClient],
        interval: float = POLL_SECONDS,
    ) -> None:
        self.collection = collection
        self.clients = clients
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: StateWatcher | None = None
        self._hold: StartHold | None = None
        self.incomplete = False
        """The last scan missed a manager's answer."""
        self._retries = 0
        self._warned: set[str] = set()
        self._asking = {id(c): threading.Lock() for c in clients}
        """Held while a client is being asked: an answer the first scan gave up waiting for
        is not asked for a second time meanwhile (nor is any client asked twice at once)."""

    def scan(self) -> list[Container]:
        """Every running container, each claimed by the first client that knows it."""
        found: dict[str, Container] = {}
        self.incomplete = False
        for client in self.clients:
            containers, _ = self._ask(client, wait=False)
            if containers is None:  # failed, or still answering an earlier question
                self.incomplete |= client.name not in LOW_LEVEL and client.available()
                continue
            for c in containers:
                found.setdefault(c.id, c)
        return list(found.values())

    def _ask(
        self, client: RuntimeClient, wait: bool = True, quiet: bool = False
    ) -> tuple[list[Container] | None, str]:
        """``client``'s containers, or None and why not (warned about once, unless
        ``quiet``); None and "" when it is still answering an earlier question (and not
        ``wait``ing for it)."""
        lock = self._asking[id(client)]
        if not lock.acquire(blocking=wait):
            return None, ""
        try:
            containers = client.containers()
        except RuntimeUnavailable as exc:
            self._warn(client.name, str(exc), quiet=quiet or not client.requested)
            return None, str(exc)
        except Exception as exc:  # a runtime's surprise must not end a run
            self._warn(client.name, f"{type(exc).__name__}: {exc}", quiet=quiet)
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            lock.release()
        for problem in client.problems:
            self._warn(client.name, problem)
        client.problems.clear()
        return containers, ""

    def first_scan(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Ask every client at once, each in a thread of its own, and sync the collection
        with the answers that came within :data:`STARTUP_SECONDS` (or before ``cancelled()``
        said the run is over). With ``-v``, one line per client says how long it took and
        whether it answered or was given up on (failed, too slow, or the run ended)."""
        started = time.monotonic()
        answers: dict[int, tuple[list[Container] | None, str, float]] = {}
        all_in = threading.Event()
        strict = len(self.clients) == 1 and self.clients[0].requested
        """The only runtime asked for by name must answer: its failure ends the run, in one
        line (not a warning as well)."""

        def ask(client: RuntimeClient) -> None:
            containers, why = self._ask(client, quiet=strict)
            answers[id(client)] = (containers, why, time.monotonic() - started)
            if len(answers) == len(self.clients):
                all_in.set()

        for client in self.clients:
            name = f"igrun-ask-{client.name}"
            threading.Thread(target=ask, args=(client,), name=name, daemon=True).start()
        deadline = started + STARTUP_SECONDS
        while self.clients and not cancelled():
            left = deadline - time.monotonic()
            if left <= 0 or all_in.wait(min(CANCEL_CHECK_S, left)):
                break
        waited = time.monotonic() - started
        late = "cancelled" if cancelled() else f"no answer within {STARTUP_SECONDS:g} s"
        found: dict[str, Container] = {}
        log = get_logger()
        for client in self.clients:  # in the clients' order: managers claim first
            containers, why, seconds = answers.get(id(client), (None, late, waited))
            took = round(seconds, 3)
            if containers is None:
                log.debug("runtime_gave_up", runtime=client.name, seconds=took, why=why)
                continue
            log.debug("runtime_answered", runtime=client.name, seconds=took, found=len(containers))
            for c in containers:
                found.setdefault(c.id, c)
        self.collection.sync(list(found.values()))
        if strict and not cancelled():
            only = self.clients[0]
            containers, why, _ = answers.get(id(only), (None, late, waited))
            if containers is None:
                raise EnvironmentProblem(f"container runtime {only.name}: {why}")

    def _warn(self, runtime: str, message: str, quiet: bool = False) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log = get_logger().debug if quiet else get_logger().warning
            log("container_discovery", runtime=runtime, problem=message)

    def refresh(self) -> None:
        """Scan and sync. A scan where a manager failed to answer (its list being rewritten,
        say) removes nothing and is retried shortly, a few times, before it counts."""
        since = boot_ns()
        found = self.scan()
        partial = self.incomplete and self._retries < RETRIES
        self._retries = self._retries + 1 if partial else 0
        if partial:  # a new one only runc knows may be the failed manager's: not by its id
            live = self.collection.get
            found = [c for c in found if c.runtime not in LOW_LEVEL or live(c.id)]
        self.collection.sync(found, since=since, partial=partial)

    def learn(self, birth: Birth) -> None:
        """Describe a container that runc holds before its first instruction, and add it.

        Each client is asked in turn (managers first) and the first that knows the id names
        it, from its runtime's state read now; runc's own description (the bundle's
        annotations) is the last resort, when runc is among the runtimes asked.
        """
        for attempt in range(RETRIES + 1):
            failed = False
            for client in self.clients:
                if failed and client.name in LOW_LEVEL and attempt < RETRIES:
                    break  # a manager may know it: ask again rather than name it by its id
                try:
                    c = client.describe(birth.id, birth.pid, birth.state_dir, birth.bundle)
                except RuntimeUnavailable:
                    failed |= client.name not in LOW_LEVEL
                    continue
                if c is not None:
                    self.collection.add(c)
                    get_logger().debug(
                        "container_held",
                        id=c.id[:12],
                        name=c.name,
                        runtime=c.runtime,
                        mntns=c.mntns,
                        pid=c.pid,
                    )
                    return
            if not failed:
                return
            time.sleep(RETRY_SECONDS)

    def start(self, cancelled: Callable[[], bool] = lambda: False, hold: bool = True) -> None:
        """A first full scan now (see :meth:`first_scan`), then updates in the background
        until :meth:`stop`. With ``hold``, runc is also held at each container's start until
        the container is known (:mod:`igrun.core.containers.starthold`), where fanotify allows
        it."""
        if hold and os.geteuid() == 0:
            self._hold = StartHold(self.learn)
            if not self._hold.start():
                self._hold = None
        watcher = self._watcher = StateWatcher([d for c in self.clients for d in c.state_dirs()])
        try:
            self.first_scan(cancelled)
        except BaseException:
            self._watcher = None
            watcher.close()
            if self._hold is not None:
                self._hold.stop()
                self._hold = None
            raise
        self._thread = threading.Thread(
            target=self._loop, args=(watcher,), name="igrun-discovery", daemon=True
        )
        self._thread.start()

    def _loop(self, watcher: StateWatcher) -> None:
        while not self._stop.is_set():
            watcher.wait(RETRY_SECONDS if self._retries else self.interval)
            if self._stop.is_set():
                break
            try:
                self.refresh()
            except Exception as exc:  # pragma: no cover - belt and braces
                self._warn("all", f"{type(exc).__name__}: {exc}")

    def stop(self) -> None:
        """End the background updates; returns at once (the watcher is woken, not waited
        out)."""
        self._stop.set()
        if self._hold is not None:
            self._hold.stop()
            self._hold = None
        if self._watcher is not None:
            self._watcher.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=2)
            if self._thread.is_alive():  # stuck in a runtime's answer: it ends with us
                return
            self._thread = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None


class StateWatcher:
    """Wakes discovery when a runtime state folder, or a container folder in it, changes.

    Each root is watched, and each container folder inside it (state files are written
    there, often by rename). A root that does not exist yet has its nearest existing parent
    watched instead, for what is created in it; the watch moves down as the path appears.
    """

    def __init__(self, roots: Iterable[Path]) -> None:
        from inotify_simple import INotify  # type: ignore[import-untyped]

        self._inotify = INotify()
        self._interrupt_r, self._interrupt_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._inotify.fileno(), select.POLLIN)
        self._poller.register(self._interrupt_r, select.POLLIN)
        self._roots = list(dict.fromkeys(roots))
        self._watched: dict[int, Path] = {}
        self._parents: dict[int, Path] = {}
        """Watches on missing roots' nearest existing parents, by descriptor."""
        self._watch_all()

    def _add(self, path: Path) -> None:
        if path in self._watched.values():
            return
        with contextlib.suppress(OSError):  # absent, or gone already: a rescan tells
            wd = self._inotify.add_watch(path, WATCHED)
            self._parents.pop(wd, None)  # a parent that is now watched in full
            self._watched[wd] = path

    def _watch_all(self) -> bool:
        """Watch every root that exists (and its container folders), and the nearest
        existing parent of every other one; True when a root is newly watched."""
        added = False
        for root in self._roots:
            if root in self._watched.values() or not root.is_dir():
                continue
            self._add(root)
            added = True
            for child in root.iterdir():
                if child.is_dir():
                    self._add(child)
        self._watch_parents()
        return added

    def _watch_parents(self) -> None:
        watched = set(self._watched.values())
        wanted = {_nearest_existing(r) for r in self._roots if r not in watched}
        for wd, path in list(self._parents.items()):
            if path not in wanted:
                del self._parents[wd]
                with contextlib.suppress(OSError):  # gone already
                    self._inotify.rm_watch(wd)
        for path in wanted - watched - set(self._parents.values()):
            with contextlib.suppress(OSError):  # gone meanwhile: the next event tells
                self._parents[self._inotify.add_watch(path, APPEARING)] = path

    def wait(self, timeout: float) -> None:
        """Return after a change (and its burst), when a missing root appears, or after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self._watch_all():
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready = {fd for fd, _ in self._poller.poll(left * 1000)}
            if not ready or self._interrupt_r in ready:
                return
            time.sleep(SETTLE_MS / 1000)
            if self._handle(self._inotify.read(timeout=0)):
                return

    def interrupt(self) -> None:
        """Make :meth:`wait` return now, and every later wait too (from another thread:
        discovery is stopping)."""
        with contextlib.suppress(BlockingIOError):  # interrupted already
            os.write(self._interrupt_w, b"!")

    def _handle(self, events: list[Any]) -> bool:
        """Follow new container folders; True when an event concerns a watched folder (not
        only a missing root's parent)."""
        changed = False
        for event in events:
            if event.mask & IN_IGNORED:  # a folder gone, or a parent's watch removed
                self._parents.pop(event.wd, None)
                changed |= self._watched.pop(event.wd, None) is not None
                continue
            if event.wd in self._parents:
                continue
            changed = True
            if event.mask & IN_ISDIR and event.mask & (IN_CREATE | IN_MOVED_TO):
                parent = self._watched.get(event.wd)
                if parent is not None and parent in self._roots:
                    self._add(parent / event.name)
        return changed

    def close(self) -> None:
        self._inotify.close()
        os.close(self._interrupt_r)
        os.close(self._interrupt_w)


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or the closest of its parents that is a folder."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    return Path(path.anchor or "/")
