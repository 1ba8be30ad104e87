"""``igrun trace exec`` as users run it: a real process, real signals, real pipes.

Each run must print the exec it saw, end with exit code 0 on a timeout, Ctrl-C or SIGTERM, and
leave nothing behind: no pin folder under /sys/fs/bpf/gadget, no program loaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf

IGRUN = [sys.executable, "-m", "igrun.core.cli"]
PIN_ROOT = Path("/sys/fs/bpf/gadget")
PROGRAMS = {"ig_execve_e", "ig_execve_x", "ig_execveat_e", "ig_execveat_x"}


def loaded_programs() -> set[str]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, check=True)
    return {p.get("name", "") for p in json.loads(out.stdout)}


def pin_dirs_of(pid: int) -> list[str]:
    if not PIN_ROOT.is_dir():
        return []
    return [d.name for d in PIN_ROOT.iterdir() if d.name.startswith(f"{pid}-")]


def start(*args: str) -> subprocess.Popen[str]:
    """Start igrun with -v and wait until its programs are attached."""
    proc = subprocess.Popen(
        [*IGRUN, *args, "-v"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    for line in proc.stderr:
        if "gadget_started" in line:
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    out, err = proc.communicate()
    pytest.fail(f"igrun did not start: {out}\n{err}")


def assert_nothing_left(proc: subprocess.Popen[str]) -> None:
    assert pin_dirs_of(proc.pid) == []
    assert PROGRAMS & loaded_programs() == set()


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_cleanly_after_showing_the_exec(sig: signal.Signals) -> None:
    marker = f"igrun-{uuid.uuid4().hex[:8]}"
    proc = start("trace", "exec", "-o", "json")
    child = subprocess.run(["/bin/echo", marker], capture_output=True, check=True)
    assert child.returncode == 0
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    mine = [e for e in events(out) if marker in e["args"]]  # type: ignore[operator]
    assert len(mine) == 1
    assert mine[0]["args"] == ["/bin/echo", marker]
    assert mine[0]["comm"] == "echo"
    assert mine[0]["ppid"] == os.getpid()
    assert mine[0]["retval"] == 0
    assert "Traceback" not in err
    assert_nothing_left(proc)


def test_timeout_ends_cleanly() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [*IGRUN, "trace", "exec", "--timeout", "1s"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    header = proc.stdout.splitlines()[0].split()
    assert header == ["PID", "PPID", "COMM", "RET", "ARGS"]
    assert "Traceback" not in proc.stderr


def test_closed_pipe_exits_quietly() -> None:
    """`igrun trace exec -o json | head -n 1` ends igrun without a traceback."""
    proc = start("trace", "exec", "-o", "json")
    assert proc.stdout is not None
    for _ in range(3):
        subprocess.run(["/bin/true"], check=True)
    first = proc.stdout.readline()
    assert json.loads(first)["comm"]
    proc.stdout.close()  # what `head` does after its line
    for _ in range(50):  # keep execs coming until igrun writes and sees EPIPE
        subprocess.run(["/bin/true"], check=True)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.wait(timeout=10)
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert_nothing_left(proc)


def test_stale_pin_folder_of_a_dead_run_is_removed() -> None:
    """A run killed with SIGKILL leaves its folder; the next run removes it."""
    proc = start("trace", "exec")
    assert pin_dirs_of(proc.pid)
    proc.kill()
    proc.wait()
    assert pin_dirs_of(proc.pid)  # SIGKILL cannot be cleaned up after...
    subprocess.run([*IGRUN, "trace", "exec", "-t", "100ms"], check=True, capture_output=True)
    assert pin_dirs_of(proc.pid) == []  # ...but the next run does it
    assert PROGRAMS & loaded_programs() == set()


def test_max_rows_ends_the_run_by_itself() -> None:
    marker = f"igrun-{uuid.uuid4().hex[:8]}"
    proc = start("trace", "exec", "-o", "json", "-m", "1", "-F", f"args:~{marker}")
    subprocess.run(["/bin/echo", marker], check=True, capture_output=True)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    (event,) = events(out)
    assert event["args"] == ["/bin/echo", marker]
    assert_nothing_left(proc)
