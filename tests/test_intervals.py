"""``--interval`` from the command line: each window one JSON array that ``jq`` reads, or one
timestamped columns block; ``--sort`` on a stream refused with one line."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime

import pytest

from igrun.testing import IgrunCli, marker

pytestmark = pytest.mark.bpf

WINDOW = re.compile(r"--- (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z ---")


def execs(tag: str, count: int, pause: float) -> None:
    for i in range(count):
        subprocess.run(["/bin/echo", tag, str(i)], check=True, capture_output=True)
        time.sleep(pause)


def test_json_windows_are_arrays_jq_reads(igrun_cli: IgrunCli) -> None:
    tag = marker()
    proc = igrun_cli.start(
        "trace", "exec", "--host", "-F", f"ppid:{os.getpid()}", "--interval", "400ms",
        "--sort", "-pid", "-o", "json",
    )  # fmt: skip
    execs(tag, 6, 0.15)
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) >= 2
    windows = [json.loads(line) for line in lines]
    assert all(isinstance(w, list) for w in windows)
    mine = [e for w in windows for e in w if e["args"][:2] == ["/bin/echo", tag]]
    assert sorted(int(e["args"][2]) for e in mine) == list(range(6))
    for w in windows:
        pids = [e["pid"] for e in w]
        assert pids == sorted(pids, reverse=True)  # --sort -pid, per window
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed (the arrays were read by json.loads)")
    done = subprocess.run([jq, "-c", "length"], input=out, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [int(n) for n in done.stdout.split()] == [len(w) for w in windows]
    proc.assert_released()


def test_lost_events_between_json_windows_go_to_stderr_only(igrun_cli: IgrunCli) -> None:
    """A 4K ring buffer under a burst of opens loses events: with ``--interval`` and JSON,
    stdout stays one array per window (no warning object between them, as between ``ig``'s
    interval arrays), and stderr says how many were lost."""
    proc = igrun_cli.start(
        "trace", "open", "--host", "--interval", "300ms", "-o", "json", "--buffer-size", "4K"
    )  # fmt: skip
    for _ in range(20000):
        os.close(os.open("/dev/null", os.O_RDONLY))
    time.sleep(1.5)  # the per-second warning of the last losses, and a window after it
    out, err = proc.stop()
    assert proc.returncode == 0, err
    assert re.search(r"\[warning\] lost \d+ events", err), err
    windows = [json.loads(line) for line in out.splitlines()]
    assert len(windows) >= 2
    assert all(isinstance(w, list) for w in windows), [
        w for w in windows if not isinstance(w, list)
    ]
    assert all(e["type"] == "normal" for w in windows for e in w)
    proc.assert_released()


def test_columns_windows_are_timestamped_blocks(igrun_cli: IgrunCli) -> None:
    tag = marker()
    started = datetime.now(UTC).replace(tzinfo=None)
    proc = igrun_cli.start(
        "trace", "exec", "--host", "-F", f"ppid:{os.getpid()}", "--interval", "400ms",
        "-o", "columns=pid,args",
    )  # fmt: skip
    execs(tag, 4, 0.2)
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    blocks = out.rstrip("\n").split("\n\n")
    assert len(blocks) >= 2
    stamps = []
    shown = 0
    for block in blocks:
        first, header, *rows = block.split("\n")
        match = WINDOW.fullmatch(first)
        assert match, first
        stamps.append(datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%f"))
        assert header.split() == ["PID", "ARGS"]
        shown += sum(1 for r in rows if f"/bin/echo {tag}" in r)
    assert shown == 4
    assert stamps == sorted(stamps) and stamps[0] >= started
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert all(0.3 < g < 1.5 for g in gaps[:-1]), gaps  # the last window ends at the stop
    proc.assert_released()


def test_sort_on_a_stream_is_one_line(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("trace", "exec", "--sort", "-pid", "-t", "1s")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "igrun: error: --sort needs --interval: a stream has no end to sort up to "
        "(e.g. --interval 1s sorts each second's events)\n"
    )
