"""``profile block-io`` end to end: a loop device over a temporary file, a child doing a known
number of O_DIRECT reads on it (each one 4 KiB request), and the histogram of that disk counts
exactly those reads, in ``ig``'s report, ``ig``'s JSON and the rows; the result is printed once
whether the run ends by ``-t``, Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from igrun.testing import CliRun, IgrunCli

pytestmark = pytest.mark.bpf

READS = 37
BLOCK = 4096
READER = f"""
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, {BLOCK})
for i in range(int(sys.argv[2])):
    assert os.preadv(fd, [buf], i * {BLOCK}) == {BLOCK}
os.close(fd)
"""
"""Reads N blocks of the device with O_DIRECT into a page-aligned buffer: one request each."""


@pytest.fixture
def loop_disk(tmp_path: Path) -> Iterator[str]:
    """A loop device over a new 4 MiB file: its name (``loop7``), detached afterwards."""
    if shutil.which("losetup") is None:
        pytest.skip("losetup is not installed")
    backing = tmp_path / "disk.img"
    with backing.open("wb") as f:
        f.truncate(4 << 20)
    done = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True
    )
    if done.returncode:
        pytest.skip(f"no loop device: {done.stderr.strip()}")
    device = done.stdout.strip()
    try:
        if shutil.which("udevadm"):  # let udev's own probe of the new disk pass first
            subprocess.run(["udevadm", "settle", "-t", "5"], check=False)
        yield os.path.basename(device)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def read_blocks(disk: str, n: int = READS) -> None:
    subprocess.run([sys.executable, "-c", READER, f"/dev/{disk}", str(n)], check=True)


def report_counts(text: str) -> list[tuple[int, int, int]]:
    """``(start, end, count)`` of each bar line of ``ig``'s report."""
    rows = re.findall(r"^\s+(\d+) -> (\d+)\s+: (\d+)\s+\|[* ]{40}\|$", text, re.M)
    return [(int(a), int(b), int(c)) for a, b, c in rows]


def run_to_end(run: CliRun, how: str) -> tuple[str, str]:
    if how == "timeout":
        return run.communicate(60)
    return run.stop(signal.SIGINT if how == "sigint" else signal.SIGTERM)


@pytest.mark.parametrize("how", ["timeout", "sigint", "sigterm"])
def test_the_report_is_printed_once_with_every_read(
    igrun_cli: IgrunCli, loop_disk: str, how: str
) -> None:
    args = ["profile", "block-io", "--disk", loop_disk]
    if how == "timeout":
        args += ["-t", "4s"]
    run = igrun_cli.start(*args)
    read_blocks(loop_disk)
    out, err = run_to_end(run, how)
    assert run.returncode == 0, err
    assert "Traceback" not in err and "[warning]" not in err and "[error]" not in err
    lines = out.splitlines()
    assert lines[0] == f"{'':8}{'µs':<16} : count    distribution"
    assert out.count("distribution") == 1  # one histogram, printed once
    buckets = report_counts(out)
    assert len(buckets) == len(lines) - 1  # nothing else on stdout
    assert sum(c for _, _, c in buckets) == READS
    assert buckets[0][:2] == (0, 1)
    assert all(end == 2 * start - 1 for start, end, _ in buckets[1:])
    assert buckets[-1][2] > 0  # up to the last bucket that counted, as ig
    run.assert_released()


def test_json_is_igs_object(igrun_cli: IgrunCli, loop_disk: str) -> None:
    run = igrun_cli.start("profile", "block-io", "--disk", loop_disk, "-o", "json")
    read_blocks(loop_disk)
    out, err = run.stop()
    assert run.returncode == 0, err
    [line] = out.splitlines()
    result = json.loads(line)
    assert list(result) == ["unit", "intervals"]
    assert result["unit"] == "µs"
    assert sum(i["count"] for i in result["intervals"]) == READS
    assert all(list(i) == ["count", "start", "end"] for i in result["intervals"])


def test_per_disk_keeps_the_loop_devices_histogram_apart(
    igrun_cli: IgrunCli, loop_disk: str
) -> None:
    run = igrun_cli.start("profile", "block-io", "--per-disk", "-o", "json")
    read_blocks(loop_disk)
    out, err = run.stop()
    assert run.returncode == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    [mine] = [r for r in results if r["disk"] == loop_disk]
    assert sum(i["count"] for i in mine["intervals"]) == READS
    assert len({r["disk"] for r in results}) == len(results)


def test_per_disk_report_titles_each_disk(igrun_cli: IgrunCli, loop_disk: str) -> None:
    run = igrun_cli.start("profile", "block-io", "-D", "--disk", loop_disk)
    read_blocks(loop_disk)
    out, _ = run.stop()
    assert out.splitlines()[0] == f"disk = {loop_disk}"
    assert sum(c for _, _, c in report_counts(out)) == READS


def test_rows_filter_and_milliseconds(igrun_cli: IgrunCli, loop_disk: str) -> None:
    """The rows under the formats: columns with one header, a filter on them, and -m."""
    run = igrun_cli.start(
        "profile", "block-io", "-D", "-m", "-o", "columns", "-F", f"disk:{loop_disk}"
    )
    read_blocks(loop_disk)
    out, err = run.stop()
    assert run.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["DISK", "START", "END", "COUNT"]
    assert out.count("DISK") == 1
    rows = [line.split() for line in lines[1:]]
    assert {r[0] for r in rows} == {loop_disk}
    assert sum(int(r[3]) for r in rows) == READS
    assert rows[0][1:3] == ["0", "1"]  # a loop read takes well under 2 ms


def test_an_empty_run_prints_igs_empty_result(igrun_cli: IgrunCli, loop_disk: str) -> None:
    done = igrun_cli.run("profile", "block-io", "--disk", loop_disk, "-t", "300ms", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"unit":"µs"}\n'


def test_formats_are_listed_and_checked_before_anything_loads(igrun_cli: IgrunCli) -> None:
    done = igrun_cli.run("profile", "block-io", "--help")
    assert "  * report  A histogram showing the I/O time distribution" in done.stdout
    assert re.search(r"\[default:\s+report\]", done.stdout)
    done = igrun_cli.run("profile", "block-io", "-o", "xml")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        'igrun: error: invalid output "xml": use one of columns, json, jsonpretty, yaml, '
        "none, report"
    ]
    done = igrun_cli.run("profile", "block-io", "--disk", "no-such-disk0")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "igrun: error: --disk: no block device 'no-such-disk0' (see /sys/class/block)"
    ]
