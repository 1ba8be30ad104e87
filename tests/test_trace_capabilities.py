"""trace capabilities in the real kernel: a child makes a check, and the event says exactly which.

Each test starts its own child processes and keeps only their events (by pid), since the host
makes capability checks all the time.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gadgetlab
import pytest
from gadgetlab import marker

from igrun.core.bpf.objects import Map, MapType
from igrun.core.tracer import MntnsFilter
from igrun.plugins.trace_capabilities import CAP_NAMES, TraceCapabilities

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

PYTHON = sys.executable
COMM = Path(PYTHON).name[:15]  # the comm of an exec'd program is its file name
NOBODY = 65534
CAP_SETUID, CAP_NET_BIND_SERVICE, CAP_SYS_PTRACE, CAP_SYS_ADMIN = 7, 10, 19, 21
CLONE_NEWNS, CLONE_NEWUTS = 0x00020000, 0x04000000

# A child that binds a privileged port (CAP_NET_BIND_SERVICE) `times` times; exit 13 on EACCES.
BIND = """
import socket, sys
for _ in range({times}):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 80))
        except PermissionError:
            sys.exit(13)
        except OSError:
            pass  # in use: the capability was checked before
"""
# Python code that calls unshare(2) with `flags` first.
UNSHARE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare({flags}) != 0:
    raise OSError(ctypes.get_errno(), "unshare")
"""


def trace(
    action: Callable[[], object],
    values: dict[str, str] | None = None,
    resources: Sequence[object] = (),
) -> list[dict[str, Any]]:
    """Events seen while ``action`` ran (its result is ignored)."""

    def run() -> None:
        action()

    return gadgetlab.trace(TraceCapabilities, run, values, resources)


def of(rows: list[dict[str, Any]], pid: int, cap: int | None = None) -> list[dict[str, Any]]:
    """The events of one process (and one capability), in the order they happened."""
    mine = [r for r in rows if r["pid"] == pid and (cap is None or r["cap"] == cap)]
    return sorted(mine, key=lambda r: r["timestamp"])


def spawn(code: str, *prefix: str, pids: list[int], expect: int = 0) -> str:
    """Run ``python -c code`` (behind ``prefix``, e.g. setpriv); record its pid; its stdout."""
    proc = subprocess.Popen([*prefix, PYTHON, "-c", code], stdout=subprocess.PIPE, text=True)
    pids.append(proc.pid)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == expect
    return out


def as_nobody() -> tuple[str, ...]:
    return ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


def own_caps() -> int:
    """CapEff of this (root) process, which its children inherit."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError("no CapEff in /proc/self/status")


def wait_for_exec(pid: int, comm: str) -> None:
    path = Path(f"/proc/{pid}/comm")
    deadline = time.monotonic() + 10
    while path.read_text().strip() != comm:
        assert time.monotonic() < deadline, f"{pid} did not exec {comm}"
        time.sleep(0.01)


def ns_ino(kind: str) -> int:
    return os.stat(f"/proc/self/ns/{kind}").st_ino


@pytest.fixture
def privileged_port() -> None:
    """BIND checks CAP_NET_BIND_SERVICE only while port 80 is below the unprivileged ones."""
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    if start <= 80:
        pytest.skip("port 80 needs no capability here (ip_unprivileged_port_start)")


needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")


@pytest.mark.usefixtures("privileged_port")
def test_bind_privileged_port_as_root_is_allowed() -> None:
    pids: list[int] = []
    before = time.time_ns()
    rows = trace(lambda: spawn(BIND.format(times=1), pids=pids))
    after = time.time_ns()
    (event,) = of(rows, pids[0], CAP_NET_BIND_SERVICE)
    caps = own_caps()
    assert event["pid"] == pids[0]
    assert event["tid"] == pids[0]
    assert event["comm"] == COMM
    assert event["syscall"] == "bind"
    assert event["uid"] == 0
    assert event["gid"] == 0
    assert event["cap"] == CAP_NET_BIND_SERVICE
    assert event["capName"] == "NET_BIND_SERVICE"
    assert event["audit"] == 1
    assert event["verdict"] == "Allow"
    assert event["insetid"] is False
    assert event["targetuserns"] == ns_ino("user")
    assert event["currentuserns"] == ns_ino("user")
    assert event["mountnsid"] == ns_ino("mnt")
    assert event["caps"] == caps
    assert event["capsNames"] == [
        name.lower() for i, name in enumerate(CAP_NAMES) if caps & (1 << i)
    ]
    assert before - 1_000_000_000 <= event["timestamp"] <= after


@pytest.mark.usefixtures("privileged_port")
@needs_setpriv
def test_bind_privileged_port_as_nobody_is_denied() -> None:
    pids: list[int] = []
    rows = trace(lambda: spawn(BIND.format(times=1), *as_nobody(), pids=pids, expect=13))
    # setpriv execs python in the same process: one pid, the check made by python.
    (event,) = of(rows, pids[0], CAP_NET_BIND_SERVICE)
    assert event["comm"] == COMM
    assert event["syscall"] == "bind"
    assert event["uid"] == NOBODY
    assert event["gid"] == NOBODY
    assert event["capName"] == "NET_BIND_SERVICE"
    assert event["verdict"] == "Deny"
    assert event["audit"] == 1
    assert event["caps"] == 0
    assert event["capsNames"] == []


def test_sethostname_in_new_uts_namespace_needs_sys_admin() -> None:
    name = marker()
    code = UNSHARE.format(flags=CLONE_NEWUTS) + f"import socket; socket.sethostname({name!r})"
    pids: list[int] = []
    host = os.uname().nodename
    rows = trace(lambda: spawn(code, pids=pids))
    assert os.uname().nodename == host
    events = of(rows, pids[0], CAP_SYS_ADMIN)
    assert [(e["syscall"], e["capName"], e["verdict"], e["audit"]) for e in events] == [
        ("unshare", "SYS_ADMIN", "Allow", 1),
        ("sethostname", "SYS_ADMIN", "Allow", 1),
    ]


def test_setuid_check_is_marked_insetid() -> None:
    pids: list[int] = []
    rows = trace(lambda: spawn(f"import os; os.setuid({NOBODY})", pids=pids))
    (event,) = of(rows, pids[0], CAP_SETUID)
    assert event["syscall"] == "setuid"
    assert event["capName"] == "SETUID"
    assert event["verdict"] == "Allow"
    assert event["insetid"] is True
    assert event["audit"] == 1
    assert event["uid"] == 0


@needs_setpriv
@pytest.mark.parametrize("audit_only", ["true", "false"])
def test_audit_only_hides_no_audit_checks(audit_only: str) -> None:
    """Reading another user's /proc/PID/stat checks CAP_SYS_PTRACE without audit; opening its
    environ checks it with audit."""
    target = subprocess.Popen([*as_nobody(), "sleep", "30"])
    try:
        wait_for_exec(target.pid, "sleep")  # setpriv has changed user by then
        code = (
            f"open('/proc/{target.pid}/stat').read()\n"
            f"open('/proc/{target.pid}/environ', 'rb').close()\n"
        )
        pids: list[int] = []
        rows = trace(lambda: spawn(code, pids=pids), {"audit-only": audit_only})
    finally:
        target.kill()
        target.wait()
    seen = [(e["syscall"], e["audit"], e["verdict"]) for e in of(rows, pids[0], CAP_SYS_PTRACE)]
    if audit_only == "true":
        assert seen == [("openat", 1, "Allow")]
    else:
        assert seen == [("read", 0, "Allow"), ("openat", 1, "Allow")]


@pytest.mark.usefixtures("privileged_port")
@pytest.mark.parametrize("unique", ["true", "false"])
def test_unique_shows_a_capability_once_per_mount_namespace(unique: str) -> None:
    """The child checks CAP_NET_BIND_SERVICE three times in a mount namespace of its own."""
    code = (
        UNSHARE.format(flags=CLONE_NEWNS)
        + "print(os.stat('/proc/self/ns/mnt').st_ino, flush=True)\n"
        + BIND.format(times=3)
    )
    pids: list[int] = []
    out: list[str] = []
    rows = trace(lambda: out.append(spawn(code, pids=pids)), {"unique": unique})
    events = of(rows, pids[0], CAP_NET_BIND_SERVICE)
    assert len(events) == (1 if unique == "true" else 3)
    assert {e["mountnsid"] for e in events} == {int(out[0])}
    assert {e["syscall"] for e in events} == {"bind"}


@pytest.mark.usefixtures("privileged_port")
def test_mount_namespace_filter_excludes_other_namespaces() -> None:
    """With only the host's mount-ns in the filter map, a check in a fresh one is dropped."""
    host_ns = ns_ino("mnt")
    filter_map = Map.create(MapType.HASH, "mntns_filter", 8, 4, 1024)
    filter_map.update(struct.pack("<Q", host_ns), struct.pack("<I", 1))
    inside = UNSHARE.format(flags=CLONE_NEWNS) + BIND.format(times=1)
    pids: list[int] = []

    def run() -> None:
        spawn(inside, pids=pids)
        spawn(BIND.format(times=1), pids=pids)

    try:
        rows = trace(run, resources=[MntnsFilter(filter_map)])
    finally:
        filter_map.close()
    # unshare(2) is checked in the host namespace (kept), bind in the fresh one (dropped).
    assert [(e["syscall"], e["cap"]) for e in of(rows, pids[0])] == [("unshare", CAP_SYS_ADMIN)]
    (event,) = of(rows, pids[1], CAP_NET_BIND_SERVICE)
    assert event["mountnsid"] == host_ns


@pytest.mark.usefixtures("privileged_port")
def test_cli_prints_the_check_as_json(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.start("trace", "capabilities", "--host", "-o", "json")
    pid = -1
    try:
        probe = subprocess.Popen([PYTHON, "-c", BIND.format(times=1)])
        pid = probe.pid
        probe.wait(timeout=30)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    events = of(igrun_cli.events(out), pid, CAP_NET_BIND_SERVICE)
    assert [(e["comm"], e["syscall"], e["capName"], e["verdict"], e["audit"]) for e in events] == [
        (COMM, "bind", "NET_BIND_SERVICE", "Allow", 1)
    ]
    assert igrun_cli.pin_dirs_of(proc.pid) == []
    proc.assert_released()  # this run's programs, maps and links: other runs may go on


def test_cli_columns_and_help(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("trace", "capabilities", "--host", "--timeout", "1s")
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header == [
        "RUNTIME.CONTAINERNAME",
        "PID",
        "COMM",
        "SYSCALL",
        "CAP",
        "CAPNAME",
        "AUDIT",
        "VERDICT",
    ]
    helped = igrun_cli.run("trace", "capabilities", "--help")
    assert helped.returncode == 0
    for flag in ("--audit-only", "--unique"):
        assert flag in helped.stdout
    for field in ("capName", "verdict", "insetid", "targetuserns", "currentuserns", "capsnames"):
        assert f" {field} " in helped.stdout
