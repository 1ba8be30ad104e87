"""The containers of this host: what they are, and which of them a run selects.

A :class:`Container` holds what igrun knows of one container: its ids and names, its runtime
and image, its init process and the namespace and cgroup ids that events carry. The
:class:`ContainerCollection` keeps the current set up to date (see
:mod:`igrun.core.containers.discovery`)
and tells subscribers about every change. Removed containers are kept for a short while so
late events still find them, but only for events older than their removal: mount-namespace
ids are reused quickly, and a stale entry must never name a new container's events.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from igrun.core.containers.procfs import cgroup2_root, ns_inode

TOMBSTONE_SECONDS = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
EXACT_SLACK_NS = 50_000_000
"""How far before the tick's start an exact start may be measured (the question's time)."""


@dataclass(frozen=True)
class Container:
    """One container, as its runtime and /proc describe it."""

    id: str
    name: str
    runtime: str
    pid: int
    mntns: int = 0
    netns: int = 0
    cgroup_path: str = ""
    cgroup_id: int = 0
    image_name: str = ""
    image_digest: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    k8s_namespace: str = ""
    k8s_pod: str = ""
    k8s_container: str = ""
    started_ns: int = 0
    """Boot time (ns, like ``bpf_ktime_get_boot_ns``) when the init process started."""
    removed_ns: int | None = None
    """Boot time when igrun saw it go; None while it runs."""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "runtime": self.runtime,
            "pid": self.pid,
            "mntns": self.mntns,
            "netns": self.netns,
            "cgroupPath": self.cgroup_path,
            "cgroupId": self.cgroup_id,
            "imageName": self.image_name,
            "imageDigest": self.image_digest,
            "k8s": {
                "namespace": self.k8s_namespace,
                "pod": self.k8s_pod,
                "container": self.k8s_container,
            },
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
        }


# ---- what /proc says about a container's init process -----------------------------------

K8S_KEYS = {
    "k8s_namespace": (
        "io.kubernetes.pod.namespace",
        "io.kubernetes.cri.sandbox-namespace",
    ),
    "k8s_pod": ("io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"),
    "k8s_container": ("io.kubernetes.container.name", "io.kubernetes.cri.container-name"),
}


def k8s_fields(*sources: Mapping[str, str]) -> dict[str, str]:
    """Pod, namespace and container names from the standard CRI labels and annotations."""
    out = {}
    for attr, keys in K8S_KEYS.items():
        out[attr] = next((s[k] for k in keys for s in sources if s.get(k)), "")
    return out


def _cgroup(pid: int) -> tuple[str, int]:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return "", 0
    path = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "")
    root = cgroup2_root()
    cgroup_id = 0
    if root is not None and path:
        with contextlib.suppress(OSError):
            cgroup_id = os.stat(root / path.lstrip("/")).st_ino
    return path, cgroup_id


def process_start_ns(pid: int) -> int:
    """When ``pid`` started, in boot-time nanoseconds (0 if it is gone), to the clock tick
    (``/proc``'s: the start of the tick it started in)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    ticks = int(stat.rsplit(")", 1)[1].split()[19])
    return ticks * 1_000_000_000 // CLK_TCK


def tick_of(ns: int) -> int:
    """The start of the clock tick ``ns`` falls in: what :func:`process_start_ns` says of a
    process that started at ``ns``."""
    return ns * CLK_TCK // 1_000_000_000 * 1_000_000_000 // CLK_TCK


def exact_start(c: Container) -> Container:
    """``c`` with its start to the microsecond instead of the clock tick (from taskstats,
    within the tick ``/proc`` gave), or as it is when that cannot be told: where a mount-ns
    id passes from one container to the next, their boundary is the later one's start."""
    from igrun.core.containers.taskstats import start_boot_ns

    if c.started_ns == 0 or c.started_ns != tick_of(c.started_ns):
        return c  # unknown, or known better than to the tick already
    exact = start_boot_ns(c.pid)
    if exact is None:
        return c
    # An early bound, so within the question's time of the tick's start; anything further
    # off is another process that took the pid meanwhile.
    if not c.started_ns - EXACT_SLACK_NS <= exact < c.started_ns + 1_000_000_000 // CLK_TCK:
        return c
    return replace(c, started_ns=max(exact, c.started_ns))


def from_process(
    id: str,
    name: str,
    runtime: str,
    pid: int,
    image_name: str = "",
    image_digest: str = "",
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    start_ticks: int | None = None,
) -> Container | None:
    """A :class:`Container` for a running init process, or None if the process is gone (or,
    given the runtime's record of its start in clock ticks, is another process by now)."""
    if pid <= 0:
        return None
    started = process_start_ns(pid)
    if start_ticks is not None and started != start_ticks * 1_000_000_000 // CLK_TCK:
        return None  # the init exited and its pid went to another process
    mntns = ns_inode(pid, "mnt")
    if not started or not mntns:
        return None
    annotations = dict(annotations or {})
    labels = dict(labels or {})
    cgroup_path, cgroup_id = _cgroup(pid)
    k8s = k8s_fields(labels, annotations)
    return Container(
        id=id,
        name=name or id[:12],
        runtime=runtime,
        pid=pid,
        mntns=mntns,
        netns=ns_inode(pid, "net"),
        cgroup_path=cgroup_path,
        cgroup_id=cgroup_id,
        image_name=image_name,
        image_digest=image_digest,
        annotations=annotations,
        labels=labels,
        started_ns=started,
        k8s_namespace=k8s["k8s_namespace"],
        k8s_pod=k8s["k8s_pod"],
        k8s_container=k8s["k8s_container"],
    )


def host_mntns() -> int:
    return ns_inode(1, "mnt")


def boot_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


# ---- selection ---------------------------------------------------------------------------


RUNTIME_KEYS = (
    "io.kubernetes.",
    "io.cri-containerd.",
    "io.containerd.",
    "io.containers.",
    "io.container.",
    "io.podman.",
    "org.opencontainers.",
    "containerd.",
    "bundle",
)
"""Prefixes of the labels and annotations runtimes and the kubelet put on a container for
themselves; the rest are taken as its pod's labels."""


def pod_labels(c: Container) -> dict[str, str]:
    """The labels of ``c``'s pod as its runtime tells them, when no API server says: the
    container's labels and annotations but the runtimes' and the kubelet's own
    (:data:`RUNTIME_KEYS`); a label wins over an annotation of the same key."""
    return {
        k: v
        for source in (c.annotations, c.labels)
        for k, v in source.items()
        if not k.startswith(RUNTIME_KEYS)
    }


def parse_label_selector(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` items (``kubectl gadget -l``'s: equality only) as pairs; raises
    ``ValueError`` for any other item."""
    pairs = []
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or "=" in value or key != key.strip():
            raise ValueError(
                f"{item!r} is not key=value: give a comma-separated list of "
                "key=value pairs (key=value[,key=value,...])"
            )
        pairs.append((key, value))
    return tuple(pairs)


@dataclass(frozen=True)
class Selector:
    """Which containers a run traces: every criterion given must hold (a container named by
    any of ``names``, in any of ``namespaces``, of any of ``pods``, of a Kubernetes container
    named any of ``k8s_containers``, whose pod has every label of ``labels``); all of them
    when none is given."""

    names: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    k8s_containers: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    labels_of: Callable[[Container], Mapping[str, str]] | None = field(
        default=None, compare=False, hash=False
    )
    """Where a container's pod labels come from (the API server's answer); None: the
    runtime's (:func:`pod_labels`)."""

    @property
    def everything(self) -> bool:
        return not (self.names or self.namespaces or self.pods or self.k8s_containers) and (
            not self.labels
        )

    @property
    def key(self) -> tuple[object, ...]:
        """The same for selectors that select the same containers."""
        return tuple(
            tuple(sorted(part))
            for part in (self.names, self.namespaces, self.pods, self.k8s_containers, self.labels)
        )

    def matches(self, c: Container) -> bool:
        if self.names and not any(
            n in (c.name, c.id, c.short_id, c.k8s_container) for n in self.names
        ):
            return False
        if self.namespaces and c.k8s_namespace not in self.namespaces:
            return False
        if self.pods and c.k8s_pod not in self.pods:
            return False
        if self.k8s_containers and c.k8s_container not in self.k8s_containers:
            return False
        if self.labels:
            have = (self.labels_of or pod_labels)(c)
            return all(have.get(k) == v for k, v in self.labels)
        return True


def host_container() -> Container:
    """The host as a container, what ``--host`` attaches: pid 1's namespaces and cgroup, or
    igrun's own where pid 1's cannot be read (a VM's init may keep them from root)."""
    pid = 1 if ns_inode(1, "net") and ns_inode(1, "mnt") else os.getpid()
    cgroup_path, cgroup_id = _cgroup(pid)
    return Container(
        id="host",
        name="host",
        runtime="host",
        pid=pid,
        mntns=ns_inode(pid, "mnt"),
        netns=ns_inode(pid, "net"),
        cgroup_path=cgroup_path,
        cgroup_id=cgroup_id,
        started_ns=process_start_ns(pid),
    )


# ---- the collection ----------------------------------------------------------------------

LOW_LEVEL = ("runc", "crun")
"""Runtimes that know a container only by its id: a manager (podman, Docker, containerd,
CRI-O) that knows the same container names it."""

Listener = Callable[[str, Container], None]
"""Called with ("added" | "removed" | "changed", container); "changed" is a running container
whose name or runtime is now known better."""


class ContainerCollection:
    """The containers known now, plus recently removed ones for late events."""

    def __init__(self, tombstone_seconds: float = TOMBSTONE_SECONDS) -> None:
        self._lock = threading.Lock()
        self._changing = threading.Lock()
        """Held from a change until its listeners have heard of it: discovery and the start
        hold change the collection from two threads, and a listener (the filter map) must
        hear of changes in the order they were made."""
        self._live: dict[str, Container] = {}
        self._removed: list[Container] = []
        self._added: dict[str, int] = {}
        """Ids added one by one (:meth:`add`), with when."""
        self._listeners: list[Listener] = []
        self.tombstone_ns = int(tombstone_seconds * 1e9)
        self.generation = 0
        """Bumped by every change, live or removed: an answer worked out from the collection
        stays right while this is unchanged."""

    def subscribe(self, listener: Listener, replay: bool = True) -> None:
        """Tell ``listener`` about every change; with ``replay``, about every current one
        first (no change is told in between: a container that goes during the replay is
        told as removed after it was told as added)."""
        with self._changing:
            with self._lock:
                self._listeners.append(listener)
                current = list(self._live.values())
            if replay:
                for c in current:
                    listener("added", c)

    def unsubscribe(self, listener: Listener) -> None:
        """Tell ``listener`` nothing more once this returns."""
        with self._changing, self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def while_unchanged(self, work: Callable[[list[Container]], None]) -> None:
        """Call ``work`` with the live containers; no change is made (nor told to a listener)
        until it returns, so that what it decides from them is not undone by a change told
        meanwhile."""
        with self._changing:
            work(self.containers())

    def containers(self) -> list[Container]:
        with self._lock:
            return sorted(self._live.values(), key=lambda c: (c.runtime, c.name))

    def empty(self) -> bool:
        """Whether no container, running or recently removed, could own an event."""
        with self._lock:
            return not self._live and not self._removed

    def get(self, id: str) -> Container | None:
        with self._lock:
            return self._live.get(id)

    def add(self, c: Container) -> None:
        """Add one container now (a runtime is holding it before its first instruction).

        A discovery scan that began before this call does not remove it again; another live
        container with the same mount-ns id is stale (the kernel reused the id, so that one's
        namespace is gone) and is retired as of the new container's start.
        """
        with self._changing:
            with self._lock:
                self._added[c.id] = boot_ns()
                events = self._put(c)
                if events:
                    self.generation += 1
                listeners = list(self._listeners)
            self._tell(listeners, events)

    def _put(self, c: Container) -> list[tuple[str, Container]]:
        """Make ``c`` live (lock held); the changes to tell."""
        events: list[tuple[str, Container]] = []
        old = self._live.get(c.id)
        if old is not None and old.pid == c.pid:
            if (old.name, old.runtime) == (c.name, c.runtime):
                return events
            if c.runtime in LOW_LEVEL and old.runtime not in LOW_LEVEL:
                # runc's own record of a container its manager named (the manager's list
                # did not show it in this scan yet): never back to the id as its name.
                return events
            # A better name (the manager's, not the id); the same process, so the start
            # already known stands (it may be the exact one).
            c = replace(c, started_ns=old.started_ns)
            self._live[c.id] = c
            return [("changed", c)]
        if self._shares_mntns(c):  # the boundary with the other one is c's start: exactly
            c = exact_start(c)
        if old is not None:  # the same id restarted: a new init process
            self._retire(old, c.started_ns, events)
        for other in list(self._live.values()):
            if other.mntns == c.mntns and other.id != c.id and other.started_ns <= c.started_ns:
                self._retire(other, c.started_ns, events)
        self._live[c.id] = c
        events.append(("added", c))
        return events

    def _shares_mntns(self, c: Container) -> bool:
        """Whether another container, live or recently removed, had ``c``'s mount-ns id."""
        return any(
            other.mntns == c.mntns and other.id != c.id
            for other in (*self._live.values(), *self._removed)
        )

    def _unseen_yet(self, c: Container, since: int | None) -> bool:
        """Whether a container added one by one is missing from a scan only because its
        runtime has not written its state yet: added after the scan began, or still running
        (held containers are added just before runc writes their state)."""
        added = self._added.get(c.id)
        if added is None:
            return False
        if since is not None and added >= since:
            return True
        return process_start_ns(c.pid) == tick_of(c.started_ns)

    def _retire(self, c: Container, when: int, events: list[tuple[str, Container]]) -> None:
        gone = replace(c, removed_ns=max(when, c.started_ns))
        del self._live[c.id]
        self._removed.append(gone)
        events.append(("removed", gone))

    @staticmethod
    def _tell(listeners: list[Listener], events: list[tuple[str, Container]]) -> None:
        for kind, c in events:
            for listener in listeners:
                listener(kind, c)

    def sync(
        self, current: Iterable[Container], since: int | None = None, partial: bool = False
    ) -> None:
        """Make the live set equal ``current``, telling listeners what changed. ``since``:
        when the scan that found ``current`` began (boot ns); containers added after it
        stay. ``partial``: a scan that missed a runtime: add and update, remove nothing."""
        with self._changing:
            now = boot_ns()
            seen = {c.id: c for c in current}
            events: list[tuple[str, Container]] = []
            with self._lock:
                self._added = {k: t for k, t in self._added.items() if now - t < self.tombstone_ns}
                for id, c in list(self._live.items()) if not partial else ():
                    fresh = seen.get(id)
                    if fresh is None and self._unseen_yet(c, since):
                        continue
                    if fresh is None or fresh.pid != c.pid:
                        self._retire(c, now, events)
                for c in seen.values():
                    events += self._put(c)
                kept = [c for c in self._removed if now - (c.removed_ns or 0) < self.tombstone_ns]
                if events or len(kept) != len(self._removed):
                    self.generation += 1
                self._removed = kept
                listeners = list(self._listeners)
            self._tell(listeners, events)

    def candidates(self, mntns: int) -> list[Container]:
        """Live and recently removed containers with this mount-ns id, oldest start first."""
        with self._lock:
            found = [c for c in self._live.values() if c.mntns == mntns]
            found += [c for c in self._removed if c.mntns == mntns]
        return sorted(found, key=lambda c: c.started_ns)

    def candidates_by_netns(self, netns: int) -> list[Container]:
        with self._lock:
            found = [c for c in self._live.values() if c.netns == netns]
            found += [c for c in self._removed if c.netns == netns]
        return sorted(found, key=lambda c: c.started_ns)


@dataclass(frozen=True)
class SelectedContainers:
    """The containers a run selects, as a resource (provided by the containers operator):
    the collection, the selection, and whether the host is selected too (``--host``)."""

    collection: ContainerCollection
    selector: Selector
    host: bool = False
