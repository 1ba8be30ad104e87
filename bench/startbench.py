"""Launch to first captured event, for every ``trace`` gadget, against execsnoop and opensnoop.

Measured from outside: a trigger process is already running when the tracer is launched and,
every few milliseconds from that moment, execs a program, opens a file, checks a capability,
sends itself a signal, calls mount, binds, connects (to a listening port, to a closed one and to
one whose socket filter drops every packet, whose SYNs are sent again after 1 s), fsyncs,
sends a DNS query (UDP, to port 53 of the loopback) and a TLS ClientHello (over a connection
to its listener), each carrying a marker (its exec argument, its file name, the name asked
about or the server named, or the trigger's pid). For ``trace oomkill`` it also has a child
killed for want of memory every tick, and for ``audit seccomp`` it calls a syscall its own
seccomp filter logs.

Two figures per launch, both from just before the tracer is spawned:

- captured: when the first action the tracer reports happened. For igrun, the event's own
  ``timestamp`` (wall-clock nanoseconds); for execsnoop and opensnoop, which print no precise
  time, the time the trigger noted for the action numbered in the marker (``TAG-N``). The
  programs were attached at most one tick (5 ms) before it: this is the start-up of tracing.
- shown: when the first line showing one of those actions reached the benchmark through the
  tracer's stdout pipe (what a user watching the output waits for).

The time of the tracer's own ready signal (igrun's ``ready`` line, libbpf-tools' header) is
noted too.

Run as root: ``nox -s startup`` or ``python bench/startbench.py --runs 5`` prints a Markdown
table and writes every figure to ``bench/results/startup-<time>.json`` (``--out FILE``);
``--igrun before=/other/venv/bin/igrun`` measures another install in the same runs,
interleaved with this one, ``--only exec,open,execsnoop`` narrows it.

``--containers`` runs the trigger in a podman container (busybox, with the host's Python
mounted) and igrun without ``--host``, as ``igrun trace GADGET`` runs by default: only
containers, filtered in the kernel by mount namespace.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execbench import igrun_command, snoop_command
from podmanlab import IMAGE, ensure_image, host_mounts, podman_env

TICK = 0.005  # the trigger acts every 5 ms
TIMEOUT = 15.0  # a tracer that shows nothing by then counts as a failure
SHM = Path("/dev/shm")

GADGETS: dict[str, list[str]] = {
    "exec": [],
    "open": [],
    "bind": [],
    "capabilities": [],
    "fsslower": ["-f", "tmpfs", "--min", "0"],
    "mount": [],
    "signal": [],
    "tcp": [],
    "tcpconnect": [],
    "tcpdrop": [],
    "tcpretrans": [],
    "dns": [],
    "sni": [],
    "network": [],
    "oomkill": [],
    "audit-seccomp": [],
}
COMMANDS = {"audit-seccomp": ["audit", "seccomp"]}
"""The command of a gadget that is not ``trace NAME``."""
"""The gadgets the trigger makes events for, with the flags that let it. For ``trace oomkill``
(and only then: it costs a few ms of CPU every tick) the trigger also forks a child every tick
that allocates until the kernel's OOM killer ends it, in a memory cgroup of
:data:`OOM_LIMIT_MB` made for the run (with ``--containers``, the container's own limit)."""
SECCOMP_LOGGED = {"x86_64": 121, "aarch64": 155}
"""``getpgid``, by machine: the syscall the trigger's seccomp filter logs (only when
measuring ``audit seccomp``: the filter stays with the trigger and its children)."""
OOM_LIMIT_MB = 16
OOM_COMM = "igstart-oom"
"""The comm of the trigger's children that run out of memory (``kcomm`` of their kill)."""
WARM_UP_S = 1.2
"""The trigger says it is going only after this long: a SYN to its listener that drops
every packet is first sent again after 1 s (the initial retransmission timeout), so from then
on its loop makes a retransmission every tick too."""

IGRUN: dict[str, list[str]] = {"igrun": igrun_command()}
"""The igrun installs measured, by label (``--igrun before=/other/venv/bin/igrun``)."""
PODMAN: dict[str, str] = {}
"""With ``--containers``: the environment podman runs the trigger's container in."""
PODMAN_SETTLE_S = 0.5
"""How long the benchmark waits after podman has started the trigger's container, before the
tracer's launch: podman's own start-up work would otherwise share the two CPUs with it."""


def dns_query(name: str, qid: int) -> bytes:
    """A DNS query for the A records of ``name``: what ``trace dns`` shows."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"


def client_hello(name: str) -> bytes:
    """A TLS ClientHello whose one extension names ``name``: what ``trace sni`` shows."""
    host = name.encode()
    server_name = struct.pack("!HBH", len(host) + 3, 0, len(host)) + host
    extension = struct.pack("!HH", 0, len(server_name)) + server_name
    body = (b"\3\3" + bytes(32) + b"\0" + struct.pack("!HH", 2, 0x1301) + b"\1\0"
            + struct.pack("!H", len(extension)) + extension)  # fmt: skip
    handshake = b"\1" + len(body).to_bytes(3, "big") + body
    return b"\x16\3\1" + struct.pack("!H", len(handshake)) + handshake


SO_ATTACH_FILTER = 26
DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)
"""A classic BPF program of one instruction, ``ret #0``: every packet is dropped."""


def deaf_listener() -> socket.socket:
    """A listening socket on 127.0.0.1 whose socket filter drops every packet: each SYN sent
    to it is dropped by its owner's filter (tcpdrop, reason SOCKET_FILTER, owner known), and
    sent again by the connecting socket after 1 s (tcpretrans)."""
    program = ctypes.create_string_buffer(DROP_ALL)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    fprog = struct.pack("HL", 1, ctypes.addressof(program))
    listener.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # copied by the kernel
    listener.listen(64)
    return listener


def memory_cgroup(tag: str) -> Path | None:
    """A memory cgroup (cgroup v1's controller, or v2's when the root's children have it)
    limited to :data:`OOM_LIMIT_MB` without swap, or ``None`` when there is none here."""
    limit = str(OOM_LIMIT_MB << 20)
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        path = v1 / tag
        path.mkdir()
        (path / "memory.limit_in_bytes").write_text(limit)
        if (path / "memory.memsw.limit_in_bytes").exists():
            (path / "memory.memsw.limit_in_bytes").write_text(limit)
        return path
    v2 = Path("/sys/fs/cgroup")
    with contextlib.suppress(OSError):
        if "memory" in (v2 / "cgroup.subtree_control").read_text().split():
            path = v2 / tag
            path.mkdir()
            (path / "memory.max").write_text(limit)
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
            return path
    return None


def remove_cgroup(path: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # busy until the last killed child is gone
            time.sleep(0.05)


def run_out_of_memory(cgroup: str) -> None:
    """Fork a child that joins ``cgroup`` (its ``cgroup.procs``; empty: stay in this one) and
    allocates until the OOM killer ends it, and wait for it."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(OOM_COMM)
        with open("/proc/self/oom_score_adj", "w") as score:
            score.write("1000")  # the victim, before the trigger in the same cgroup
        if cgroup:
            with open(cgroup, "w") as procs:
                procs.write(str(os.getpid()))
        held = []
        while True:
            held.append(b"\1" * (1 << 20))  # touched: charged to the cgroup
    finally:
        os._exit(1)


def log_getpgid() -> None:
    """Load a seccomp filter that logs (``SECCOMP_RET_LOG``) every ``getpgid`` of this
    process and allows everything else: each is an ``AUDIT_SECCOMP`` record."""
    nr = SECCOMP_LOGGED[os.uname().machine]
    program = b"".join(
        struct.pack("HBBI", *insn)
        for insn in (
            (0x20, 0, 0, 0),  # ld [0]: the syscall's number
            (0x15, 0, 1, nr),  # jeq #nr
            (0x06, 0, 0, 0x7FFC0000),  # ret LOG
            (0x06, 0, 0, 0x7FFF0000),  # ret ALLOW
        )
    )
    insns = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", 4, ctypes.addressof(insns))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0):
        raise OSError(ctypes.get_errno(), "cannot load the seccomp filter")


def trigger(
    tag: str,
    folder: Path,
    stop: threading.Event,
    going: Callable[[int], None] | None,
    oom: str | None = None,
    seccomp: bool = False,
) -> None:
    """Every :data:`TICK` until ``stop``: one of each action the gadgets trace, numbered N in
    the markers that can carry it (``TAG-N``); the wall-clock time each round began is
    written to ``FOLDER/TAG.times`` (a JSON list, index N - 1) when it stops. ``going`` is
    called once with the closed port (the destination of the dropped SYNs) after
    :data:`WARM_UP_S`. With ``oom`` (a memory cgroup's ``cgroup.procs``, or empty for the
    trigger's own cgroup), a child is killed for want of memory every tick too; with
    ``seccomp``, a ``getpgid`` a seccomp filter logs."""
    libc = ctypes.CDLL(None, use_errno=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: a SYN to it is dropped (tcpdrop)
    full = deaf_listener()
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    waiting: collections.deque[tuple[float, socket.socket]] = collections.deque()
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if seccomp:
        log_getpgid()
    times: list[float] = []
    n = 0
    began = time.monotonic()
    while not stop.is_set():
        if going is not None and time.monotonic() - began >= WARM_UP_S:
            going(closed_port)
            going = None
        waiting.append((time.monotonic(), socket.socket()))
        waiting[-1][1].setblocking(False)
        with contextlib.suppress(OSError):
            waiting[-1][1].connect(full.getsockname())
        while waiting[0][0] < time.monotonic() - 3:
            waiting.popleft()[1].close()
        n += 1
        times.append(time.time())
        subprocess.Popen(["/bin/true", f"{tag}-{n}"]).wait()
        path = folder / f"{tag}-{n}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.fsync(fd)
        os.close(fd)
        path.unlink()
        if oom is not None:
            run_out_of_memory(oom)
        if seccomp:
            os.getpgid(0)
        with contextlib.suppress(OSError):
            os.setuid(0)  # a CAP_SETUID check
        os.kill(os.getpid(), signal.SIGUSR1)
        libc.mount(b"none", f"/nonexistent-{tag}-{n}".encode(), b"tmpfs", 0, None)
        for port in (listener.getsockname()[1], closed_port):
            with socket.socket() as s, contextlib.suppress(OSError):
                s.bind(("127.0.0.1", 0))
                s.connect(("127.0.0.1", port))
        with contextlib.suppress(OSError):
            resolver.sendto(dns_query(f"{tag}-{n}.test", n), ("127.0.0.1", 53))
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(listener.getsockname())
            s.sendall(client_hello(f"{tag}-{n}.test"))
        with contextlib.suppress(BlockingIOError):
            listener.setblocking(False)
            while True:
                listener.accept()[0].close()
        time.sleep(TICK)
    listener.close()
    full.close()
    resolver.close()
    for _, waiter in waiting:
        waiter.close()
    (folder / f"{tag}.times").write_text(json.dumps(times))


def tracer_argv(name: str) -> list[str]:
    """``execsnoop``, ``opensnoop``, or ``LABEL/GADGET``: that igrun's ``trace GADGET``."""
    if name in ("execsnoop", "opensnoop"):
        argv = snoop_command(name.removesuffix("snoop"))
        if argv is None:
            raise FileNotFoundError(name)
        return argv
    label, _, gadget = name.rpartition("/")
    host = [] if PODMAN else ["--host"]
    command = COMMANDS.get(gadget, ["trace", gadget])
    return [*IGRUN[label], *command, *host, "-o", "json", *GADGETS[gadget]]


def start_trigger(
    tag: str, folder: str, oom: Path | None = None, seccomp: bool = False
) -> tuple[subprocess.Popen[str], int, int]:
    """The trigger, going, its pid as the tracers see it (the host's): a child of this
    process, or with ``--containers`` a podman container's first process; and the port its
    dropped SYNs go to. With ``oom`` (a memory cgroup, or the container's own limit with
    ``--containers``), it makes an OOM kill every tick too; with ``seccomp``, a logged
    syscall."""
    command = [sys.executable, __file__, "--trigger", tag, folder]
    if seccomp:
        command.append("--seccomp")
    if oom is not None:
        command += ["--oom", "" if PODMAN else str(oom / "cgroup.procs")]
    if PODMAN:
        # NET_ADMIN: a socket filter is refused in a container without it (here).
        limit = ["--memory", f"{OOM_LIMIT_MB * 4}m", "--memory-swap", f"{OOM_LIMIT_MB * 4}m"]
        command = ["podman", "run", "--rm", "--pull=never", "--network", "none", "--name", tag,
                   "--cap-add", "NET_ADMIN", *(limit if oom is not None else []),
                   *host_mounts(Path(folder)), IMAGE, *command]  # fmt: skip
    # In the run's folder: podman's conmon leaves a file named "oom" in its working folder
    # when the container has an OOM kill.
    trig = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=PODMAN or None, cwd=folder
    )
    assert trig.stdout is not None
    closed_port = int(trig.stdout.readline().split()[1])  # the trigger is going
    if not PODMAN:
        return trig, trig.pid, closed_port
    inspect = ["podman", "inspect", "-f", "{{.State.Pid}}", tag]
    pid = subprocess.run(inspect, env=PODMAN, capture_output=True, text=True, check=True)
    time.sleep(PODMAN_SETTLE_S)
    return trig, int(pid.stdout), closed_port


def one_run(name: str, folder: str) -> dict[str, Any]:
    """One launch of tracer ``name`` with the trigger already going: ms to the first
    triggered action it captured, to its first line showing one, and to its ready signal."""
    tag = f"igstart-{uuid.uuid4().hex[:8]}"
    marks = [tag.encode(), f'"kcomm":"{OOM_COMM}"'.encode()]
    oom = None
    if name.endswith("/oomkill"):
        oom = Path(".") if PODMAN else memory_cgroup(tag)
        if oom is None:
            raise SystemExit("trace oomkill: no memory cgroup controller here")
    try:
        return measure(name, folder, tag, marks, oom)
    finally:
        if oom is not None and not PODMAN:
            remove_cgroup(oom)


def measure(
    name: str, folder: str, tag: str, marks: list[bytes], oom: Path | None
) -> dict[str, Any]:
    seccomp = name.endswith("/audit-seccomp")
    trig, trig_pid, closed_port = start_trigger(tag, folder, oom, seccomp)
    marks += [f'"pid":{trig_pid},'.encode(), f'"pid": {trig_pid},'.encode()]
    marks += [f'"version":4,"port":{closed_port}}}'.encode()]  # a drop with no owner known
    ready_ms: list[float] = []
    launched = time.time()
    started = time.monotonic()
    proc = subprocess.Popen(
        tracer_argv(name),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    def watch_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if b"[info] ready" in line and not ready_ms:
                ready_ms.append((time.monotonic() - started) * 1000)

    threading.Thread(target=watch_stderr, daemon=True).start()
    first_ms = None
    first_line = b""
    assert proc.stdout is not None
    timer = threading.Timer(TIMEOUT, proc.kill)
    timer.start()
    for line in proc.stdout:
        if not ready_ms and name.endswith("snoop") and b"COMM" in line:  # their header
            ready_ms.append((time.monotonic() - started) * 1000)
        if any(m in line for m in marks):
            first_ms = (time.monotonic() - started) * 1000
            first_line = line
            break
    timer.cancel()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    trig.send_signal(signal.SIGINT)
    trig.wait(15)
    times_file = Path(folder) / f"{tag}.times"
    times = json.loads(times_file.read_text())
    times_file.unlink()
    captured_ms = None
    if first_line and not name.endswith("snoop"):
        captured_ms = (json.loads(first_line)["timestamp"] / 1e9 - launched) * 1000
    elif first_line:
        found = re.search(rb"%s-(\d+)" % tag.encode(), first_line)
        if found:
            captured_ms = (times[int(found.group(1)) - 1] - launched) * 1000
    return {
        "captured_ms": None if captured_ms is None else round(captured_ms, 1),
        "first_event_ms": first_ms,
        "ready_ms": ready_ms[0] if ready_ms else None,
    }


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="launch to first captured event")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated tracer names")
    parser.add_argument("--out", type=Path, default=None, help="the JSON results file")
    parser.add_argument(
        "--igrun",
        action="append",
        default=[],
        metavar="LABEL=COMMAND",
        help="an igrun to measure beside this one (another install's), e.g. before=PATH",
    )
    parser.add_argument(
        "--containers",
        action="store_true",
        help="the trigger in a podman container, igrun without --host",
    )
    parser.add_argument("--trigger", nargs=2, metavar=("TAG", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--oom", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seccomp", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trigger:  # the trigger process itself
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a container's first process
        with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
            comm.write("igstart-trigger")

        def going(closed_port: int) -> None:
            print(f"going {closed_port}", flush=True)

        trigger(args.trigger[0], Path(args.trigger[1]), stop, going, args.oom, args.seccomp)
        return
    for spec in args.igrun:
        label, _, command = spec.partition("=")
        IGRUN[label] = [command]
    only = set(args.only.split(",")) if args.only else None
    if args.containers:
        PODMAN.update(podman_env(Path(tempfile.mkdtemp(prefix="igstart-podman-"))))
        ensure_image(PODMAN)
    names = [f"{label}/{g}" for g in GADGETS for label in IGRUN if only is None or g in only]
    names += [n for n in ("execsnoop", "opensnoop") if only is None or n in only]
    results: dict[str, Any] = {
        "runs": args.runs,
        "tick_ms": TICK * 1000,
        "igrun": IGRUN,
        "load_average": os.getloadavg(),
        "containers": args.containers,
        "tracers": {},
    }
    with tempfile.TemporaryDirectory(dir=SHM) as folder:
        for i in range(args.runs):  # interleaved: every tracer sees the same load
            for name in names:
                run = one_run(name, folder)
                results["tracers"].setdefault(name, []).append(run)
                print(f"run {i + 1} {name}: {run}", file=sys.stderr, flush=True)
    table = [
        "| tracer | captured ms: median (min–max) | shown ms: median (min–max) "
        "| ready ms (median) | missed |",
        "|---|---|---|---|---|",
    ]

    def cell(figures: dict[str, Any] | None) -> str:
        if not figures:
            return "–"
        return f"{figures['median']:.0f} ({figures['min']:.0f}–{figures['max']:.0f})"

    for name, runs in results["tracers"].items():
        entry: dict[str, Any] = {"runs": runs}
        for key in ("captured_ms", "first_event_ms", "ready_ms"):
            values = [r[key] for r in runs if r[key] is not None]
            if values:
                entry[key] = summary(values)
        entry["missed"] = sum(1 for r in runs if r["first_event_ms"] is None)
        results["tracers"][name] = entry
        ready = entry.get("ready_ms")
        table.append(
            f"| {name} | {cell(entry.get('captured_ms'))} | {cell(entry.get('first_event_ms'))} "
            f"| {ready['median']:.0f} | {entry['missed']} |"
            if ready
            else f"| {name} | {cell(entry.get('captured_ms'))} | "
            f"{cell(entry.get('first_event_ms'))} | – | {entry['missed']} |"
        )
    out = args.out or Path(__file__).resolve().parent / "results" / time.strftime(
        "startup-%Y%m%dT%H%M%S.json", time.gmtime()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(table))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
