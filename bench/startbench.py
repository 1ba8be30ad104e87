"""Launch to first captured event, for every ``trace`` gadget, against execsnoop and opensnoop.

Measured from outside: a trigger process is already running when the tracer is launched and,
every few milliseconds from that moment, execs a program, opens a file, checks a capability,
sends itself a signal, calls mount, binds, connects (to a listening port and to a closed one)
and fsyncs, each carrying a marker (its exec argument, its file name, or the trigger's pid).

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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execbench import igrun_command, snoop_command

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
}
"""The gadgets the trigger makes events for, with the flags that let it: ``trace oomkill``
(an out-of-memory kill), ``trace tcpretrans`` (a lost TCP segment) and ``trace tcpdrop`` (a
packet the kernel drops) have no event a loop can make every few milliseconds without harm,
so they are not measured."""

IGRUN: dict[str, list[str]] = {"igrun": igrun_command()}
"""The igrun installs measured, by label (``--igrun before=/other/venv/bin/igrun``)."""


def trigger(tag: str, folder: Path, stop: threading.Event) -> None:
    """Every :data:`TICK` until ``stop``: one of each action the gadgets trace, numbered N in
    the markers that can carry it (``TAG-N``); the wall-clock time each round began is
    written to ``FOLDER/TAG.times`` (a JSON list, index N - 1) when it stops."""
    libc = ctypes.CDLL(None, use_errno=True)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there: a SYN to it is dropped (tcpdrop)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    times: list[float] = []
    n = 0
    while not stop.is_set():
        n += 1
        times.append(time.time())
        subprocess.Popen(["/bin/true", f"{tag}-{n}"]).wait()
        path = folder / f"{tag}-{n}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"x")
        os.fsync(fd)
        os.close(fd)
        path.unlink()
        with contextlib.suppress(OSError):
            os.setuid(0)  # a CAP_SETUID check
        os.kill(os.getpid(), signal.SIGUSR1)
        libc.mount(b"none", f"/nonexistent-{tag}-{n}".encode(), b"tmpfs", 0, None)
        for port in (listener.getsockname()[1], closed_port):
            with socket.socket() as s, contextlib.suppress(OSError):
                s.bind(("127.0.0.1", 0))
                s.connect(("127.0.0.1", port))
        with contextlib.suppress(BlockingIOError):
            listener.setblocking(False)
            listener.accept()[0].close()
        time.sleep(TICK)
    listener.close()
    (folder / f"{tag}.times").write_text(json.dumps(times))


def tracer_argv(name: str) -> list[str]:
    """``execsnoop``, ``opensnoop``, or ``LABEL/GADGET``: that igrun's ``trace GADGET``."""
    if name in ("execsnoop", "opensnoop"):
        argv = snoop_command(name.removesuffix("snoop"))
        if argv is None:
            raise FileNotFoundError(name)
        return argv
    label, _, gadget = name.rpartition("/")
    return [*IGRUN[label], "trace", gadget, "--host", "-o", "json", *GADGETS[gadget]]


def one_run(name: str, folder: str) -> dict[str, Any]:
    """One launch of tracer ``name`` with the trigger already going: ms to the first
    triggered action it captured, to its first line showing one, and to its ready signal."""
    tag = f"igstart-{uuid.uuid4().hex[:8]}"
    marks = [tag.encode()]
    trigger_cmd = [sys.executable, __file__, "--trigger", tag, folder]
    trig = subprocess.Popen(trigger_cmd, stdout=subprocess.PIPE, text=True)
    assert trig.stdout is not None
    trig.stdout.readline()  # the trigger is going
    marks += [f'"pid":{trig.pid},'.encode(), f'"pid": {trig.pid},'.encode()]
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
    parser.add_argument("--trigger", nargs=2, metavar=("TAG", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.trigger:  # the trigger process itself
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
            comm.write("igstart-trigger")
        print("going", flush=True)
        trigger(args.trigger[0], Path(args.trigger[1]), stop)
        return
    for spec in args.igrun:
        label, _, command = spec.partition("=")
        IGRUN[label] = [command]
    only = set(args.only.split(",")) if args.only else None
    names = [f"{label}/{g}" for g in GADGETS for label in IGRUN if only is None or g in only]
    names += [n for n in ("execsnoop", "opensnoop") if only is None or n in only]
    results: dict[str, Any] = {
        "runs": args.runs,
        "tick_ms": TICK * 1000,
        "igrun": IGRUN,
        "load_average": os.getloadavg(),
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
