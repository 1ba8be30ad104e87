"""trace bind in the real kernel: the test binds sockets, and each event says exactly how."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest

from igrun.core.bpf.objects import Map, MapType
from igrun.core.errors import ParamError
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_bind import TraceBind, port_bitmap

if TYPE_CHECKING:
    from conftest import IgrunCli, NetnsPair

pytestmark = pytest.mark.bpf

COMM = "igbind-test"
IP_FREEBIND = 15
IP_TRANSPARENT = 19
IP_BIND_ADDRESS_NO_PORT = 24
V4 = (socket.AF_INET, "127.0.0.1")
V6 = (socket.AF_INET6, "::1")


def trace(
    action: Callable[[], None],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
) -> list[dict[str, Any]]:
    return gadgetlab.trace(TraceBind, action, values, resources)


def trace_here(
    body: Callable[[], Any],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
) -> tuple[list[dict[str, Any]], Any]:
    """Run ``body`` on a thread of this process named :data:`COMM`; return the events of that
    thread (pid and tid, so nothing else on the busy host matches) and what ``body`` returned."""
    seen: dict[str, Any] = {}

    def named() -> None:
        tid = threading.get_native_id()
        with open(f"/proc/self/task/{tid}/comm", "w") as comm:
            comm.write(COMM)
        seen["tid"] = tid
        try:
            seen["result"] = body()
        except BaseException as exc:
            seen["error"] = exc

    def action() -> None:  # a thread of its own: the caller's keeps its name
        thread = threading.Thread(target=named)
        thread.start()
        thread.join()
        if "error" in seen:
            raise seen["error"]

    rows = trace(action, values, resources)
    mine = [r for r in rows if r["pid"] == os.getpid() and r["tid"] == seen["tid"]]
    for row in mine:
        assert row["comm"] == COMM
    return mine, seen["result"]


def free_port(family: int, kind: int) -> int:
    """A port nothing on loopback uses right now, for binds to a port chosen in advance."""
    with socket.socket(family, kind) as probe:
        probe.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        port: int = probe.getsockname()[1]
        return port


def bound_socket(
    family: int, addr: str, kind: int, port: int, options: tuple[tuple[int, int], ...] = ()
) -> socket.socket:
    """A socket of ``family``/``kind`` with ``options`` set, bound to ``addr``:``port``."""
    sock = socket.socket(family, kind)
    for level, option in options:
        sock.setsockopt(level, option, 1)
    sock.bind((addr, port))
    return sock


REUSEADDR = ((socket.SOL_SOCKET, socket.SO_REUSEADDR),)


@pytest.mark.parametrize(
    ("family", "addr", "kind", "proto"),
    [
        (*V4, socket.SOCK_STREAM, "TCP"),
        (*V4, socket.SOCK_DGRAM, "UDP"),
        (*V6, socket.SOCK_STREAM, "TCP"),
        (*V6, socket.SOCK_DGRAM, "UDP"),
    ],
)
def test_bind_has_exact_fields(family: int, addr: str, kind: int, proto: str) -> None:
    port = free_port(family, kind)

    def body() -> None:
        bound_socket(family, addr, kind, port, REUSEADDR).close()

    before = time.time_ns()
    (event,), _ = trace_here(body)
    after = time.time_ns()
    assert event["pid"] == os.getpid()
    assert event["comm"] == COMM
    assert event["proto"] == proto
    assert event["addr"] == addr
    assert event["port"] == port
    assert event["opts"] == ".R..."
    assert event["if"] == ""
    assert event["uid"] == os.getuid()
    assert event["gid"] == os.getgid()
    assert event["error"] == ""
    assert event["mountnsid"] == os.stat("/proc/self/ns/mnt").st_ino
    assert before - 1_000_000_000 <= event["timestamp"] <= after


def test_json_keys_are_igs() -> None:
    (event,), _ = trace_here(lambda: bound_socket(*V4, socket.SOCK_STREAM, 0).close())
    assert set(event) == {
        "timestamp", "mountnsid", "pid", "tid", "comm", "proto", "addr", "port", "opts", "if",
        "uid", "gid", "error",
    }  # fmt: skip
    assert [f.name for f in TraceBind.schema.default_columns()] == [
        "pid", "comm", "proto", "addr", "port", "opts", "if",
    ]  # fmt: skip


def test_port_zero_reports_the_port_the_kernel_picked() -> None:
    def body() -> list[int]:
        ports = []
        for family, addr in (V4, V6):
            with bound_socket(family, addr, socket.SOCK_STREAM, 0) as sock:
                ports.append(sock.getsockname()[1])
        return ports

    events, ports = trace_here(body)
    assert [(e["addr"], e["port"]) for e in events] == [("127.0.0.1", ports[0]), ("::1", ports[1])]
    assert all(p != 0 for p in ports)


def test_bind_address_no_port_leaves_port_zero() -> None:
    def body() -> None:
        opts = ((socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT),)
        bound_socket(*V4, socket.SOCK_STREAM, 0, opts).close()

    (event,), _ = trace_here(body)
    assert (event["addr"], event["port"], event["opts"]) == ("127.0.0.1", 0, "..N..")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (((socket.IPPROTO_IP, IP_FREEBIND),), "....F"),
        (((socket.IPPROTO_IP, IP_TRANSPARENT),), "...T."),
        (((socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT),), "..N.."),
        (((socket.SOL_SOCKET, socket.SO_REUSEADDR),), ".R..."),
        (((socket.SOL_SOCKET, socket.SO_REUSEPORT),), "r...."),
        ((), "....."),
        (
            (
                (socket.SOL_SOCKET, socket.SO_REUSEPORT),
                (socket.SOL_SOCKET, socket.SO_REUSEADDR),
                (socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT),
                (socket.IPPROTO_IP, IP_TRANSPARENT),
                (socket.IPPROTO_IP, IP_FREEBIND),
            ),
            "rRNTF",
        ),
    ],
)
def test_socket_options_show_in_opts(options: tuple[tuple[int, int], ...], expected: str) -> None:
    port = free_port(socket.AF_INET, socket.SOCK_STREAM)
    (event,), _ = trace_here(lambda: bound_socket(*V4, socket.SOCK_STREAM, port, options).close())
    assert event["opts"] == expected
    assert event["port"] == port


@pytest.mark.parametrize(
    ("family", "addr", "kind", "proto"),
    [(*V4, socket.SOCK_STREAM, "TCP"), (*V6, socket.SOCK_DGRAM, "UDP")],
)
def test_failed_bind_reports_eaddrinuse(family: int, addr: str, kind: int, proto: str) -> None:
    port = free_port(family, kind)

    def body() -> None:
        with bound_socket(family, addr, kind, port), socket.socket(family, kind) as second:
            with pytest.raises(OSError) as raised:
                second.bind((addr, port))
            assert raised.value.errno == errno.EADDRINUSE

    events, _ = trace_here(body, {"ignore-errors": "false"})
    assert [(e["proto"], e["addr"], e["port"], e["opts"], e["error"]) for e in events] == [
        (proto, addr, port, ".....", ""),
        (proto, addr, port, ".....", "EADDRINUSE"),
    ]


def test_ignore_errors_is_on_by_default() -> None:
    port = free_port(socket.AF_INET, socket.SOCK_STREAM)

    def body() -> None:
        with (
            bound_socket(*V4, socket.SOCK_STREAM, port),
            socket.socket() as second,
            pytest.raises(OSError),
        ):
            second.bind(("127.0.0.1", port))

    (event,), _ = trace_here(body)
    assert (event["port"], event["error"]) == (port, "")
    (event,), _ = trace_here(body, {"ignore-errors": "true"})
    assert (event["port"], event["error"]) == (port, "")


def test_ports_filter_keeps_only_listed_ports() -> None:
    socks = [socket.socket() for _ in range(3)]
    try:
        ports = []
        for sock in socks:  # reserve three ports, then bind them again while traced
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    finally:
        for sock in socks:
            sock.close()

    def body() -> None:
        for port in ports:
            bound_socket(*V4, socket.SOCK_STREAM, port).close()

    values = {"ports": f"{ports[0]},{ports[2]}"}
    events, _ = trace_here(body, values)
    assert [e["port"] for e in events] == [ports[0], ports[2]]


@pytest.mark.parametrize("ports", ["0", "65536", "80,70000"])
def test_ports_out_of_range_are_refused(ports: str) -> None:
    with pytest.raises(ParamError, match="--ports"):
        trace(lambda: None, {"ports": ports})


def test_port_bitmap_sets_one_bit_per_port() -> None:
    bitmap = port_bitmap([1, 80, 65535])
    assert len(bitmap) == 8192
    assert bitmap[0] == 0b10 and bitmap[10] == 0b1 and bitmap[8191] == 0b10000000
    assert sum(bin(b).count("1") for b in bitmap) == 3


CHILD = """
import os, socket, sys
with open("/proc/self/comm", "w") as comm:
    comm.write(sys.argv[1])
sys.stdin.readline()
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
"""


def test_pid_filter_keeps_only_that_process() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, "igbind-child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    stdin, stdout = child.stdin, child.stdout
    assert stdin is not None and stdout is not None
    result: dict[str, int] = {}

    def action() -> None:
        bound_socket(*V4, socket.SOCK_DGRAM, 0).close()  # this process: filtered out
        stdin.write("\n")  # the child binds now, while traced
        stdin.flush()
        result["child"] = int(stdout.readline())

    try:
        rows = trace(action, {"pid": str(child.pid)})
    finally:
        child.kill()
        child.wait()
    assert {r["pid"] for r in rows} == {child.pid}
    (event,) = rows
    assert (event["comm"], event["proto"], event["addr"]) == ("igbind-child", "UDP", "127.0.0.1")
    assert event["port"] == result["child"]


def test_bindtodevice_names_the_interface() -> None:
    def body() -> None:
        opts = ((socket.SOL_SOCKET, socket.SO_REUSEADDR),)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
            sock.bind(("127.0.0.1", 0))
        bound_socket(*V6, socket.SOCK_STREAM, 0, opts).close()

    bound, unbound = trace_here(body)[0]
    assert (bound["if"], bound["opts"], bound["proto"]) == ("lo", ".....", "UDP")
    assert (unbound["if"], unbound["opts"], unbound["proto"]) == ("", ".R...", "TCP")


NETNS_CHILD = """
import os, socket, sys
name = [n for _, n in socket.if_nameindex() if n != "lo"][0]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, name.encode())
sock.bind((sys.argv[1], 0))
print(os.getpid(), name, sock.getsockname()[1], flush=True)
"""


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2")
def test_interface_is_named_in_the_sockets_network_namespace(netns_pair: NetnsPair) -> None:
    """The veth exists only in the child's namespace: its name must come from there."""
    out: dict[str, str] = {}

    def action() -> None:
        cmd = netns_pair.run(netns_pair.a, sys.executable, "-c", NETNS_CHILD, netns_pair.addr_a)
        out["line"] = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    rows = trace(action)
    pid, name, port = out["line"].split()
    (event,) = [r for r in rows if r["pid"] == int(pid)]
    assert name not in {n for _, n in socket.if_nameindex()}
    assert (event["if"], event["addr"], event["port"]) == (name, netns_pair.addr_a, int(port))


def test_unix_sockets_are_not_traced(tmp_path: Path) -> None:
    def body() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(tmp_path / "sock"))
        bound_socket(*V4, socket.SOCK_STREAM, 0).close()

    events, _ = trace_here(body)
    assert [e["addr"] for e in events] == ["127.0.0.1"]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare")
def test_mount_namespace_filter_excludes_other_namespaces() -> None:
    """With only the host's mount-ns in the filter map, a bind in a fresh one is dropped."""
    host_ns = os.stat("/proc/self/ns/mnt").st_ino
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))
    code = "import os, socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(os.getpid())"
    seen: dict[str, int] = {}

    def action() -> None:
        cmd = ["unshare", "-m", sys.executable, "-c", code]
        seen["child"] = int(subprocess.run(cmd, capture_output=True, check=True).stdout)
        seen["tid"] = threading.get_native_id()
        bound_socket(*V4, socket.SOCK_STREAM, 0).close()

    try:
        rows = trace(action, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
    assert [r for r in rows if r["pid"] == seen["child"]] == []
    (event,) = [r for r in rows if r["tid"] == seen["tid"]]
    assert event["mountnsid"] == host_ns


def test_cli_help_lists_flags_and_fields(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.run("trace", "bind", "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--pid PID", "-P PORTS, --ports", "-i [BOOL], --ignore-errors"):
        assert flag in proc.stdout
    for name in ("pid", "comm", "proto", "addr", "port", "opts", "if", "uid", "gid"):
        assert f" {name} " in proc.stdout


def test_cli_prints_the_bind_as_json(igrun_cli: IgrunCli) -> None:
    port = free_port(socket.AF_INET6, socket.SOCK_DGRAM)
    proc = igrun_cli.start("trace", "bind", "--host", "-o", "json", "-t", "3s")
    bound_socket(*V6, socket.SOCK_DGRAM, port, REUSEADDR).close()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    mine = [e for e in igrun_cli.events(out) if e["pid"] == os.getpid() and e["port"] == port]
    assert len(mine) == 1, out
    event = mine[0]
    comm = Path("/proc/self/comm").read_text().strip()
    assert {k: event[k] for k in ("comm", "proto", "addr", "port", "opts", "uid")} == {
        "comm": comm,
        "proto": "UDP",
        "addr": "::1",
        "port": port,
        "opts": ".R...",
        "uid": os.getuid(),
    }
    assert "if" not in event  # no interface: left out, as ig leaves it out (omitempty)
    assert igrun_cli.pin_dirs_of(proc.pid) == []


def test_cli_default_columns_are_igs(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.run("trace", "bind", "--host", "-t", "1s")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert header == ["RUNTIME.CONTAINERNAME", "PID", "COMM", "PROTO", "ADDR", "PORT", "OPTS", "IF"]
    assert "Traceback" not in proc.stderr
