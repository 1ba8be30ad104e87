"""``igrun trace exec`` as users run it: a real process, real signals, real pipes.

Each run must print the exec it saw, end with exit code 0 on a timeout, Ctrl-C or SIGTERM, and
leave nothing behind: no pin folder under /sys/fs/bpf/gadget, no program loaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from igrun.testing import assert_released

if TYPE_CHECKING:
    from conftest import IgrunCli

    from igrun.testing import CliRun

pytestmark = pytest.mark.bpf


def assert_nothing_left(cli: IgrunCli, proc: CliRun) -> None:
    """This run's programs, maps, links and pin folder are gone (other runs may go on)."""
    assert cli.pin_dirs_of(proc.pid) == []
    proc.assert_released()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_ends_cleanly_after_showing_the_exec(
    igrun_cli: IgrunCli, sig: signal.Signals
) -> None:
    marker = f"igrun-{uuid.uuid4().hex[:8]}"
    proc = igrun_cli.start("trace", "exec", "--host", "-o", "json")
    child = subprocess.run(["/bin/echo", marker], capture_output=True, check=True)
    assert child.returncode == 0
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    mine = [e for e in igrun_cli.events(out) if marker in e["args"]]  # type: ignore[operator]
    assert len(mine) == 1
    assert mine[0]["args"] == ["/bin/echo", marker]
    assert mine[0]["comm"] == "echo"
    assert mine[0]["ppid"] == os.getpid()
    assert "ret" not in mine[0]  # 0: left out, as ig leaves it out (omitempty)
    assert "Traceback" not in err
    assert_nothing_left(igrun_cli, proc)


def test_timeout_ends_cleanly(igrun_cli: IgrunCli) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [*igrun_cli.command, "trace", "exec", "--host", "--timeout", "1s"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    header = proc.stdout.splitlines()[0].split()
    assert header == ["RUNTIME.CONTAINERNAME", "PID", "PPID", "COMM", "RET", "ARGS"]
    assert "Traceback" not in proc.stderr


def test_closed_pipe_exits_quietly(igrun_cli: IgrunCli) -> None:
    """`igrun trace exec -o json | head -n 1` ends igrun without a traceback."""
    proc = igrun_cli.start("trace", "exec", "--host", "-o", "json", read_stdout=False)
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
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert_nothing_left(igrun_cli, proc)


def test_stale_pin_folder_of_a_dead_run_is_removed(igrun_cli: IgrunCli) -> None:
    """A run killed with SIGKILL leaves its folder; the next run removes it."""
    proc = igrun_cli.start("trace", "exec", "--host")
    assert igrun_cli.pin_dirs_of(proc.pid)
    proc.kill()
    proc.wait()
    assert igrun_cli.pin_dirs_of(proc.pid)  # SIGKILL cannot be cleaned up after...
    igrun_cli.run("trace", "exec", "-t", "100ms")
    assert igrun_cli.pin_dirs_of(proc.pid) == []  # ...but the next run does it
    assert_released(proc.ids)


def test_max_rows_ends_the_run_by_itself(igrun_cli: IgrunCli) -> None:
    marker = f"igrun-{uuid.uuid4().hex[:8]}"
    proc = igrun_cli.start(
        "trace", "exec", "--host", "-o", "json", "-m", "1", "-F", f"args:~{marker}"
    )
    subprocess.run(["/bin/echo", marker], check=True, capture_output=True)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    (event,) = igrun_cli.events(out)
    assert event["args"] == ["/bin/echo", marker]
    assert_nothing_left(igrun_cli, proc)


def test_buffer_size_flag_sizes_the_ring_buffer(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.start("trace", "exec", "--host", "--buffer-size", "4M")
    try:
        deadline = time.monotonic() + 10
        while not igrun_cli.pin_dirs_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (folder,) = igrun_cli.pin_dirs_of(proc.pid)
        events = folder / "trace_exec" / "events"
        while not events.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shown = subprocess.run(
            ["bpftool", "-j", "map", "show", "pinned", str(events)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(shown.stdout)["max_entries"] == 4 << 20
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0
