"""Containers: select them inside the kernel, and name them on every event.

The counterpart of Inspektor Gadget's local manager. It starts container discovery, keeps one
mount-namespace filter map for the run (pinned in the run's folder, handed to every gadget
that follows the ``gadget_filter_by_mntns`` convention) in sync with the selected containers,
and adds the container's name, id, runtime, image and image digest, its Kubernetes names and
whether it shares the host's network, and the node, to every event that carries a
mount-namespace id — a whole batch at a time, grouped by id. Keys are ``ig`` v0.25's
(``runtime.containerImageDigest``, ``k8s.podName``, ``k8s.hostNetwork``...), and empty ones
are left out of JSON, as ``ig``'s ``omitempty`` leaves them.

Defaults are ``ig``'s: no flag traces every container and no host process; ``--host`` adds
host processes; ``-c/--containername`` selects containers by name or id; ``--k8s-namespace``,
``--k8s-podname``, ``--k8s-containername`` and ``--k8s-selector`` (later ``ig``'s names;
``kubectl igrun``'s ``-n``, ``-p``, ``-c``, ``-l``) select them by their pod, all of them in
the kernel's filter as ``-c`` does.

Several runs of one process (a config file with several gadgets) share one collection, one
discovery and one filter map per selection, through a :class:`SharedContainers` this operator
puts in the process's resources (:meth:`ContainersOperator.share`); the last run to stop
releases them.

To the run, it provides (see :mod:`igrun.core.run.resources`) the :class:`ContainerCollection`,
the :class:`SelectedContainers` (what gadgets that attach to each container follow) and,
unless ``--host``, the :class:`MntnsFilter`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.bpf import mntnsfilter
from igrun.core.bpf.objects import Map
from igrun.core.containers.collection import (
    Container,
    ContainerCollection,
    SelectedContainers,
    Selector,
    boot_ns,
    parse_label_selector,
    pod_labels,
)
from igrun.core.containers.discovery import Discovery, runtime_names, select_clients
from igrun.core.containers.endpoints import EndpointPods, pod_ends
from igrun.core.containers.procfs import host_namespace
from igrun.core.events.schema import Array, Batch, Column, Field, Kind, Schema
from igrun.core.gadget import ContainerAttacher, Gadget, GadgetContext, GadgetType
from igrun.core.hookspecs import hookimpl
from igrun.core.log import get_logger
from igrun.core.operator import PRIORITY_ENRICH, Operator
from igrun.core.params import ParamDesc, Params, TypeHint, ValueHint
from igrun.core.run.headstart import settle_packet_sockets, take_filter_map
from igrun.core.run.resources import Resources
from igrun.core.tracer import MntnsFilter

if TYPE_CHECKING:
    from igrun.core.operator import RunPlan

BATCH_HINT = 4096  # codes are kept for batches this big at least


@functools.cache
def node_name() -> str:
    """The node events happen on: ``$NODE_NAME`` where set (as a Kubernetes pod spec gives it
    to ``ig``'s daemon set), else the host name."""
    return os.environ.get("NODE_NAME") or os.uname().nodename


@functools.cache
def host_netns() -> int:
    """The host's network namespace id (that of pid 1), 0 when it cannot be read."""
    return host_namespace("net")[0]


def host_network(c: Container) -> bool:
    """Whether ``c`` shares the host's network namespace, as ``ig``'s ``hostNetwork``."""
    return bool(c.netns) and c.netns == host_netns()


ENRICHED: tuple[tuple[Field, Callable[[Container], object]], ...] = (
    (
        Field(
            "runtime.containerName",
            Kind.STR,
            "container name",
            column=Column(width=30, min_width=16, order=-100),
            omit_empty=True,
        ),
        lambda c: c.name,
    ),
    (
        Field(
            "runtime.containerId",
            Kind.STR,
            "container id",
            column=Column(width=13, hidden=True),
            omit_empty=True,
        ),
        lambda c: c.id,
    ),
    (
        Field(
            "runtime.runtimeName",
            Kind.STR,
            "container runtime",
            column=Column(width=10, hidden=True),
            omit_empty=True,
        ),
        lambda c: c.runtime,
    ),
    (
        Field(
            "runtime.containerImageName",
            Kind.STR,
            "container image",
            column=Column(width=30, hidden=True),
            omit_empty=True,
        ),
        lambda c: c.image_name,
    ),
    (
        Field(
            "runtime.containerImageDigest",
            Kind.STR,
            "digest of the container image",
            column=Column(width=30, hidden=True),
            omit_empty=True,
        ),
        lambda c: c.image_digest,
    ),
    (
        Field(
            "k8s.node",
            Kind.STR,
            "node: $NODE_NAME where set (as Kubernetes gives it), else the host name",
            column=Column(hidden=True),
            omit_empty=True,
        ),
        lambda c: node_name(),
    ),
    (
        Field(
            "k8s.namespace",
            Kind.STR,
            "Kubernetes namespace",
            column=Column(hidden=True),
            omit_empty=True,
        ),
        lambda c: c.k8s_namespace,
    ),
    (
        Field(
            "k8s.pod",
            Kind.STR,
            "Kubernetes pod",
            json="k8s.podName",
            column=Column(hidden=True),
            omit_empty=True,
        ),
        lambda c: c.k8s_pod,
    ),
    (
        Field(
            "k8s.labels",
            Kind.MAP,
            "labels of the Kubernetes pod (as later ig versions name them): from the API "
            "server where one is at hand, else those its runtime tells",
            json="k8s.podLabels",
            column=Column(hidden=True),
            omit_empty=True,
        ),
        lambda c: pod_labels_of(c),
    ),
    (
        Field(
            "k8s.container",
            Kind.STR,
            "Kubernetes container",
            json="k8s.containerName",
            column=Column(hidden=True),
            omit_empty=True,
        ),
        lambda c: c.k8s_container,
    ),
    (
        Field(
            "k8s.hostnetwork",
            Kind.BOOL,
            "whether the container uses the host's network namespace",
            json="k8s.hostNetwork",
            column=Column(hidden=True),
            omit_empty=True,
        ),
        lambda c: host_network(c),
    ),
)
"""The fields this operator adds, named as ``ig``'s columns and keyed as its JSON
(``k8s.pod`` is ``"k8s":{"podName":…}``), with each one's value for a container."""

NO_CONTAINER: dict[str, object] = {"k8s.node": None, "k8s.hostnetwork": False}
"""Values of an event of no container (None: the container's value, which is the same for
all); the others are empty."""


ENRICHED_NAMES = tuple(f.name for f, _ in ENRICHED)


@functools.cache
def _pod_labels_source() -> Callable[[Container], Mapping[str, str]]:
    """Where pod labels come from in this process: the API server when one is at hand (the
    pod's service account, or ``$KUBECONFIG``), asked once per pod and cached, else the
    runtime's labels (:func:`pod_labels`)."""
    from igrun.core.containers.podlabels import ApiPodLabels, reachable_api

    api = reachable_api()
    return ApiPodLabels(api) if api is not None else pod_labels


def pod_labels_of(c: Container) -> dict[str, str]:
    """The labels of ``c``'s pod, as ``ig``'s ``k8s.podLabels``; none for a container that
    is no pod's."""
    return dict(_pod_labels_source()(c)) if c.k8s_pod else {}


def attribute(
    collection: ContainerCollection,
    mntns: Array,
    boot_times: Array | None,
    by: Callable[[int], list[Container]] | None = None,
) -> tuple[list[Container], Array]:
    """The container of each event, decided once per distinct mount-ns id (or other
    namespace id: ``by`` gives its candidates, ``collection.candidates`` by default).

    Returns the containers involved and, per event, an index into them (-1: no container).
    A removed container (kept briefly) only claims events older than its removal, and a
    container only claims events from after its start: a reused mount-ns id never names the
    wrong container. Without timestamps only running containers are used.
    """
    if len(mntns) and bool((mntns == mntns[0]).all()):  # one mount namespace: most batches
        unique, inverse = mntns[:1], np.zeros(len(mntns), dtype=np.intp)
    else:
        unique, inverse = np.unique(mntns, return_inverse=True)
        inverse = inverse.reshape(-1)
    owners = np.full(len(mntns), -1, dtype=np.int64)
    pool: list[Container] = []
    find = by if by is not None else collection.candidates
    for i, ns in enumerate(unique.tolist()):
        candidates = find(int(ns))
        if not candidates:
            continue
        live = [c for c in candidates if c.removed_ns is None]
        if boot_times is None or (len(candidates) == 1 and live):
            if live:
                owners[inverse == i] = len(pool)
                pool.append(live[-1])
            continue
        rows = np.flatnonzero(inverse == i)
        ts = boot_times[rows]
        for c in candidates:  # oldest first: a later start overrides
            end = c.removed_ns if c.removed_ns is not None else np.iinfo(np.uint64).max
            hit = rows[(ts >= c.started_ns) & (ts <= end)]
            if len(hit):
                owners[hit] = len(pool)
                pool.append(c)
    return pool, owners


@dataclass
class SharedContainers:
    """What the runs of one process share: the collection, its discovery, and one filter
    map per container selection (with the operator that keeps it in sync)."""

    collection: ContainerCollection = field(default_factory=ContainerCollection)
    discovery: Discovery | None = None
    users: int = 0
    filters: dict[tuple[object, ...], ContainersOperator] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ContainersOperator(Operator):
    name = "containers"
    description = "container selection (in the kernel) and enrichment"
    priority = PRIORITY_ENRICH
    always = True
    params = (
        ParamDesc(
            "containername",
            alias="c",
            repeatable=True,
            type_hint=TypeHint.STRING_LIST,
            value_hint=ValueHint.LOCAL_CONTAINER,
            description="trace only these containers (names or ids; repeat or comma-separate)",
        ),
        ParamDesc(
            "k8s-namespace",
            type_hint=TypeHint.STRING_LIST,
            value_hint=ValueHint.K8S_NAMESPACE,
            description="trace only containers of pods in these Kubernetes namespaces",
        ),
        ParamDesc(
            "k8s-podname",
            type_hint=TypeHint.STRING_LIST,
            value_hint=ValueHint.K8S_POD_NAME,
            description="trace only containers of the pods of these names",
        ),
        ParamDesc(
            "k8s-containername",
            type_hint=TypeHint.STRING_LIST,
            value_hint=ValueHint.K8S_CONTAINER_NAME,
            description="trace only containers of these names in their pod's spec",
        ),
        ParamDesc(
            "k8s-selector",
            type_hint=TypeHint.STRING_LIST,
            value_hint=ValueHint.K8S_LABELS,
            check=parse_label_selector,
            description="trace only containers of pods with all these labels "
            "(key=value[,key=value,...])",
        ),
        ParamDesc(
            "host",
            type_hint=TypeHint.BOOL,
            default="false",
            description="also show events of processes that are in no container",
        ),
        ParamDesc(
            "runtimes",
            alias="r",
            type_hint=TypeHint.STRING_LIST,
            description="container runtimes to ask (docker, containerd, cri-o, podman, runc, "
            "crun); default: those present",
        ),
        ParamDesc(
            "containerd-namespace",
            type_hint=TypeHint.STRING_LIST,
            default="k8s.io",
            description="containerd namespaces to look in",
        ),
    )
    fields = tuple(f for f, _ in ENRICHED)
    provides = (ContainerCollection, SelectedContainers, MntnsFilter)

    def __init__(self, ctx: GadgetContext, params: Params) -> None:
        super().__init__(ctx, params)
        self.selector = selector(params)
        self.host = bool(params.get("host"))
        self.shared: SharedContainers | None = ctx.resources.get(SharedContainers)
        given = ctx.resources.get(ContainerCollection)  # a caller's own (tests)
        if self.shared is not None:
            given = self.shared.collection
        self.collection = given if given is not None else ContainerCollection()
        ctx.resources.provide(self.collection, by=self.name)
        ctx.resources.provide(
            SelectedContainers(self.collection, self.selector, self.host), by=self.name
        )
        self.discovery: Discovery | None = None
        self._starting: tuple[threading.Thread, list[BaseException]] | None = None
        self._abandoned = False
        self.filter_map: Map | None = None
        self.mntns_field: Field | None = None
        """The field events are attributed by: the mount-ns id, else the network-ns id."""
        self._candidates: Callable[[int], list[Container]] = self.collection.candidates
        self.boot_field: Field | None = None
        self._table_cache: dict[tuple[int, ...], tuple[list[Container], dict[str, Array]]] = {}
        self._generation = -1
        """The collection's generation the answers below were worked out at."""
        self._nobody = False
        """The collection has no container, running or recently removed."""
        self._known: tuple[int, list[Container], dict[str, Array]] | None = None
        """(mount-ns id, pool, tables) of the last one-namespace batch."""
        self._codes: Array | None = None
        """Codes 0 for a batch of no container (made with the first batch: numpy is not
        imported before the programs are attached)."""
        self._endpoints: EndpointPods | None = None
        """Fills the pod keys of the events' endpoints (``src.podname``...), if they have any."""
        self._prefilled: set[int] = set()
        """Mount-ns ids the head start put in the filter map, until the first scan says
        which of them are selected containers'."""
        self._head_start = False
        """The filter map is the head start's: what it let through is settled after the
        first scan."""
        self._screen_before: int | None = None
        """Events from before this boot time may come from a namespace the head start let
        through and the selection does not want: they are checked here, and dropped."""

    @classmethod
    def can_operate_on(cls, gadget: type[Gadget]) -> bool:
        return gadget.schema.tagged("mntns") is not None or issubclass(gadget, ContainerAttacher)

    @classmethod
    def share(cls, process: Resources) -> None:
        process.provide(SharedContainers(), by=cls.name)

    @classmethod
    def check(cls, plan: RunPlan, params: Params, schema: Schema) -> None:
        runtime_names(params.get("runtimes"))

    @classmethod
    def instantiate(cls, ctx: GadgetContext, params: Params) -> Operator | None:
        self = cls(ctx, params)
        clients = select_clients(params.get("runtimes"), params.get("containerd-namespace"))
        if self.shared is not None:
            with self.shared.lock:
                self.shared.users += 1
                try:
                    if self.kernel_filter:
                        self._share_filter_map(self.shared)
                    if self.shared.discovery is None:
                        discovery = Discovery(self.collection, clients)
                        discovery.start(cancelled=lambda: ctx.done)
                        self.shared.discovery = discovery
                    self._settle_prefilled()
                except BaseException:
                    self.shared.users -= 1
                    raise
            return self
        try:
            if self.kernel_filter:
                self._make_filter_map()
            self.discovery = Discovery(self.collection, clients)
            if self.kernel_filter or issubclass(ctx.gadget, ContainerAttacher):
                # The kernel's filter (or the per-container attach) needs the containers
                # before the programs run: events from before would be lost.
                self.discovery.start(cancelled=lambda: ctx.done)
                self._settle_prefilled()
            else:
                self._start_meanwhile(self.discovery)
        except BaseException:
            self.post_run()
            raise
        return self

    def _start_meanwhile(self, discovery: Discovery) -> None:
        """With ``--host`` nothing is filtered in the kernel: the first scan runs in a
        thread while the gadget's programs load and attach, and :meth:`pre_run` waits for
        it, so that the first batch is still enriched with every running container."""
        failed: list[BaseException] = []

        def start() -> None:
            try:
                discovery.start(cancelled=lambda: self.ctx.done or self._abandoned)
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=start, name="igrun-discovery-start", daemon=True)
        self._starting = (thread, failed)
        thread.start()

    def _started(self) -> None:
        """Wait for a first scan started by :meth:`_start_meanwhile`; its failure (the only
        runtime asked for did not answer) is the run's."""
        if self._starting is None:
            return
        thread, failed = self._starting
        thread.join()
        self._starting = None
        if failed:
            raise failed[0]

    def _share_filter_map(self, shared: SharedContainers) -> None:
        key = self.selector.key
        keeper = shared.filters.get(key)
        if keeper is None:
            self._make_filter_map()
            shared.filters[key] = self
        else:
            assert keeper.filter_map is not None
            self.ctx.resources.provide(MntnsFilter(keeper.filter_map), by=self.name)

    @property
    def kernel_filter(self) -> bool:
        """Filter in the kernel unless host processes are wanted too."""
        return not self.host

    def _make_filter_map(self) -> None:
        # The head start's object already filters through a map of its own, holding every
        # namespace but the host's: kept, with the others removed after the first scan.
        taken = take_filter_map()
        self._head_start = taken is not None
        if taken is None:
            taken = (mntnsfilter.new_filter_map(), ())
        self.filter_map, prefilled = taken
        self._prefilled = set(prefilled)
        if self.ctx.pins is not None:
            self.filter_map.pin(self.ctx.pins.path / mntnsfilter.MNTNS_FILTER_MAP)
        self.ctx.resources.provide(MntnsFilter(self.filter_map), by=self.name)
        self.collection.subscribe(self._sync_filter)

    def _settle_prefilled(self) -> None:
        """After the first scan: remove from the filter map the namespaces the head start
        put there that no selected container has, close its packet filter in the network
        namespaces no selected container has, and check the events from before."""
        filter_map = self.filter_map
        if not self._head_start or filter_map is None:
            return

        def settle(live: list[Container]) -> None:
            selected = [c for c in live if self.selector.matches(c)]
            wanted = {c.mntns for c in selected}
            unwanted = self._prefilled - wanted
            for ns in unwanted:  # a container told meanwhile would have its namespace back
                mntnsfilter.stop(filter_map, ns)
            settle_packet_sockets({c.netns for c in selected})
            get_logger().debug(
                "head_start_filter", namespaces=len(self._prefilled), removed=len(unwanted)
            )

        self.collection.while_unchanged(settle)
        self._prefilled = set()
        self._head_start = False
        self._screen_before = boot_ns()

    def _sync_filter(self, kind: str, c: Container) -> None:
        """Called in the thread that changed the collection (runc may be waiting on it): the
        map is right when this returns."""
        if self.filter_map is None:
            return
        if not self.selector.matches(c) and kind != "changed":
            return
        if kind != "removed" and self.selector.matches(c):
            mntnsfilter.let_through(self.filter_map, c.mntns)
        elif not any(
            o.mntns == c.mntns and self.selector.matches(o) for o in self.collection.containers()
        ):
            mntnsfilter.stop(self.filter_map, c.mntns)
            get_logger().debug("kernel_filter_stop", container=c.name, mntns=c.mntns, kind=kind)

    def _notice(self) -> None:
        log = get_logger()
        running = self.collection.containers()
        names = self.selector.names
        unmatched = [n for n in names if not any(Selector((n,)).matches(c) for c in running)]
        # A single snapshot reads what runs now: a container that starts later is not in it.
        one_shot = self.ctx.gadget.type is GadgetType.ONE_SHOT
        once = one_shot and not self.ctx.runtime_params.get("interval")
        later = "it is not in this snapshot" if once else "it is traced as soon as it starts"
        for name in unmatched:
            log.info("container_not_found_yet", name=name, note=later)
        if not running and not self.host and self.selector.everything:
            log.info("no_containers", note="no container runs now: --host shows host processes")
        selected = [c.name for c in running if self.selector.matches(c)]
        if not selected and not names and not self.selector.everything:
            log.info("no_container_selected_yet", by=_describe(self.selector), note=later)
        log.debug(
            "containers_selected",
            count=len(selected),
            names=",".join(selected),
            of=len(running),
            by=_describe(self.selector),
            host=self.host,
            kernel_filter=self.kernel_filter,
        )

    def pre_run(self, schema: Schema) -> None:
        self._started()
        self._notice()
        self.mntns_field = schema.tagged("mntns")
        if self.mntns_field is None:  # a gadget that attaches per container, by netns
            self.mntns_field = schema.tagged("netns")
            self._candidates = self.collection.candidates_by_netns
        self.boot_field = schema.tagged("boot_time")
        ends = pod_ends(schema)
        if ends:
            self._endpoints = EndpointPods(self.collection, ends, host_netns())

    def process(self, batch: Batch) -> Batch:
        generation = self.collection.generation
        if generation != self._generation:  # earlier answers may no longer stand
            self._generation = generation
            self._known = None
            self._nobody = self.collection.empty()
        if self._nobody or self.mntns_field is None:  # no event has a container
            pool: list[Container] = []
            return self._enrich(batch, pool, self._tables(pool), self._zeros(len(batch)))
        mntns = batch[self.mntns_field.name]
        known = self._known
        # The last batch was one mount namespace with a settled owner (none, or one live
        # container): if this one is too, the answer stands.
        if known is not None and len(mntns) and bool((mntns == known[0]).all()):
            return self._enrich(batch, known[1], known[2], self._zeros(len(mntns)))
        boot = batch.member(self.boot_field.source) if self.boot_field else None
        pool, owners = attribute(self.collection, mntns, boot, self._candidates)
        tables = self._tables(pool)
        one_ns = len(mntns) and bool((mntns == mntns[0]).all())
        if one_ns and self._settled(int(mntns[0])):  # its container or none: every code is 0
            self._known = (int(mntns[0]), pool, tables)
        return self._enrich(batch, pool, tables, owners)

    def _settled(self, ns: int) -> bool:
        """Whether every event of ``ns`` has the same owner whatever its time: no candidate,
        or one that still runs."""
        candidates = self._candidates(ns)
        return not candidates or (len(candidates) == 1 and candidates[0].removed_ns is None)

    def _zeros(self, n: int) -> Array:
        """``n`` codes 0, as a read-only view of one array kept for the stream."""
        if self._codes is None or len(self._codes) < n:
            self._codes = np.zeros(max(n, BATCH_HINT), dtype=np.int32)
            self._codes.flags.writeable = False
        return self._codes[:n]

    def _enrich(
        self, batch: Batch, pool: list[Container], tables: dict[str, Array], owners: Array
    ) -> Batch:
        batch.set_coded_group(tables, owners)
        if self.host and not self.selector.everything:
            selected = np.array([self.selector.matches(c) for c in pool] + [True], dtype=bool)
            batch = batch.take(selected[owners])
        elif self._screen_before is not None:
            batch = self._screen(batch, pool, owners)
        if self._endpoints is not None:
            self._endpoints.resolve(batch)
        return batch

    def _screen(self, batch: Batch, pool: list[Container], owners: Array) -> Batch:
        """Drop the events of the head start's first moments that the kernel's filter let
        through for a namespace the selection does not want (no container's, or another
        container's); stop checking once a batch starts after the filter was settled."""
        assert self._screen_before is not None
        boot = self.boot_field
        if (
            boot is not None
            and len(batch)
            and int(batch.member(boot.source).min()) > (self._screen_before)
        ):
            self._screen_before = None
            return batch
        selected = np.array([self.selector.matches(c) for c in pool] + [False], dtype=bool)
        return batch.take(selected[owners])

    def _tables(self, pool: list[Container]) -> dict[str, Array]:
        """One small table per enriched field, the last row being "no container". Batches
        of a stream mostly involve the same containers: their tables are built once (and
        stay the same objects, which writers recognise)."""
        key = tuple(id(c) for c in pool)
        hit = self._table_cache.get(key)
        if hit is not None:
            return hit[1]
        if len(self._table_cache) >= 64:
            self._table_cache.clear()
        tables = {}
        for name, (_, value) in zip(ENRICHED_NAMES, ENRICHED, strict=True):
            none = NO_CONTAINER.get(name, "")
            values = [value(c) for c in pool] + [none]
            if none is None:  # the same for every event
                values[-1] = value(None)  # type: ignore[arg-type]
            table = np.empty(len(values), dtype=object)
            table[:] = values
            tables[name] = table
        self._table_cache[key] = (pool, tables)  # the pool keeps its ids from being reused
        return tables

    def post_run(self) -> None:
        endpoints, self._endpoints = self._endpoints, None
        if endpoints is not None:
            endpoints.close()
        shared, self.shared = self.shared, None
        if shared is not None:
            with shared.lock:
                shared.users -= 1
                if shared.users > 0:
                    return  # the last run to stop releases what the runs share
                keepers = list(shared.filters.values())
                shared.filters.clear()
                self.discovery, shared.discovery = shared.discovery, None
            for keeper in keepers:
                if keeper is not self:
                    keeper.post_run()
        if self._starting is not None:  # the run ended before its first scan was waited for
            self._abandoned = True
            self._starting[0].join()
            self._starting = None
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
        if self.filter_map is not None:
            self.filter_map.close()
            self.filter_map = None
            self.ctx.resources.withdraw(MntnsFilter)


def selector(params: Params) -> Selector:
    """The run's container selection from its flags; pod labels from where the events' own
    come from (:func:`_pod_labels_source`)."""
    labels = parse_label_selector(params.get("k8s-selector"))
    return Selector(
        names=tuple(params.get("containername")),
        namespaces=tuple(params.get("k8s-namespace")),
        pods=tuple(params.get("k8s-podname")),
        k8s_containers=tuple(params.get("k8s-containername")),
        labels=labels,
        labels_of=_pod_labels_source() if labels else None,
    )


def _describe(s: Selector) -> str:
    parts = [
        ",".join(s.names),
        ",".join(f"namespace={n}" for n in s.namespaces),
        ",".join(f"pod={p}" for p in s.pods),
        ",".join(f"k8s-container={c}" for c in s.k8s_containers),
        ",".join(f"{k}={v}" for k, v in s.labels),
    ]
    return ",".join(p for p in parts if p) or "all"


@hookimpl
def igrun_register_operators(register: Callable[[type[Operator]], None]) -> None:
    register(ContainersOperator)
