"""trace tcpconnect in the real kernel: loopback connections (IPv4 and IPv6) from child
processes, each reported once with the exact caller, endpoints and handshake latency."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest
from tcplab import blackhole_netns

from igrun.core.bpf.objects import Map, MapType
from igrun.core.params import Params
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_tcpconnect import TraceTcpconnect

if TYPE_CHECKING:
    from conftest import IgrunCli

NO_POD = {"namespace": "", "podname": "", "kind": ""}
"""An endpoint of no known pod, as the Python API gives it (JSON leaves its keys out)."""


pytestmark = pytest.mark.bpf

COMM = Path(sys.executable).name[:15]
SYN_SENT = 0x02
"""TCP state number as /proc/net/tcp shows it."""
NOBODY = 65534
PIN_ROOT = Path("/sys/fs/bpf/gadget")


def free_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listener(
    family: int = socket.AF_INET, host: str = "127.0.0.1", backlog: int = 16
) -> socket.socket:
    sock = socket.socket(family)
    sock.bind((host, 0))
    sock.listen(backlog)
    return sock


def client(
    host: str,
    port: int,
    from_port: int,
    family: str = "AF_INET",
    before: str = "",
    prefix: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    """A child that binds to ``from_port``, connects, and prints what it saw as JSON: the
    errno (0 when connected), its thread id and how long connect() took."""
    code = f"""
        import json, os, socket, threading, time
        {before}
        s = socket.socket(socket.{family})
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(({host!r}, {from_port}))
        err, start = 0, time.monotonic_ns()
        try:
            s.connect(({host!r}, {port}))
        except OSError as e:
            err = e.errno
        took = time.monotonic_ns() - start
        print(json.dumps({{"errno": err, "tid": threading.get_native_id(), "took": took}}))
        s.close()
    """
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def trace(action: Callable[[], None], values: dict[str, str] | None = None, **kw: Any) -> Any:
    return gadgetlab.trace(TraceTcpconnect, action, values, **kw)


def of_pid(rows: list[dict[str, Any]], pid: int) -> list[dict[str, Any]]:
    return [r for r in rows if r["pid"] == pid]


def in_syn_sent(port: int) -> bool:
    """Whether a socket bound to local ``port`` waits for its SYN to be answered."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and int(state, 16) == SYN_SENT:
            return True
    return False


@pytest.mark.parametrize(
    ("family", "host", "version"),
    [(socket.AF_INET, "127.0.0.1", 4), (socket.AF_INET6, "::1", 6)],
)
def test_connect_event_has_exact_fields(
    family: socket.AddressFamily, host: str, version: int
) -> None:
    server = listener(family, host)
    port = server.getsockname()[1]
    from_port = free_port(family, host)
    seen: dict[str, Any] = {}

    def run() -> None:
        proc = client(host, port, from_port, family.name)
        seen["pid"] = proc.pid
        seen["child"] = finish(proc)
        server.accept()[0].close()

    before = time.time_ns()
    try:
        rows = trace(run)
    finally:
        server.close()
    after = time.time_ns()
    assert seen["child"]["errno"] == 0
    (event,) = of_pid(rows, seen["pid"])
    assert event["tid"] == seen["pid"]
    assert event["uid"] == os.getuid()
    assert event["gid"] == os.getgid()
    assert event["comm"] == COMM
    assert event["ipversion"] == version
    assert event["src"] == {"addr": host, "version": version, "port": from_port, **NO_POD}
    assert event["dst"] == {"addr": host, "version": version, "port": port, **NO_POD}
    assert event["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert event["error"] == ""
    # Measured in the kernel from SYN sent to ESTABLISHED: within the child's connect() call.
    assert 0 < event["latency"] <= seen["child"]["took"]
    assert before <= event["timestamp"] <= after
    assert [d for d in PIN_ROOT.glob(f"{os.getpid()}-*")] == []  # the run unpinned its maps


def test_connect_from_a_thread_names_pid_and_tid() -> None:
    """The thread that calls connect() is recorded in its own context, not the softirq's."""
    server = listener()
    port = server.getsockname()[1]
    from_port = free_port()
    seen: dict[str, Any] = {}

    def run() -> None:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(
                    f"""
                    import json, socket, threading
                    out = {{}}
                    def main():
                        s = socket.socket()
                        s.bind(("127.0.0.1", {from_port}))
                        s.connect(("127.0.0.1", {port}))
                        out["tid"] = threading.get_native_id()
                        s.close()
                    t = threading.Thread(target=main)
                    t.start()
                    t.join()
                    print(json.dumps(out))
                    """
                ),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        seen["pid"] = proc.pid
        seen["tid"] = json.loads(proc.communicate(timeout=20)[0])["tid"]
        server.accept()[0].close()

    try:
        rows = trace(run)
    finally:
        server.close()
    (event,) = of_pid(rows, seen["pid"])
    assert seen["tid"] != seen["pid"]
    assert event["tid"] == seen["tid"]
    assert event["src"]["port"] == from_port


def test_unprivileged_client_uid_and_gid() -> None:
    server = listener()
    port = server.getsockname()[1]
    from_port = free_port()
    seen: dict[str, Any] = {}

    def run() -> None:
        drop = f"os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})"
        proc = client("127.0.0.1", port, from_port, before=drop)
        seen["pid"] = proc.pid
        seen["child"] = finish(proc)
        server.accept()[0].close()

    try:
        rows = trace(run)
    finally:
        server.close()
    assert seen["child"]["errno"] == 0
    (event,) = of_pid(rows, seen["pid"])
    assert (event["uid"], event["gid"]) == (NOBODY, NOBODY)
    assert event["src"]["port"] == from_port


@pytest.mark.parametrize(
    ("family", "host", "version"),
    [(socket.AF_INET, "127.0.0.1", 4), (socket.AF_INET6, "::1", 6)],
)
def test_refused_connect_is_reported_with_its_errno(
    family: socket.AddressFamily, host: str, version: int
) -> None:
    """As ``ig`` does, a connect answered by a reset is reported; here with ECONNREFUSED,
    the errno the caller got, and the caller, not the softirq that handled the reset."""
    closed_port, from_port = free_port(family, host), free_port(family, host)
    server = listener(family, host)
    port = server.getsockname()[1]
    seen: dict[str, Any] = {}

    def run() -> None:
        refused = client(host, closed_port, from_port, family.name)
        seen["refused"] = (refused.pid, finish(refused))
        ok = client(host, port, free_port(family, host), family.name)
        seen["ok"] = (ok.pid, finish(ok))
        server.accept()[0].close()

    try:
        rows = trace(run)
    finally:
        server.close()
    refused_pid, refused = seen["refused"]
    assert refused["errno"] == errno.ECONNREFUSED
    (event,) = of_pid(rows, refused_pid)
    assert event["error"] == "ECONNREFUSED"
    assert (event["tid"], event["comm"], event["uid"]) == (refused["tid"], COMM, os.getuid())
    assert event["src"] == {"addr": host, "version": version, "port": from_port, **NO_POD}
    assert event["dst"] == {"addr": host, "version": version, "port": closed_port, **NO_POD}
    assert 0 < event["latency"] <= refused["took"]  # SYN sent to reset received
    ok_pid, ok = seen["ok"]
    assert ok["errno"] == 0
    (connected,) = of_pid(rows, ok_pid)
    assert (connected["dst"]["port"], connected["error"]) == (port, "")


def test_timed_out_connect_is_reported_with_etimedout() -> None:
    """SYNs dropped by a firewall: connect() gives up after the SYN retries (1 here) with
    ETIMEDOUT, and so does the event, with the latency of the whole wait."""
    with blackhole_netns() as blackhole:
        from_port = 41000 + os.getpid() % 10000
        seen: dict[str, Any] = {}

        def run() -> None:
            proc = client(blackhole.addr, blackhole.port, from_port, prefix=tuple(blackhole.run()))
            seen["pid"] = proc.pid
            seen["child"] = finish(proc)

        rows = trace(run)
        assert seen["child"]["errno"] == errno.ETIMEDOUT
        (event,) = of_pid(rows, seen["pid"])
        assert event["error"] == "ETIMEDOUT"
        assert (event["tid"], event["comm"]) == (seen["pid"], COMM)
        assert event["src"] == {"addr": blackhole.addr, "version": 4, "port": from_port, **NO_POD}
        assert event["dst"] == {
            "addr": blackhole.addr,
            "version": 4,
            "port": blackhole.port,
            **NO_POD,
        }
        # At least the one retransmission (1 s) before giving up; no later than connect() returned.
        assert 1_000_000_000 <= event["latency"] <= seen["child"]["took"]


def test_connect_answered_by_icmp_unreachable_is_ehostunreach() -> None:
    """An ICMP error to the SYN fails the connect at once; the event has that errno."""
    with blackhole_netns() as blackhole:
        from_port = 43000 + os.getpid() % 10000
        seen: dict[str, Any] = {}

        def run() -> None:
            prefix = tuple(blackhole.run())
            proc = client(blackhole.addr, blackhole.unreachable, from_port, prefix=prefix)
            seen["pid"] = proc.pid
            seen["child"] = finish(proc)

        rows = trace(run)
        assert seen["child"]["errno"] == errno.EHOSTUNREACH
        (event,) = of_pid(rows, seen["pid"])
        assert (event["error"], event["comm"]) == ("EHOSTUNREACH", COMM)
        assert event["src"] == {"addr": blackhole.addr, "version": 4, "port": from_port, **NO_POD}
        assert event["dst"] == {
            "addr": blackhole.addr,
            "version": 4,
            "port": blackhole.unreachable,
            **NO_POD,
        }


def test_connect_closed_before_any_answer_is_econnaborted() -> None:
    """A non-blocking connect whose socket is closed while its SYN is unanswered: the kernel
    leaves no errno on the socket; the event says ECONNABORTED, never success."""
    with blackhole_netns() as blackhole:
        from_port = 42000 + os.getpid() % 10000
        seen: dict[str, Any] = {}
        code = f"""
            import errno, socket
            s = socket.socket()
            s.bind(({blackhole.addr!r}, {from_port}))
            s.setblocking(False)
            assert s.connect_ex(({blackhole.addr!r}, {blackhole.port})) == errno.EINPROGRESS
            s.close()
        """

        def run() -> None:
            proc = subprocess.Popen(
                [*blackhole.run(), sys.executable, "-c", textwrap.dedent(code)],
                stderr=subprocess.PIPE,
                text=True,
            )
            seen["pid"] = proc.pid
            _, err = proc.communicate(timeout=20)
            assert proc.returncode == 0, err

        rows = trace(run)
        (event,) = of_pid(rows, seen["pid"])
        assert event["error"] == "ECONNABORTED"
        assert event["src"]["port"] == from_port
        assert event["dst"]["port"] == blackhole.port


def fast_and_slow(values: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two connects to one listener: the first is answered at once; the second finds the
    accept queue full, its SYN is dropped and answered only on the kernel's retransmission
    about a second later, once the first connection has been accepted."""
    server = listener(backlog=0)  # room for one connection waiting to be accepted
    port = server.getsockname()[1]
    fast_port, slow_port = free_port(), free_port()
    seen: dict[str, Any] = {"slow_port": slow_port}

    def run() -> None:
        fast = client("127.0.0.1", port, fast_port)
        seen["fast"] = (fast.pid, finish(fast))
        slow = client("127.0.0.1", port, slow_port)
        deadline = time.monotonic() + 10
        while not in_syn_sent(slow_port):  # on loopback: its SYN was dropped
            assert time.monotonic() < deadline and slow.poll() is None
            time.sleep(0.01)
        server.accept()[0].close()  # makes room for the retransmitted SYN
        seen["slow"] = (slow.pid, finish(slow))
        server.accept()[0].close()

    try:
        rows = trace(run, values)
    finally:
        server.close()
    assert seen["fast"][1]["errno"] == seen["slow"][1]["errno"] == 0
    return rows, seen


def test_latency_of_a_slow_handshake_and_min_keeps_only_slow_ones() -> None:
    rows, seen = fast_and_slow({"min": "500ms"})
    fast_pid, _ = seen["fast"]
    slow_pid, slow = seen["slow"]
    assert of_pid(rows, fast_pid) == []  # well under 500ms: hidden
    (event,) = of_pid(rows, slow_pid)
    assert 500_000_000 <= event["latency"] <= slow["took"]
    assert event["src"]["port"] == seen["slow_port"]


def test_without_min_both_connections_are_reported() -> None:
    rows, seen = fast_and_slow({})
    (fast,) = of_pid(rows, seen["fast"][0])
    (slow,) = of_pid(rows, seen["slow"][0])
    assert fast["latency"] < 500_000_000 <= slow["latency"]


def test_huge_min_hides_every_connection() -> None:
    server = listener()
    port = server.getsockname()[1]
    seen: dict[str, Any] = {}

    def run() -> None:
        proc = client("127.0.0.1", port, free_port())
        seen["pid"] = proc.pid
        seen["child"] = finish(proc)
        server.accept()[0].close()

    try:
        rows = trace(run, {"min": "1h"})
    finally:
        server.close()
    assert seen["child"]["errno"] == 0
    assert of_pid(rows, seen["pid"]) == []


def test_min_is_given_to_the_kernel_in_nanoseconds() -> None:
    ctx = SimpleNamespace(gadget_params=Params(TraceTcpconnect.params, {"min": "1.5ms"}))
    constants = TraceTcpconnect().constants(ctx)  # type: ignore[arg-type]
    assert constants == {"targ_min_latency_ns": 1_500_000}


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces() -> None:
    """With only the host's mount-ns in the filter map, a connect from a fresh one is
    dropped where the caller is recorded."""
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))
    server = listener()
    port = server.getsockname()[1]
    inside_port, outside_port = free_port(), free_port()

    def run() -> None:
        inside = client("127.0.0.1", port, inside_port, prefix=("unshare", "-m"))
        assert finish(inside)["errno"] == 0
        outside = client("127.0.0.1", port, outside_port)
        assert finish(outside)["errno"] == 0
        for _ in range(2):
            server.accept()[0].close()

    try:
        rows = trace(run, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
        server.close()
    assert [r for r in rows if r["src"]["port"] == inside_port] == []
    (event,) = [r for r in rows if r["src"]["port"] == outside_port]
    assert event["mountnsid"] == host_ns


# ---- the igrun command ------------------------------------------------------------------


def run_cli(cli: IgrunCli, *args: str) -> tuple[str, dict[str, Any], int]:
    """Start ``igrun trace tcpconnect --host`` with ``args``, make one connection from a
    child, stop igrun with SIGINT; its stdout, what the child saw and the child's pid."""
    server = listener()
    port = server.getsockname()[1]
    from_port = free_port()
    proc = cli.start("trace", "tcpconnect", "--host", *args)
    try:
        child = client("127.0.0.1", port, from_port)
        seen = finish(child)
        server.accept()[0].close()
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert cli.pin_dirs_of(proc.pid) == []
    seen.update(port=port, from_port=from_port)
    return out, seen, child.pid


def test_cli_json_prints_the_connection(igrun_cli: IgrunCli) -> None:
    out, seen, pid = run_cli(igrun_cli, "-o", "json")
    (event,) = [e for e in igrun_cli.events(out) if e["pid"] == pid]
    assert event["comm"] == COMM
    assert event["ipversion"] == 4
    # JSON leaves out the pod keys of an address of no pod, as ig does
    assert event["src"] == {"addr": "127.0.0.1", "version": 4, "port": seen["from_port"]}
    assert event["dst"] == {"addr": "127.0.0.1", "version": 4, "port": seen["port"]}
    assert 0 < event["latency"] <= seen["took"]


def test_cli_latency_column_only_with_latency(igrun_cli: IgrunCli) -> None:
    out, seen, pid = run_cli(igrun_cli)
    lines = out.splitlines()
    assert lines[0].split() == ["RUNTIME.CONTAINERNAME", "PID", "COMM", "IP", "SRC", "DST"]
    (row,) = [line.split() for line in lines[1:] if line.split()[:1] == [str(pid)]]
    assert row == [
        str(pid),
        COMM,
        "4",
        f"127.0.0.1:{seen['from_port']}",
        f"127.0.0.1:{seen['port']}",
    ]

    out, seen, pid = run_cli(igrun_cli, "--latency")
    lines = out.splitlines()
    assert lines[0].split() == [
        "RUNTIME.CONTAINERNAME", "PID", "COMM", "IP", "SRC", "DST", "LATENCY"
    ]  # fmt: skip
    (row,) = [line.split() for line in lines[1:] if line.split()[:1] == [str(pid)]]
    assert row[:5] == [
        str(pid),
        COMM,
        "4",
        f"127.0.0.1:{seen['from_port']}",
        f"127.0.0.1:{seen['port']}",
    ]
    assert 0 < int(row[5]) <= seen["took"]


def test_cli_help_lists_params_and_fields(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.run("trace", "tcpconnect", "--help")
    assert proc.returncode == 0, proc.stderr
    for word in ("--latency", "--min", "src.addr", "dst.port", "latency", "error", "comm", "ip"):
        assert word in proc.stdout


def test_cli_error_column_names_the_refused_connect(igrun_cli: IgrunCli) -> None:
    closed_port, from_port = free_port(), free_port()
    proc = igrun_cli.start("trace", "tcpconnect", "--host", "-o", "columns=+error")
    try:
        refused = client("127.0.0.1", closed_port, from_port)
        assert finish(refused)["errno"] == errno.ECONNREFUSED
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "RUNTIME.CONTAINERNAME", "PID", "COMM", "IP", "SRC", "DST", "ERROR"
    ]  # fmt: skip
    (row,) = [line.split() for line in lines[1:] if line.split()[:1] == [str(refused.pid)]]
    assert row == [
        str(refused.pid),
        COMM,
        "4",
        f"127.0.0.1:{from_port}",
        f"127.0.0.1:{closed_port}",
        "ECONNREFUSED",
    ]
