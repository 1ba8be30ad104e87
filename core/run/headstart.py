"""A head start for igrun's own trace gadgets: their programs load and attach while the
launcher is still importing.

From launch to attach, most of a run's time is Python importing its modules (the launcher,
the gadget, the operators), and the kernel's load of the programs only starts after that.
``igrun trace NAME`` is guessed at the start instead: the gadget's object (the one
``*.bpf.o`` next to igrun's own module for it) is opened, loaded and attached in a thread
with its compiled defaults, while the main thread imports (each in its own CPU: the load
runs in the kernel, without the interpreter's lock). Events from then on wait in the ring
buffer.

Without ``--host`` a run shows only containers, filtered in the kernel by mount namespace
(:mod:`igrun.core.bpf.mntnsfilter`): the head start then loads the object with the filter on
and a filter map of its own, holding every mount namespace that is not the host's (pid 1's)
— the containers' among them, known before any runtime is asked. The containers operator,
when the run gets to it, takes that map (:func:`take_filter_map`) instead of making one,
keeps the selected containers' namespaces in it and removes the others after its first
scan; the events of those others captured until then are dropped by the operator, not
shown.

A packet gadget's object (a socket filter and the owner programs of ``igrun/packet.h``) is
attached further: the owner programs at the cgroup v2 root, and the socket filter to a raw
socket in the host's network namespace with ``--host``, else in every network namespace but
the host's (at most :data:`PACKET_NETNS_MAX`). The containers operator closes, after its first
scan, those no selected container is in (:func:`settle_packet_sockets`; their events until
then are dropped as above) and the gadget adopts the others, one per container's namespace
(:meth:`HeadStart.take_packet_sockets`).

When the run reaches the gadget's ``init``, :meth:`igrun.core.tracer.BpfTracer.init` takes the
object only if it is exactly what the run would have loaded: the same file, every constant
the params give equal to the compiled one (or to the one the head start set, below), the
default ring size, the mount-ns filter map the run uses (or none with ``--host``), no
shared map to join, nothing the gadget configures itself. Otherwise it closes it (its events
with it: nothing of it is shown) and loads its own, as without a head start. A run that
never gets there (bad flags, ``--help``) ends with the process, which releases what the
thread attached. Only tried when every flag leaves the object as compiled
(:data:`GUESSABLE`); ``IGRUN_NO_HEAD_START=1`` turns it off.

A gadget whose own flags set constants (``trace fsslower -f tmpfs --min 0``), or whose object
needs a constant no compiled object can hold (``trace capabilities``: this boot's kernel
addresses), names in :data:`HEAD_START_MODULES` a module next to its own that gives them
cheaply, or ``None`` (then no head start); it is read from its file, without importing the
gadget's package. That module may also open what the gadget reads besides its object, at
once (``audit seccomp``: the kernel's audit stream), for the gadget to take with the object
(:attr:`HeadStart.opened`). Gadgets of other categories than ``trace`` whose ``init`` takes
a head start are named in :data:`HEAD_START_OTHERS`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Mapping, Sequence

TYPE_CHECKING = False  # typing's own, without importing typing on the way to the load
if TYPE_CHECKING:
    import socket
    from typing import Any

    from igrun.core.bpf.objects import BpfObject, Map, SocketAttachment
    from igrun.plugins.socket_enricher import SocketEnricher

    PacketSocket = tuple[socket.socket, SocketAttachment]

RING_BYTES = 256 * 1024
"""A gadget's default ring: :attr:`igrun.core.tracer.BpfTracer.ring_buffer_size`'s default,
or the gadget's own in :data:`RING_SIZES` (a gadget whose size is another does not take the
object). The head start's ring is at least :data:`HEAD_START_RING_MIN`."""
RING_SIZES = {"trace_open": 2 << 20, "trace_fsslower": 1 << 20, "trace_dns": 8 << 20}
HEAD_START_RING_MIN = 2 << 20
"""The smallest ring a head start gets: its events wait there from the attach until the run
reads them, a few hundred ms later, so a gadget whose default ring holds few records (``trace
exec``'s 256 KiB: 38 of its 6.7 KB records) would lose a busy host's events in between. The
run keeps that ring (:func:`head_start_ring`)."""
EVENTS_MAP = "events"
SOCKETS_MAP = "gadget_sockets"
"""The socket enricher's map of owners (``igrun/sockets.h``), in the objects that use it."""
PACKET_NETNS_MAX = 64
"""The most network namespaces a packet gadget's head start attaches its filter in (each is a
thread entering it and a socket); a container in another is attached when the run knows it."""
SWITCH_INTERVAL_S = 0.0002
"""While the thread works, the interpreter's lock changes hands every 0.2 ms instead of 5:
the thread needs it for a moment between its libbpf calls, and should not wait 5 ms each
time while the main thread imports."""
LOADING_WAIT_S = 0.2
"""The longest the launcher waits, before its imports, for the thread to hand the object to
the kernel (it waits the thread's Python work, a few ms: what follows runs in the kernel,
without the interpreter's lock)."""
OPT_OUT = "IGRUN_NO_HEAD_START"
GUESSABLE = {
    "--host": 0,
    "-c": 1,
    "--containername": 1,
    "--k8s-namespace": 1,
    "--k8s-podname": 1,
    "--k8s-containername": 1,
    "--k8s-selector": 1,
    "-r": 1,
    "--runtimes": 1,
    "--containerd-namespace": 1,
    "-o": 1,
    "--output": 1,
    "-t": 1,
    "--timeout": 1,
    "--interval": 1,
    "-F": 1,
    "--filter": 1,
    "--sort": 1,
    "-m": 1,
    "--max-rows": 1,
    "-v": 0,
    "--verbose": 0,
}
"""The flags (and how many values follow each) that leave the gadget's object as compiled:
the container selection only decides what the run puts in the filter map. With any other (a
gadget's own flag sets a constant, ``--buffer-size`` another ring) the run would not take the
object, and the head start is not tried. ``-m`` is
``--max-rows`` for every built-in trace gadget but ``trace fsslower``, whose ``-m`` is its
own ``--min``: that one does not take the object either way."""


HEAD_START_MODULES = {
    "trace_capabilities": "callers.py",
    "trace_fsslower": "constants.py",
    "audit_seccomp": "stream.py",
}
"""Gadgets whose head start does more than load the compiled object, and the module (a file
in the gadget's folder, standard library only) that says what, with any of:
``HEAD_START_FLAGS`` (the gadget's flags it reads, each with a value: the param it sets),
``head_start_constants(values) -> dict | None`` (the constants to set, by param name;
``None``: no head start) and ``head_start_open() -> object`` (what the gadget reads besides
its object, opened at once: :attr:`HeadStart.opened`)."""
HEAD_START_OTHERS = frozenset({"audit_seccomp"})
"""Gadgets outside the ``trace`` category that take a head start (their ``init`` calls
:func:`take_head_start`)."""


def head_start_ring(default_bytes: int) -> int:
    """The ring a head start loads for a gadget whose default ring is ``default_bytes``."""
    return max(default_bytes, HEAD_START_RING_MIN)


class HeadStart:
    """The object loading (then loaded and attached) in a thread for gadget ``gadget_id``,
    with ``constants`` set over the compiled ones; with ``containers``, filtered by mount
    namespace through :attr:`filter_map`."""

    def __init__(
        self,
        gadget_id: str,
        path: str,
        constants: Mapping[str, int | bool | bytes] | None = None,
        containers: bool = False,
        opened: object = None,
    ) -> None:
        self.gadget_id = gadget_id
        self.opened = opened
        """What the gadget's head-start module opened at once (``None``: nothing), the
        gadget's to take and close; closed with a head start nobody takes."""
        self.path = path
        self.constants = dict(constants or {})
        self.containers = containers
        self.ring_bytes = head_start_ring(RING_SIZES.get(gadget_id, RING_BYTES))
        self.obj: BpfObject | None = None
        self.error: BaseException | None = None
        self.filter_map: Map | None = None
        """With ``containers``: the mount-ns filter map the object uses."""
        self.prefilled: tuple[int, ...] = ()
        """The mount-ns ids put in :attr:`filter_map` (every one but the host's)."""
        self.filter_taken = False
        """The containers operator took :attr:`filter_map` (and closes it)."""
        self._filter_made = threading.Event()
        self.enricher: SocketEnricher | None = None
        """For an object that looks socket owners up (its ``gadget_sockets`` map): the socket
        enricher, loaded beside it and filling the map the object uses (the object attaches
        once the enricher has recorded the sockets already open)."""
        self.enricher_taken = False
        self.enricher_error: BaseException | None = None
        self._enricher_made = threading.Event()
        self._loading = threading.Event()
        """Set as the object goes to the kernel (or when the thread failed before)."""
        self._enriching: threading.Thread | None = None
        self.shared: dict[str, Map] = {}
        """The operators' maps the object uses instead of its own, by name."""
        self.owners_attached = False
        """A packet gadget's owner programs are attached (and kept by the object)."""
        self.packet_sockets: dict[int, PacketSocket] = {}
        """A packet gadget's socket filter, attached in these network namespaces (by inode)."""
        self._wanted_netns: set[int] | None = None
        """Once the containers operator has settled: the namespaces to keep."""
        self._packet_lock = threading.Lock()
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._load, name="igrun-head-start", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        obj = None
        try:
            from igrun.core.bpf.objects import BpfObject, MapType

            obj = BpfObject.open(self.path)
            if not obj.has_map(EVENTS_MAP) or obj.map_type(EVENTS_MAP) != MapType.RINGBUF:
                raise LookupError("no ring buffer named events")  # a perf reader comes first
            obj.set_max_entries(EVENTS_MAP, self.ring_bytes)
            for name, value in self.constants.items():
                obj.set_global(name, value)
            if self.containers:
                self._filter(obj)
            enriching = self._enriching = self._enrich(obj)
            self._loading.set()
            obj.load()
            if enriching is not None:  # owners known from the first event: attached after it
                enriching.join()
                if self.enricher is None:
                    raise self.enricher_error or LookupError("no socket enricher")
            obj.attach_all()
            self._attach_packets(obj)
            self.obj = obj
        except BaseException as exc:  # the run loads the object itself, and reports
            self.error = exc
            self._close_packet_sockets()
            if obj is not None:
                obj.close()
        finally:
            self._loading.set()
            self._filter_made.set()
            if self._enriching is None:  # else the enricher's thread says when it is done
                self._enricher_made.set()

    def _enrich(self, obj: BpfObject) -> threading.Thread | None:
        """For an object that looks socket owners up in its map: the socket enricher, started
        in a thread of its own with a map both use, so that the two load at the same time
        (the thread ends once the enricher has recorded the sockets already open)."""
        if not obj.has_map(SOCKETS_MAP):
            return None
        sockets = obj.new_map_like(SOCKETS_MAP)
        try:
            obj.reuse_map(SOCKETS_MAP, sockets)
        except BaseException:
            sockets.close()
            raise
        self.shared[SOCKETS_MAP] = sockets
        thread = threading.Thread(
            target=self._start_enricher,
            args=(sockets,),
            name="igrun-head-start-sockets",
            daemon=True,
        )
        thread.start()
        return thread

    def _start_enricher(self, sockets: Map) -> None:
        try:
            from igrun.plugins.socket_enricher import SocketEnricher

            self.enricher = SocketEnricher(sockets)
        except BaseException as exc:  # the head start fails with it
            sockets.close()
            self.enricher_error = exc
        finally:
            self._enricher_made.set()  # the sockets operator may take it now

    def _attach_packets(self, obj: BpfObject) -> None:
        """For a packet gadget's object: its owner programs, and its socket filter in the
        network namespaces it is for (see the module's docstring)."""
        filters = [p for p in obj.programs.values() if p.is_socket_filter and p.autoload]
        if len(filters) != 1:
            return
        from igrun.plugins._packet_owners import attach_owners, has_owner_programs

        if not has_owner_programs(obj):
            return
        self.owners_attached = attach_owners(obj)
        from igrun.core.containers.netns import socket_in_netns
        from igrun.core.containers.procfs import host_namespace

        if self.containers:
            targets = _other_namespaces("net", PACKET_NETNS_MAX)
        else:
            host, pid = host_namespace("net")
            targets = {host: pid} if host else {}
        for ns, pid in targets.items():
            with self._packet_lock:
                if self._wanted_netns is not None and ns not in self._wanted_netns:
                    continue
            try:
                sock = socket_in_netns(pid, netns=ns)
            except Exception:  # gone meanwhile: the run attaches where its containers are
                continue
            try:
                attachment = filters[0].attach_socket(sock)
            except BaseException:
                sock.close()
                raise
            with self._packet_lock:
                self.packet_sockets[ns] = (sock, attachment)
                if self._wanted_netns is not None and ns not in self._wanted_netns:
                    _close_socket(self.packet_sockets.pop(ns))

    def settle_packets(self, wanted: set[int]) -> None:
        """Keep the packet filter only in the network namespaces ``wanted`` from now on."""
        with self._packet_lock:
            self._wanted_netns = set(wanted)
            for ns in [ns for ns in self.packet_sockets if ns not in wanted]:
                _close_socket(self.packet_sockets.pop(ns))

    def take_packet_sockets(self) -> dict[int, PacketSocket]:
        """The packet filter's sockets, by network namespace: the caller's from now on."""
        with self._packet_lock:
            taken, self.packet_sockets = self.packet_sockets, {}
        return taken

    def _close_packet_sockets(self) -> None:
        for entry in self.take_packet_sockets().values():
            _close_socket(entry)

    def _filter(self, obj: BpfObject) -> None:
        from igrun.core.bpf.mntnsfilter import (
            FILTER_BY_MNTNS,
            FILTER_MAP_SIZE,
            MNTNS_FILTER_MAP,
            new_filter_map,
        )

        if not obj.has_global(FILTER_BY_MNTNS) or not obj.has_map(MNTNS_FILTER_MAP):
            raise LookupError("no mount-ns filter")  # the run shows every process itself
        self.filter_map = new_filter_map()
        self.prefilled = _prefill(self.filter_map, FILTER_MAP_SIZE)
        self._filter_made.set()  # the operator may take it now, while the kernel verifies
        obj.set_global(FILTER_BY_MNTNS, True)
        obj.reuse_map(MNTNS_FILTER_MAP, self.filter_map)

    def wait(self) -> BpfObject | None:
        """The loaded and attached object, once the thread is done (``None`` when it
        failed)."""
        self._thread.join()
        if self._enriching is not None:
            self._enriching.join()
        sys.setswitchinterval(self._switch)
        return self.obj

    def take_opened(self) -> object:
        """:attr:`opened`, the caller's from now on (``None`` when nothing was opened)."""
        opened, self.opened = self.opened, None
        return opened

    def close_opened(self) -> None:
        closing = self.take_opened()
        close = getattr(closing, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()

    def discard(self) -> None:
        """Close the object: its programs are detached and its events dropped. In a thread
        of its own: detaching a tracepoint's program waits for the kernel (tens of ms
        each), which the run loading its own object does not need to wait for."""
        obj = self.wait()
        self.obj = None
        if self.filter_map is not None and not self.filter_taken:
            self.filter_map.close()
        self.filter_map = None
        if self.enricher is not None and not self.enricher_taken:
            self.enricher.close()
        self.enricher = None
        self._close_packet_sockets()
        self.close_opened()
        if obj is not None:
            thread = threading.Thread(target=obj.close, name="igrun-head-start-close", daemon=True)
            thread.start()
            _closing.append(thread)


def _close_socket(entry: PacketSocket) -> None:
    sock, attachment = entry
    attachment.destroy()
    sock.close()


def _other_namespaces(kind: str, limit: int) -> dict[int, int]:
    """Every namespace of ``kind`` a process is in but the host's, at most ``limit``: by
    inode, a pid in it."""
    from igrun.core.containers.procfs import host_namespace

    host, _ = host_namespace(kind)
    found: dict[int, int] = {}
    if not host:
        return found
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{name}/ns/{kind}").st_ino
        except OSError:  # gone meanwhile
            continue
        if ns != host and ns not in found:
            found[ns] = int(name)
            if len(found) >= limit:
                break
    return found


def _prefill(filter_map: Map, limit: int) -> tuple[int, ...]:
    """Put in ``filter_map`` the mount-ns id of every process that is not in the host's mount
    namespace, at most ``limit``, and return them."""
    from igrun.core.bpf.mntnsfilter import let_through

    found = _other_namespaces("mnt", limit)
    for ns in found:
        let_through(filter_map, ns)
    return tuple(sorted(found))


_pending: HeadStart | None = None
_closing: list[threading.Thread] = []
_left: list[HeadStart] = []
"""Head starts no run took, kept (not closed) until the process ends, which releases them."""


def _object_of(gadget_id: str) -> str | None:
    """The one ``*.bpf.o`` next to igrun's own module for ``gadget_id``, or ``None``."""
    import importlib.util

    from igrun.core import dists

    own = dists.own_entry_points("igrun.gadgets")
    module = next((ep.module for ep in own or () if ep.name == gadget_id), None)
    if module is None:
        return None
    spec = importlib.util.find_spec(module)  # imports its parent packages, not the module
    if spec is None or not spec.origin or not spec.submodule_search_locations:
        return None
    folder = os.path.dirname(spec.origin)
    found = [n for n in os.listdir(folder) if n.endswith(".bpf.o")]
    return os.path.join(folder, found[0]) if len(found) == 1 else None


def _head_start_module(gadget_id: str, folder: str) -> Any:
    """The module :data:`HEAD_START_MODULES` names for ``gadget_id``, read from its file
    in ``folder`` (its package is not imported), or ``None``."""
    import importlib.util

    module_file = HEAD_START_MODULES.get(gadget_id)
    if module_file is None:
        return None
    spec = importlib.util.spec_from_file_location(
        f"_igrun_head_start_{gadget_id}", os.path.join(folder, module_file)
    )
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _gadget_values(flags: Sequence[str], own: Mapping[str, str]) -> dict[str, str] | None:
    """The values of the gadget's own flags ``own`` (flag: param name) among ``flags``, by
    param name, when every other flag is one of :data:`GUESSABLE` (given as
    ``--flag=value`` or with its value next); else ``None``."""
    values: dict[str, str] = {}
    skip = 0
    param = ""
    for arg in flags:
        if param:
            values[param], param = arg, ""
            continue
        if skip:
            skip -= 1
            continue
        name, equals, value = arg.partition("=")
        if name in own:
            if equals:
                values[own[name]] = value
            else:
                param = own[name]
        elif name in GUESSABLE:
            skip = 0 if equals else GUESSABLE[name]
        else:
            return None
    return None if param else values


def begin(argv: Sequence[str]) -> None:
    """Start the head start for ``igrun [-v] trace NAME …`` (or a gadget of
    :data:`HEAD_START_OTHERS`; the launcher's arguments), when root may load programs and
    nothing in the flags rules it out."""
    global _pending
    args = list(argv)
    while args and args[0] in ("-v", "-vv", "-vvv", "--verbose"):
        args.pop(0)
    if _pending is not None or os.environ.get(OPT_OUT) == "1" or os.geteuid() != 0:
        return
    if len(args) < 2:
        return
    gadget_id = f"{args[0]}_{args[1].replace('-', '_')}"
    if args[0] != "trace" and gadget_id not in HEAD_START_OTHERS:
        return
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return
    try:
        path = _object_of(gadget_id)
        module = _head_start_module(gadget_id, os.path.dirname(path)) if path else None
        values = _gadget_values(args[2:], getattr(module, "HEAD_START_FLAGS", {}))
        if path is None or values is None:
            return
        give_constants = getattr(module, "head_start_constants", None)
        constants = give_constants(values) if give_constants is not None else {}
    except (OSError, ImportError, ValueError):
        return
    if constants is not None:
        opened = None
        open_early = getattr(module, "head_start_open", None)
        with contextlib.suppress(OSError):  # the gadget opens it itself, and says why not
            opened = open_early() if open_early is not None else None
        _pending = HeadStart(
            gadget_id, path, constants, containers="--host" not in args, opened=opened
        )
        # The thread's few ms of Python before the load would take twice as long shared
        # with the imports: the launcher goes on once the kernel has the object.
        _pending._loading.wait(LOADING_WAIT_S)


def take_socket_enricher() -> SocketEnricher | None:
    """The socket enricher the pending head start started (the caller closes it when the
    run ends), or ``None``: the sockets operator takes it instead of starting its own."""
    head = _pending
    if head is None:
        return None
    head._enricher_made.wait()
    if head.enricher is None or head.enricher_taken:
        return None
    head.enricher_taken = True
    return head.enricher


def take_filter_map() -> tuple[Map, tuple[int, ...]] | None:
    """The mount-ns filter map of the pending head start and the mount-ns ids in it (every
    one but the host's: the caller keeps the selected ones, removes the others, and closes
    the map when the run ends), or ``None`` when there is none. The containers operator
    takes it so that the head start's object filters by the run's selection."""
    head = _pending
    if head is None or not head.containers:
        return None
    head._filter_made.wait()
    if head.filter_map is None or head.filter_taken:
        return None
    head.filter_taken = True
    return head.filter_map, head.prefilled


def settle_packet_sockets(wanted: set[int]) -> None:
    """Close the pending head start's packet filter in every network namespace but
    ``wanted`` (the selected containers'), now and for one it attaches later: the
    containers operator calls it after its first scan."""
    head = _pending
    if head is not None and head.containers:
        head.settle_packets(wanted)


def take_head_start(gadget_id: str) -> HeadStart | None:
    """The head start of ``gadget_id``, waited for, or ``None``; it is the caller's from
    then on (to use or :meth:`HeadStart.discard`)."""
    global _pending
    head, _pending = _pending, None
    if head is not None and head.gadget_id != gadget_id:
        head.discard()
        return None
    if head is not None:
        head.wait()
    return head


def discard() -> None:
    """Let go of a head start no run took (the launcher calls it before it returns): the
    process is ending, and its end detaches and frees what the thread attached."""
    global _pending
    head, _pending = _pending, None
    if head is not None:
        _left.append(head)
