"""How a run starts and ends as SREs expect of ``execsnoop`` and ``ig``: the columns header
as soon as every program is attached (in a pipe and on a terminal), the ``ready`` line on
stderr as the signal scripts wait for (also with ``-o json``), and one summary line at the
end of a run that lost events."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from igrun.testing import READY_LINE, marker

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

COLUMNS = ("-o", "columns=pid,comm,args")
HEADER = ["PID", "COMM", "ARGS"]


def read_line(fd: int, pending: bytearray, timeout: float = 20.0) -> str:
    """The next line of ``fd`` (a pipe or a terminal's master side), failing the test when
    none comes within ``timeout``."""
    deadline = time.monotonic() + timeout
    while b"\n" not in pending:
        left = deadline - time.monotonic()
        assert left > 0, f"no line within {timeout}s, got {bytes(pending)!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"end of output, got {bytes(pending)!r}"
            pending += chunk
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line.decode().rstrip("\r")


def line_with(fd: int, pending: bytearray, text: str) -> str:
    while text not in (line := read_line(fd, pending)):
        pass
    return line


def test_header_comes_at_ready_in_a_pipe_before_any_event(igrun_cli: IgrunCli) -> None:
    proc = igrun_cli.start("trace", "exec", "--host", *COLUMNS, read_stdout=False)
    assert proc.stdout is not None
    # Nothing was triggered yet: the first line, there already at ready, is the header.
    assert select.select([proc.stdout], [], [], 0)[0], "nothing on stdout at ready"
    header = proc.stdout.readline()
    assert header.split() == HEADER
    tag = marker()
    child = subprocess.run(["/bin/echo", tag], capture_output=True, check=True)
    assert child.returncode == 0
    while tag not in (line := proc.stdout.readline()):
        assert line, "the exec was not shown"
    assert line.split()[1:] == ["echo", "/bin/echo", tag]
    proc.stdout.close()
    _, err = proc.stop()
    assert proc.returncode == 0, err
    proc.assert_released()


def test_header_comes_at_ready_when_the_container_is_not_there_yet(
    igrun_cli: IgrunCli,
) -> None:
    """``-c NAME`` of a container that does not run yet: the header says tracing has begun
    long before the run ends (it used to come only at exit)."""
    started = time.monotonic()
    name = marker()
    proc = igrun_cli.start("trace", "exec", "-c", name, "-t", "30s", *COLUMNS, read_stdout=False)
    assert proc.stdout is not None
    assert proc.stdout.readline().split() == HEADER
    assert proc.poll() is None
    assert time.monotonic() - started < 30
    proc.stdout.close()
    _, err = proc.stop()
    assert proc.returncode == 0, err


def test_header_comes_at_ready_on_a_terminal(igrun_cli: IgrunCli) -> None:
    """On a pseudo-terminal (stdout a TTY, columns scaled to its width) the header is on the
    screen once ``ready`` is logged, before the first event triggered after it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    proc = subprocess.Popen(
        [*igrun_cli.command, "trace", "exec", "--host", *COLUMNS],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    try:
        assert proc.stderr is not None
        err = bytearray()
        line_with(proc.stderr.fileno(), err, "ready")
        out = bytearray()
        # Read without waiting: what is on the terminal at ready, nothing triggered yet.
        assert select.select([master], [], [], 0)[0], "nothing on the terminal at ready"
        assert read_line(master, out).split() == HEADER
        tag = marker()
        subprocess.run(["/bin/echo", tag], capture_output=True, check=True)
        assert line_with(master, out, tag).split()[1:] == ["echo", "/bin/echo", tag]
    finally:
        proc.terminate()
        proc.wait(30)
        os.close(master)
    assert proc.returncode == 0


def test_json_ready_line_comes_before_the_first_event(igrun_cli: IgrunCli) -> None:
    """With ``-o json`` the ready signal is the ``ready`` line on stderr (``ig`` v0.25 prints
    nothing on ready): stdout holds no line before it, and an exec made the moment it is
    logged is traced."""
    proc = igrun_cli.start("trace", "exec", "--host", "-o", "json", read_stdout=False)
    assert proc.stdout is not None
    assert READY_LINE.search(proc.stderr_so_far)
    assert not select.select([proc.stdout], [], [], 0)[0], "stdout wrote before any event"
    tag = marker()
    subprocess.run(["/bin/echo", tag], capture_output=True, check=True)
    while tag not in (line := proc.stdout.readline()):
        assert line, "the exec made at ready was not shown"
    assert igrun_cli.events(line)[0]["args"] == ["/bin/echo", tag]
    proc.stdout.close()
    _, err = proc.stop()
    assert proc.returncode == 0, err


LOST_WARNING = re.compile(r"\[warning\] lost (\d+) events total=(\d+)")
LOST_SUMMARY = re.compile(r"^igrun: lost (\d+) events \(buffer full\): try --buffer-size 16K$")


def test_lost_events_are_summed_up_at_exit(igrun_cli: IgrunCli) -> None:
    """A 4K ring buffer and a burst of opens: the run ends with one line saying how many
    events were lost (the total of the warnings) and the size to try."""
    proc = igrun_cli.start("trace", "open", "--host", "-o", "json", "--buffer-size", "4K")
    for _ in range(20000):
        os.close(os.open("/dev/null", os.O_RDONLY))
    time.sleep(1.5)  # the per-second warning of the last losses
    _, err = proc.stop()
    assert proc.returncode == 0, err
    lines = err.splitlines()
    summary = LOST_SUMMARY.match(lines[-1])
    assert summary, err
    totals = [int(m.group(2)) for m in LOST_WARNING.finditer(err)]
    assert totals, err
    assert int(summary.group(1)) == totals[-1] > 0
    assert sum(bool(LOST_SUMMARY.match(line)) for line in lines) == 1
    proc.assert_released()


def test_no_summary_without_losses(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("trace", "mount", "--host", "-o", "json", "-t", "300ms")
    assert done.returncode == 0, done.stderr
    assert "lost" not in done.stderr


def test_each_run_of_a_config_sums_up_its_own_losses(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """Two runs of one config file: the one with a 4K buffer under a burst of opens ends with
    its own summary line, named; the other, which lost nothing, with none."""
    config = tmp_path / "two.toml"
    config.write_text(
        '[[run]]\ngadget = "trace open"\nruntime = {buffer-size = "4K"}\n'
        'operators = [{name = "containers", with = {host = true}}, '
        '{name = "output", with = {output = "json"}}]\n'
        '[[run]]\ngadget = "trace mount"\n'
        'operators = [{name = "containers", with = {host = true}}, '
        '{name = "output", with = {output = "json"}}]\n'
    )
    proc = igrun_cli.start("--config", str(config), runs=2)
    for _ in range(20000):
        os.close(os.open("/dev/null", os.O_RDONLY))
    time.sleep(1.5)
    _, err = proc.stop()
    assert proc.returncode == 0, err
    summaries = [line for line in err.splitlines() if line.startswith("igrun: ")]
    assert len(summaries) == 1, err
    assert re.fullmatch(
        r"igrun: trace open: lost \d+ events \(buffer full\): try --buffer-size 16K", summaries[0]
    )
