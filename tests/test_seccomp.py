"""The seccomp family with real podman containers: ``advise seccomp-profile`` records a
workload and its profile runs it (and refuses what it never called); ``audit seccomp``
reports what a profile logs or kills, with the process and the container."""

from __future__ import annotations

import json
import platform
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import IMAGE, crun  # noqa: F401 (a fixture)
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)
from test_ig_json import check_event

from igrun.core.events.syscalls import syscall_table
from igrun.plugins.advise_seccomp_profile import (
    ARCHITECTURES,
    seccomp_profile,
    syscall_names,
    write_profiles,
)
from igrun.plugins.audit_seccomp import ACTIONS_LOGGED, action_name
from igrun.plugins.audit_seccomp.auditlog import AUDIT_SECCOMP, messages, parse_seccomp

if TYPE_CHECKING:
    from conftest import IgrunCli

WORKLOAD = ["sh", "-c", "echo hi > /tmp/f; cat /tmp/f; ls /"]
RUN = ("run", "--pull=never", "--network", "none")


def _run(podman: Podman, *args: str) -> subprocess.CompletedProcess[str]:  # noqa: F811
    return subprocess.run(
        ["podman", *RUN, "--rm", *args], env=podman.env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


# ---- advise seccomp-profile: what the kernel records, as a profile --------------------------


def test_names_of_a_bitmap_are_sorted_and_unknown_numbers_named() -> None:
    bitmap = bytearray(128)
    for n in (0, 1, 59, 1000):
        bitmap[n // 8] |= 1 << (n % 8)
    names = syscall_names(bytes(bitmap), {0: "read", 1: "write", 59: "execve"})
    assert names == ["execve", "read", "syscall1000", "write"]


def test_profile_is_docker_s_shape() -> None:
    profile = seccomp_profile(["read", "write"], machine="x86_64")
    assert profile == {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}],
    }
    rows = [
        {"runtime": {"containerName": "a"}, "syscalls": ["read"]},
        {"runtime": {"containerName": "b"}, "syscalls": ["write"]},
    ]
    text = write_profiles(rows).decode()
    assert text.startswith("--- a ---\n{") and "\n--- b ---\n{" in text
    assert json.loads(write_profiles(rows[:1])) == seccomp_profile(["read"])


def record(cli: IgrunCli, podman: Podman, *flags: str, sig: int = signal.SIGINT) -> str:  # noqa: F811
    """Record :data:`WORKLOAD` in a new container, from its start, and return igrun's stdout."""
    name = f"igrun-advise-{uuid.uuid4().hex[:6]}"
    proc = cli.start("advise", "seccomp-profile", "-c", name, *flags)
    try:
        done = _run(podman, "--name", name, IMAGE, *WORKLOAD)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[0] == "hi"
    finally:
        out, err = proc.stop(sig)
    assert proc.returncode == 0, err
    proc.assert_released()
    return out


@pytest.mark.bpf
def test_the_profile_runs_the_workload_and_refuses_what_it_never_called(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    tmp_path: Path,
) -> None:
    out = record(igrun_cli, podman)
    profile = json.loads(out)  # one container: the profile alone, ready to save
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert profile["architectures"] == ARCHITECTURES[platform.machine()]
    (allowed,) = profile["syscalls"]
    assert allowed["action"] == "SCMP_ACT_ALLOW"
    names = allowed["names"]
    assert names == sorted(set(names))
    known = set(syscall_table().values())
    assert set(names) <= known
    # The workload's own calls, and what runc calls once the filter is in place.
    assert {"execve", "openat", "write", "getdents64", "exit_group"} <= set(names)
    assert {"setgroups", "capset", "getppid"} <= set(names)
    # runc's set-up before the filter is not the container's: left out.
    assert not {"mount", "pivot_root", "umount2", "seccomp", "mkdirat"} & set(names)

    path = tmp_path / "profile.json"
    path.write_text(out)
    plain = _run(podman, IMAGE, *WORKLOAD)
    under = _run(podman, "--security-opt", f"seccomp={path}", IMAGE, *WORKLOAD)
    assert under.returncode == 0, under.stderr
    assert under.stdout == plain.stdout
    # mkdir (mkdirat) works without the profile, and is refused by it with EPERM.
    assert _run(podman, IMAGE, "mkdir", "/tmp/d").returncode == 0
    refused = _run(podman, "--security-opt", f"seccomp={path}", IMAGE, "mkdir", "/tmp/d")
    assert refused.returncode == 1
    assert "Operation not permitted" in refused.stderr


@pytest.mark.bpf
def test_json_is_the_raw_list_per_container_at_sigterm(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    out = record(igrun_cli, podman, "-o", "json", sig=signal.SIGTERM)
    (row,) = igrun_cli.events(out)
    assert row["runtime"]["containerName"].startswith("igrun-advise-")
    assert row["runtime"]["runtimeName"] == "podman"
    assert row["syscalls"] == sorted(set(row["syscalls"]))
    assert {"execve", "getdents64", "write"} <= set(row["syscalls"])
    assert row["mountnsid"] > 0


@pytest.mark.bpf
def test_a_container_still_running_at_the_end_is_read_then(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    name = f"igrun-advise-{uuid.uuid4().hex[:6]}"
    proc = igrun_cli.start("advise", "seccomp-profile", "-c", name, "-o", "json")
    try:
        running = podman.run(name)  # sh looping on sleep 1
        time.sleep(1.5)  # a sleep or two: sh forks, execs and waits
    finally:
        out, err = proc.stop()
    assert proc.returncode == 0, err
    (row,) = igrun_cli.events(out)
    assert row["runtime"]["containerName"] == name
    assert row["mountnsid"] == running.mntns
    assert {"execve", "clone", "wait4"} <= set(row["syscalls"])
    assert {"nanosleep", "clock_nanosleep"} & set(row["syscalls"])  # busybox sleep's libc


# ---- audit seccomp ---------------------------------------------------------------------------


def test_a_seccomp_record_is_parsed() -> None:
    text = (
        b"audit(1796623649.270:1): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=26156 "
        b'comm="sh" exe="/bin/busybox" sig=0 arch=c000003e syscall=110 compat=0 '
        b"ip=0x462137 code=0x7ffc0000"
    )
    record = parse_seccomp(text)
    assert record is not None
    assert (record.pid, record.comm, record.syscall, record.code) == (26156, "sh", 110, 0x7FFC0000)
    assert record.wall_ns == 1796623649_270_000_000
    hexed = parse_seccomp(text.replace(b'comm="sh"', b"comm=6120622063"))  # "a b c"
    assert hexed is not None and hexed.comm == "a b c"
    assert parse_seccomp(b"audit(1.2:3): pid=x") is None
    header = (16 + len(text)).to_bytes(4, "little") + AUDIT_SECCOMP.to_bytes(2, "little")
    assert messages(header + bytes(10) + text) == [(AUDIT_SECCOMP, text)]
    assert [action_name(c) for c in (0x7FFC0000, 0x80000000, 0, 0x00050001, 0x00030000)] == [
        "log", "kill_process", "kill_thread", "errno", "trap",
    ]  # fmt: skip


@pytest.fixture
def actions_logged() -> Iterator[str]:
    """The sysctl as it was, put back after the test whatever happens."""
    before = ACTIONS_LOGGED.read_text()
    yield before
    ACTIONS_LOGGED.write_text(before)


def profile_acting_on_uname(tmp_path: Path, action: str, **more: Any) -> Path:
    """A profile that allows everything but ``uname``, on which it takes ``action``."""
    path = tmp_path / f"{action}.json"
    path.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["uname"], "action": action}],
                **more,
            }
        )
    )
    return path


def audited(
    cli: IgrunCli,
    podman: Podman,  # noqa: F811
    profile: Path,
    expected_exit: int,
    during: Any = None,
    runtime: str = "runc",
) -> tuple[list[dict[str, Any]], str, int, int]:
    """Run a container that calls uname once, under ``profile``, with ``audit seccomp -c``:
    its events, the container's name, its process's pid and mount namespace."""
    name = f"igrun-audit-{uuid.uuid4().hex[:6]}"
    podman.names.append(name)
    proc = cli.start("audit", "seccomp", "-c", name, "-o", "json")
    try:
        if during is not None:
            during()
        podman(*RUN, "--runtime", runtime, "-d", "--name", name, "--security-opt",
               f"seccomp={profile}", IMAGE, "sh", "-c", "sleep 1; exec uname")  # fmt: skip
        pid = int(podman("inspect", "-f", "{{.State.Pid}}", name))
        mntns = Path(f"/proc/{pid}/ns/mnt").stat().st_ino
        assert int(podman("wait", name)) == expected_exit
        time.sleep(1.0)  # the audit record is read within a poll (0.1 s) of its writing
    finally:
        out, err = proc.stop(signal.SIGTERM)
    assert proc.returncode == 0, err
    proc.assert_released()
    events = cli.events(out)
    for event in events:
        check_event("audit seccomp", event)
    return events, name, pid, mntns


@pytest.mark.bpf
def test_a_logged_syscall_names_the_process_and_container(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    tmp_path: Path,
    actions_logged: str,
) -> None:
    # Without "log" in the sysctl the kernel would not log it: the gadget adds it, then puts
    # the sysctl back as it was.
    without_log = " ".join(a for a in actions_logged.split() if a != "log")
    ACTIONS_LOGGED.write_text(without_log)

    def check_added() -> None:
        assert "log" in ACTIONS_LOGGED.read_text().split()

    profile = profile_acting_on_uname(tmp_path, "SCMP_ACT_LOG")
    events, name, pid, mntns = audited(igrun_cli, podman, profile, 0, check_added)
    assert ACTIONS_LOGGED.read_text().split() == without_log.split()
    (event,) = events
    assert (event["pid"], event["comm"], event["syscall"], event["code"]) == (
        pid, "uname", "uname", "log",
    )  # fmt: skip
    assert event["mountnsid"] == mntns
    assert event["runtime"]["containerName"] == name
    assert "tid" not in event  # a logged call sends no signal: the thread is not known


@pytest.mark.bpf
def test_an_errno_of_a_filter_with_the_log_flag_is_reported(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    tmp_path: Path,
    actions_logged: str,
    crun: None,  # noqa: F811
) -> None:
    """A filter loaded with SECCOMP_FILTER_FLAG_LOG logs its errno actions too (while
    "errno" is in the sysctl, which the gadget sees to): the call fails, the process goes
    on (busybox's uname even exits 0), and the event names it. runc 1.1 refuses the profile's flag
    ("seccomp flags are not yet supported"); crun applies it."""
    ACTIONS_LOGGED.write_text(" ".join(a for a in actions_logged.split() if a != "errno"))
    profile = profile_acting_on_uname(tmp_path, "SCMP_ACT_ERRNO", flags=["SECCOMP_FILTER_FLAG_LOG"])
    events, name, pid, mntns = audited(igrun_cli, podman, profile, 0, runtime="crun")
    (event,) = events
    assert (event["pid"], event["comm"], event["syscall"], event["code"]) == (
        pid, "uname", "uname", "errno",
    )  # fmt: skip
    assert event["mountnsid"] == mntns
    assert event["runtime"]["containerName"] == name


@pytest.mark.bpf
@pytest.mark.parametrize(
    ("action", "code"), [("SCMP_ACT_KILL_PROCESS", "kill_process"), ("SCMP_ACT_TRAP", "trap")]
)
def test_a_killed_or_trapped_process_is_found_after_it_is_gone(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    tmp_path: Path,
    action: str,
    code: str,
) -> None:
    """A kill is in the audit stream and its SIGSYS names the thread (one event, not two); a
    trap without the log flag is only seen by its SIGSYS. Both end the process (busybox does
    not handle SIGSYS)."""
    profile = profile_acting_on_uname(tmp_path, action)
    events, name, pid, mntns = audited(igrun_cli, podman, profile, 128 + signal.SIGSYS)
    (event,) = events
    assert (event["pid"], event["tid"], event["comm"], event["syscall"], event["code"]) == (
        pid, pid, "uname", "uname", code,
    )  # fmt: skip
    assert event["mountnsid"] == mntns
    assert event["runtime"]["containerName"] == name
