"""Holding runc at the moment a container's state is written, until igrun knows the container.

Watching state folders (:mod:`igrun.core.containers.discovery`) learns of a container a little after
runc writes its state, and by then a short-lived container may have run and gone. This module
closes that gap without kprobes, with fanotify permission events, the way Inspektor Gadget's
runcfanotify holds runc. How runc 1.1 starts a container, and where it is held:

1. ``runc create`` (or ``runc run``) makes the state folder ``<root>/<id>/`` with its
   ``exec.fifo``, then execs ``runc init`` from its own binary, passing the fifo as a
   descriptor. The runc binaries are marked ``FAN_OPEN_EXEC_PERM``: at that exec the child's
   descriptors name the state folder, whatever ``--root`` the caller chose (podman's
   ``/run/runc``, containerd's ``/run/containerd/runc/<ns>``, Docker's
   ``/run/docker/runtime-runc/moby``). The folder is marked ``FAN_OPEN_PERM`` with
   ``FAN_EVENT_ON_CHILD`` and the exec is let go at once.
2. When the container's init process has set up its namespaces it tells runc, which then
   opens a temporary file in the state folder to write ``state.json``. The init process waits
   for runc's answer before it goes on to the container's program, so holding that open holds
   the container before its first instruction. At that moment the init process is runc's
   child in the container's mount namespace: discovery describes the container (its name is
   read fresh from its runtime) and adds it to the collection, which puts its mount-ns id in
   the kernel filter map; then the open is allowed and the folder's mark removed.

crun 1.8 (podman's runtime on many hosts, also under containerd and Docker) is held at the
same moment: ``crun create`` makes the state folder ``<root>/<id>/`` (``/run/crun`` by
default), clones the container's init into its new namespaces, and only then writes
``status.tmp`` there, while the init waits for ``crun start``. The crun roots are watched
with inotify from the same thread, each new state folder is marked ``FAN_OPEN_PERM`` with
``FAN_EVENT_ON_CHILD`` as it appears (before crun clones the init, tens of ms later), and
the first open there by a crun whose child is in another mount namespace is held as above.
``crun run`` (create and start in one process, as a user types it) lets the init run its
program before it writes the status, so each new state folder's container root is marked
too: the crun making the folder is found among the processes seen exec'ing crun (its binary
is marked ``FAN_OPEN_EXEC_PERM``: each exec waits the moment it takes to note the folder crun
was started in, which a relative ``--config`` is relative to and which is gone once crun has
changed into its bundle), its bundle's config names the root folder, and that folder is
marked ``FAN_OPEN_PERM | FAN_EVENT_ON_CHILD | FAN_ONDIR``. The init's
first open there (its ``proc`` folder, to mount it: it has joined its cgroups and is in its
final mount namespace, and runs nothing of the container's yet) is held like the state's,
whichever comes first, and both marks go. When the root cannot be known in time the
container is learned at the status write, its first instructions already run (or maybe
running), and a ``container_start_not_held`` warning says so.

The hold is bounded (:data:`HOLD_SECONDS`): past it the open is allowed and a warning logged,
so a slow igrun delays a runtime by at most that much. If igrun dies its fanotify group is
closed, and the kernel lets every held event go on by itself. If igrun is stopped (SIGSTOP,
Ctrl-Z, a debugger) it answers nothing, and permission events have no timeout: a guard
process (:mod:`igrun.core.containers.holdguard`), told of every hold, answers for it what is
late. Opens by igrun itself are let
go at once. fanotify permission events need ``CAP_SYS_ADMIN`` in the host pid namespace and a
kernel built with ``CONFIG_FANOTIFY_ACCESS_PERMISSIONS``; without them discovery works as
before, from state folders alone. The fifo itself cannot be held: recent kernels send no
permission events for FIFOs.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from igrun.core.containers import fanotify, holdguard
from igrun.core.containers.engines.oci import CRUN_ROOTS
from igrun.core.log import get_logger

CRUN_CONFIG = "config.json"
CONFIG_MAX_BYTES = 4 << 20
CRUNS_KEPT = 64
"""crun processes remembered before the ended ones are forgotten."""
PERMISSION_EVENTS = fanotify.FAN_OPEN_PERM | fanotify.FAN_OPEN_EXEC_PERM
ROOT_MASK = fanotify.FAN_OPEN_PERM | fanotify.FAN_EVENT_ON_CHILD | fanotify.FAN_ONDIR
"""A crun container's root folder: the opens of what is in it, folders included."""
HOLD_SECONDS = 2.0
"""Longest a runtime waits for igrun; then it goes on and a warning says so."""
RUNC_NAMES = ("runc", "docker-runc")
RUNC_PLACES = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin")
FIFO = "exec.fifo"
INIT_COMM = "runc:[2:INIT]"


@dataclass(frozen=True)
class Birth:
    """A container whose init process waits, in its own namespaces, for runc to go on."""

    id: str
    pid: int
    """The init process (host pid)."""
    state_dir: Path
    bundle: str


Learn = Callable[[Birth], None]


def runc_binaries(extra: Iterable[str] = (), names: Iterable[str] = RUNC_NAMES) -> list[str]:
    """The runc executables on this host (or those of ``names``), one path per file."""
    names = tuple(names)
    candidates = [*extra, *(shutil.which(n) or "" for n in names)]
    candidates += [f"{d}/{n}" for d in RUNC_PLACES for n in names]
    seen: set[tuple[int, int]] = set()
    out = []
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            out.append(path)
    return out


def _fifo_dir(pid: int) -> Path | None:
    """The state folder whose ``exec.fifo`` process ``pid`` holds open, if any."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("/" + FIFO):
            return Path(target).parent
    return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                out += [
                    int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()
                ]
    return out


def _mntns(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return 0


def _parent(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _crun_args(pid: int) -> list[bytes] | None:
    """The command line of ``pid`` while it runs crun; None otherwise (or once it is gone)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "crun":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def _crun_root_folder(state: Path, crun: int, started_in: str | None = None) -> Path | None:
    """The root folder of the crun container whose state folder is ``state``: ``root.path``
    of the config in the bundle of ``crun`` (the process that makes it), relative to that
    bundle. Read there, not from the copy crun writes into the state folder: an open in a
    marked folder by the thread that answers its events would wait on itself. None when it
    cannot be known (the state folder's open is held then, as before)."""
    bundle = _bundle(crun) if crun else ""
    if not bundle:
        return None
    try:
        with open(_crun_config(crun, bundle, started_in), "rb") as f:
            config = json.loads(f.read(CONFIG_MAX_BYTES))
        root = config["root"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(root, str) or not root:
        return None
    real = Path(os.path.realpath(Path(bundle) / root))  # as the kernel names what is in it
    return real if real.is_dir() else None


def _program_started(init: int, runtime: int) -> bool:
    """Whether the container's init already runs its own program: crun's init is a clone of
    crun (the same executable) until it execs the container's process."""
    try:
        mine, crun = os.stat(f"/proc/{init}/exe"), os.stat(f"/proc/{runtime}/exe")
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) != (crun.st_dev, crun.st_ino)


def _flag(args: list[bytes], short: str, long: str) -> str | None:
    """The value of a runtime's flag (``-b DIR``, ``-bDIR``, ``--bundle DIR``,
    ``--bundle=DIR``) in its command line ``args``, or None."""
    for i, arg in enumerate(args[1:], 1):
        text = os.fsdecode(arg)
        if text in (short, long):
            return os.fsdecode(args[i + 1]) if i + 1 < len(args) else None
        if text.startswith(f"{long}="):
            return text.removeprefix(f"{long}=")
        if text.startswith(short) and not text.startswith("--") and len(text) > len(short):
            return text.removeprefix(short)
    return None


EXEC_SYSCALLS = {"x86_64": {"59", "322"}, "aarch64": {"221", "281"}}
"""``execve`` and ``execveat`` by machine, as ``/proc/<pid>/syscall`` numbers them."""


def _may_be_execing(pid: int) -> bool:
    """Whether ``pid`` may be inside ``execve`` now: running (what it does is not known) or
    in ``execve``/``execveat``. An exec that has begun before the container was learned may
    be missed: its start was not held."""
    try:
        state = Path(f"/proc/{pid}/syscall").read_text().split(maxsplit=1)
    except OSError:
        return False  # gone: nothing more of it to miss
    if not state or state[0] == "running":
        return True
    return state[0] in EXEC_SYSCALLS.get(os.uname().machine, {state[0]})


def _bundle(pid: int) -> str:
    """runc's or crun's bundle folder: ``--bundle`` when absolute, else its working folder.
    Both change into their bundle first thing (before they make their state), so a relative
    ``--bundle``, which names it from where the runtime was started, is its working folder
    by then; read earlier, it is the working folder joined with it."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""
    given = _flag(args, "-b", "--bundle")
    if given is None or os.path.isabs(given):
        return given or cwd
    joined = os.path.join(cwd, given)
    return joined if os.path.isfile(os.path.join(joined, CRUN_CONFIG)) else cwd


def _crun_config(pid: int, bundle: str, started_in: str | None = None) -> str:
    """The config crun ``pid`` runs: its ``--config`` (``-f``), else ``config.json`` in
    ``bundle``. crun resolves a relative ``--config`` from where it was started
    (``started_in``, read at its exec), before it changes into the bundle. Unknown (a crun
    whose exec was not seen), that folder is taken as its parent's working folder, as it
    mostly is; when it is not, the config is not found and the container is learned at its
    state write, with a warning."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        args = []
    given = _flag(args, "-f", "--config")
    if not given:
        return os.path.join(bundle, CRUN_CONFIG)
    if os.path.isabs(given):
        return given
    if started_in is not None:
        return os.path.join(started_in, given)
    try:
        return os.path.join(os.readlink(f"/proc/{_parent(pid)}/cwd"), given)
    except OSError:
        return given


def init_of(runtime_pid: int, comm: str | None = INIT_COMM) -> int:
    """The runtime's child in another mount namespace (named ``comm``, if given): the
    container's init, once it is in its final namespaces (0 if there is none yet). runc 1.1
    starts ``runc:[2:INIT]`` with ``CLONE_PARENT``, so it is runc's own child; the
    intermediate ``runc:[1:CHILD]`` shares its mount namespace but exits, and is never taken
    for it. crun clones the init into its new namespaces directly (``comm=None``)."""
    own = _mntns(runtime_pid)
    for child in _children(runtime_pid):
        try:
            name = Path(f"/proc/{child}/comm").read_text()
        except OSError:
            continue
        ns = _mntns(child)
        if (comm is None or name.startswith(comm)) and ns and own and ns != own:
            return child
    return 0


def crun_roots() -> tuple[Path, ...]:
    """The crun roots to watch: crun's default, where crun is installed."""
    if not any(shutil.which("crun") or os.path.exists(f"{d}/crun") for d in RUNC_PLACES):
        return ()
    return CRUN_ROOTS


class StartHold:
    """Holds runc where described above until ``learn`` has returned, or :data:`HOLD_SECONDS`."""

    def __init__(
        self,
        learn: Learn,
        bound: float = HOLD_SECONDS,
        binaries: Iterable[str] | None = None,
        crun: Iterable[Path] | None = None,
    ) -> None:
        self.learn = learn
        self.bound = bound
        self.binaries = list(binaries) if binaries is not None else runc_binaries()
        self.crun = list(crun) if crun is not None else list(crun_roots())
        """crun roots: their new state folders are marked as they appear."""
        self._inotify: Any = None
        """An ``inotify_simple.INotify`` while crun roots are watched."""
        self._watches: dict[int, Path] = {}
        """inotify watches: a crun root, or (while it is missing) its parent."""
        self._crun_dirs: set[Path] = set()
        """Marked state folders that are crun's."""
        self._cruns: dict[int, str] = {}
        """Processes that exec'd crun (some still run it), with the folder each was started
        in: where a new state folder's crun is looked for first, and what its relative
        ``--config`` is relative to."""
        self._crun_binaries: set[str] = set()
        """The crun executables marked: their execs are held a moment, to read that folder
        before crun changes into its bundle."""
        self._roots: dict[Path, set[Path]] = {}
        """Marked root folders of crun containers, with the state folders of the containers
        starting there (several may share one read-only root)."""

        self._group = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[float, Birth]] = {}
        """Held events by descriptor: their deadline and container."""
        self._dirs: dict[Path, float] = {}
        """Marked state folders, with when they were marked."""
        self._stop = threading.Event()
        self._warned: set[str] = set()
        self._reports: queue.SimpleQueue[tuple[str, dict[str, object]] | None] = queue.SimpleQueue()
        """Warnings of the fanotify thread, written by a thread of their own: a log write
        can block (a full stderr pipe, a paused terminal), and an unanswered event would
        then hold runc for as long."""
        self._reporter: threading.Thread | None = None
        self._guard: subprocess.Popen[bytes] | None = None
        self._guard_pipe = -1
        """igrun's end of the pipe to the guard process: ``h FD`` held, ``d FD`` answered."""
        self.held = 0
        self.expired = 0

    def start(self) -> bool:
        """Mark the runc binaries, watch the crun roots and start holding; False (and one log
        line) when fanotify permission events are not available here."""
        if not self.binaries and not self.crun:
            return False
        try:
            self._group = fanotify.init(
                fanotify.FAN_CLOEXEC
                | fanotify.FAN_NONBLOCK
                | fanotify.FAN_CLASS_CONTENT
                | fanotify.FAN_UNLIMITED_QUEUE
                | fanotify.FAN_UNLIMITED_MARKS,
                os.O_RDONLY | os.O_CLOEXEC | os.O_LARGEFILE,
            )
        except OSError as exc:
            get_logger().info("container_start_hold_unavailable", problem=str(exc))
            return False
        marked = []
        for path in self.binaries:
            try:
                fanotify.mark(self._group, fanotify.FAN_MARK_ADD, fanotify.FAN_OPEN_EXEC_PERM, path)
                marked.append(path)
            except OSError as exc:
                get_logger().info("container_start_hold_unavailable", problem=str(exc))
        watched = self._watch_crun()
        if watched:  # crun's execs, to find the crun that makes a state folder at once
            for path in runc_binaries(names=("crun",)):
                with contextlib.suppress(OSError):
                    fanotify.mark(
                        self._group, fanotify.FAN_MARK_ADD, fanotify.FAN_OPEN_EXEC_PERM, path
                    )
                    self._crun_binaries.add(os.path.realpath(path))
        if not marked and not watched:
            os.close(self._group)
            self._group = -1
            return False
        get_logger().debug(
            "container_start_hold", binaries=marked, crun=watched, bound_s=self.bound
        )
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._loop, name="igrun-start-hold", daemon=True)
        self._thread.start()
        self._reporter = threading.Thread(
            target=self._write_reports, name="igrun-start-hold-log", daemon=True
        )
        self._reporter.start()
        return True

    def _watch_crun(self) -> list[str]:
        """Watch each crun root for new state folders (its parent while it is missing)."""
        if not self.crun:
            return []
        from inotify_simple import INotify, flags  # type: ignore[import-untyped]

        if self._inotify is None:
            try:
                self._inotify = INotify()
            except OSError as exc:
                get_logger().info("container_start_hold_unavailable", problem=f"inotify: {exc}")
                self.crun = []
                return []
        watched = []
        for root in self.crun:
            if root in self._watches.values():
                watched.append(str(root))
                continue
            target = root if root.is_dir() else root.parent
            try:
                wd = int(self._inotify.add_watch(target, flags.CREATE | flags.ONLYDIR))
            except OSError:
                continue
            self._watches[wd] = target
            if target == root:
                watched.append(str(root))
        return watched

    def _crun_created(self) -> None:
        """Mark the state folders made in a crun root since the last look (in the hold's
        thread: before crun clones the init, tens of ms after the folder)."""
        from inotify_simple import flags

        for event in self._inotify.read(timeout=0):
            where = self._watches.get(event.wd)
            if where is None or not event.mask & flags.ISDIR:
                continue
            path = where / event.name
            if path in self.crun:  # a root appeared
                self._watch_crun()
            elif where in self.crun and path not in self._dirs and self._mark(path):
                self._crun_dirs.add(path)
                self._mark_root(path)

    def _mark_root(self, state: Path) -> None:
        """Mark a crun container's root folder too (``root.path`` of its bundle's config):
        its init opens something there before it runs anything of the container's, which
        for ``crun run`` is the only moment to hold it."""
        crun = self._crun_of(state.name)
        root = _crun_root_folder(state, crun, self._cruns.get(crun))
        if root is None:
            return
        if root not in self._roots:
            try:
                fanotify.mark(self._group, fanotify.FAN_MARK_ADD, ROOT_MASK, str(root))
            except OSError:
                return
            self._roots[root] = set()
        self._roots[root].add(state)

    def _mark(self, folder: Path) -> bool:
        """Mark a container's state folder for the opens in it; False when it is gone
        already (the runtime failed)."""
        try:
            fanotify.mark(
                self._group,
                fanotify.FAN_MARK_ADD,
                fanotify.FAN_OPEN_PERM | fanotify.FAN_EVENT_ON_CHILD,
                str(folder),
            )
        except OSError:
            return False
        self._dirs[folder] = time.monotonic()
        return True

    def _write_reports(self) -> None:
        while (report := self._reports.get()) is not None:
            get_logger().warning(report[0], **report[1])

    # ---- the fanotify thread: never waits on anything but the kernel ----------------------

    def _start_guard(self) -> None:
        """Start the guard process (in the hold's thread: not on the way to the attach)."""
        read, write = os.pipe2(os.O_CLOEXEC)
        try:
            self._guard = subprocess.Popen(
                [sys.executable, "-I", "-S", holdguard.__file__,
                 str(self._group), str(read), str(self.bound)],
                pass_fds=(self._group, read),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # not stopped with igrun's process group (Ctrl-Z)
            )  # fmt: skip
        except OSError as exc:
            os.close(write)
            self._warn(f"no guard process: {exc}")
            return
        finally:
            os.close(read)
        os.set_blocking(write, False)
        self._guard_pipe = write

    def _tell_guard(self, kind: bytes, fd: int) -> None:
        if self._guard_pipe >= 0:
            with contextlib.suppress(OSError):  # a full pipe: the guard is far behind anyway
                os.write(self._guard_pipe, b"%s %d\n" % (kind, fd))

    def _stop_guard(self) -> None:
        """Close the guard's pipe, which ends it; its copy of the group goes with it."""
        if self._guard_pipe >= 0:
            os.close(self._guard_pipe)
            self._guard_pipe = -1
        if self._guard is not None:
            try:
                self._guard.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self._guard.kill()
                self._guard.wait()
            self._guard = None

    def _loop(self) -> None:
        self._start_guard()
        poller = select.poll()
        poller.register(self._group, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        if self._inotify is not None:
            poller.register(self._inotify.fileno(), select.POLLIN)
        me = os.getpid()
        while not self._stop.is_set():
            timeout = self._expire()
            poller.poll(None if timeout is None else max(timeout, 0.001) * 1000)
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 512)
            if self._inotify is not None:
                self._crun_created()
            try:
                events = fanotify.read_events(self._group)
            except OSError as exc:  # e.g. out of descriptors: the kernel denied that open
                self._warn(f"reading fanotify events: {exc}")
                time.sleep(0.01)
                continue
            for event in events:
                if event.fd == fanotify.FAN_NOFD:
                    continue  # a queue overflow: nothing to answer
                if not event.mask & PERMISSION_EVENTS:  # not asked for: nothing to answer
                    with contextlib.suppress(OSError):
                        os.close(event.fd)
                    continue
                try:
                    held = event.pid != me and self._handle(event)
                except Exception as exc:  # never leave an event unanswered
                    self._warn(f"{type(exc).__name__}: {exc}")
                    with self._lock:
                        self._pending.pop(event.fd, None)
                    held = False
                if not held:
                    self._allow(event.fd)

    def _warn(self, problem: str) -> None:
        if problem not in self._warned:
            self._warned.add(problem)
            self._reports.put(("container_start_hold", {"problem": problem}))

    def _handle(self, event: fanotify.Event) -> bool:
        """Look at one event; True when it is held (answered later)."""
        if event.mask & fanotify.FAN_OPEN_EXEC_PERM and self._crun_exec(event):
            return False
        if event.mask & fanotify.FAN_OPEN_EXEC_PERM:
            folder = _fifo_dir(event.pid)
            if folder is not None and folder not in self._dirs:
                self._mark(folder)
            return False
        try:
            folder = Path(os.readlink(f"/proc/self/fd/{event.fd}")).parent
        except OSError:
            return False
        if folder in self._roots:
            return self._root_opened(event, folder)
        if folder not in self._dirs:
            return False
        crun = folder in self._crun_dirs
        pid = init_of(event.pid, None if crun else INIT_COMM)
        if not pid:
            return False
        self._unmark(folder)
        if crun and (_program_started(pid, event.pid) or _may_be_execing(pid)):
            # `crun run`: the init ran its program (or is starting it) before crun wrote
            # this state.
            note = "crun run started it before writing its state: its first events are missed"
            self._reports.put(
                ("container_start_not_held", {"container": folder.name[:12], "note": note})
            )
        return self._hold(event.fd, Birth(folder.name, pid, folder, _bundle(event.pid)))

    def _crun_exec(self, event: fanotify.Event) -> bool:
        """Whether the exec is crun's: then remember the process and the folder it was
        started in. Read now, while the exec waits for its answer: crun changes into its
        bundle first thing, and a relative ``--config`` is relative to where it was."""
        try:
            if os.readlink(f"/proc/self/fd/{event.fd}") not in self._crun_binaries:
                return False
            cwd = os.readlink(f"/proc/{event.pid}/cwd")
        except OSError:
            return False
        if len(self._cruns) >= CRUNS_KEPT:
            self._cruns = {p: d for p, d in self._cruns.items() if os.path.exists(f"/proc/{p}")}
        self._cruns[event.pid] = cwd
        return True

    def _crun_of(self, id: str) -> int:
        """The crun process working on container ``id``: among those seen exec'ing crun
        (forgotten once they have ended), else any on the host; 0 if none."""
        wanted = os.fsencode(id)
        for pid in sorted(self._cruns, reverse=True):  # the newest first
            args = _crun_args(pid)
            if args is None:
                del self._cruns[pid]
            elif wanted in args:
                return pid
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and wanted in (_crun_args(int(entry.name)) or ()):
                return int(entry.name)
        return 0

    def _root_opened(self, event: fanotify.Event, root: Path) -> bool:
        """An open in a crun container's root folder: held when it is the init's (crun's
        child in a mount namespace of its own), before the container runs anything."""
        runtime = _parent(event.pid)
        if not runtime or init_of(runtime, None) != event.pid:
            return False  # crun itself, or someone else: let it go
        args = _crun_args(runtime) or []
        state = next((s for s in self._roots[root] if os.fsencode(s.name) in args), None)
        if state is None:  # not one of the containers starting here
            return False
        self._unmark(state)
        return self._hold(event.fd, Birth(state.name, event.pid, state, _bundle(runtime)))

    def _hold(self, fd: int, birth: Birth) -> bool:
        """Hold event ``fd`` until ``birth`` is learned (in a thread) or the bound."""
        with self._lock:
            self._pending[fd] = (time.monotonic() + self.bound, birth)
            self._tell_guard(b"h", fd)
        self.held += 1
        threading.Thread(
            target=self._learn, args=(fd, birth), name="igrun-start-learn", daemon=True
        ).start()
        return True

    def _unmark(self, folder: Path) -> None:
        self._dirs.pop(folder, None)
        self._crun_dirs.discard(folder)
        for root, states in list(self._roots.items()):
            states.discard(folder)
            if not states:
                del self._roots[root]
                with contextlib.suppress(OSError):
                    fanotify.mark(self._group, fanotify.FAN_MARK_REMOVE, ROOT_MASK, str(root))
        with contextlib.suppress(OSError):  # gone with its folder
            fanotify.mark(
                self._group,
                fanotify.FAN_MARK_REMOVE,
                fanotify.FAN_OPEN_PERM | fanotify.FAN_EVENT_ON_CHILD,
                str(folder),
            )

    def _expire(self) -> float | None:
        """Let go of what waited past the bound; seconds until the next deadline."""
        now = time.monotonic()
        for folder, since in list(self._dirs.items()):
            if now - since > 60 or not folder.is_dir():  # a create that failed or stalled
                self._unmark(folder)
        with self._lock:
            late = [(fd, b) for fd, (deadline, b) in self._pending.items() if deadline <= now]
            left = [deadline - now for deadline, _ in self._pending.values() if deadline > now]
        for fd, birth in late:
            if self._answer(fd):
                self.expired += 1
                note = (
                    f"igrun took over {self.bound:g} s to learn of it: its first events "
                    "may be missed"
                )
                self._reports.put(
                    ("container_start_not_held", {"container": birth.id[:12], "note": note})
                )
        if self._dirs and not left:
            return 1.0
        return min(left) if left else None

    # ---- one short-lived thread per held container: asks the runtimes, then answers ----------

    def _learn(self, fd: int, birth: Birth) -> None:
        """A thread of its own, so that one slow answer holds no other container."""
        began = time.monotonic()
        try:
            self.learn(birth)
        except Exception as exc:  # a runtime's surprise must not hold it
            get_logger().warning("container_discovery", container=birth.id[:12], problem=repr(exc))
        if self._answer(fd):
            took = round((time.monotonic() - began) * 1000, 2)
            get_logger().debug("container_start_released", container=birth.id[:12], held_ms=took)

    def _answer(self, fd: int) -> bool:
        """Allow a held event once (the worker and the deadline may race)."""
        with self._lock:
            if self._pending.pop(fd, None) is None:
                return False
            self._allow(fd)
            self._tell_guard(b"d", fd)
        return True

    def _allow(self, fd: int) -> None:
        with contextlib.suppress(OSError):  # the group closed: the kernel allowed it
            fanotify.allow(self._group, fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def stop(self) -> None:
        """Let everything held go on, unmark everything and end both threads."""
        self._stop.set()
        if self._thread is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")
        self._thread.join(timeout=2)
        with self._lock:
            held = list(self._pending)
            self._pending.clear()
            for fd in held:
                self._allow(fd)
            self._stop_guard()
            os.close(self._group)  # drops every mark; anything still queued is allowed
            self._group = -1

        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
        self._thread = None
        self._reports.put(None)
        if self._reporter is not None:
            self._reporter.join(timeout=1)
            self._reporter = None
