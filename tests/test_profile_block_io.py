"""``profile block-io`` end to end: a loop device over a temporary file, a child doing a known
number of O_DIRECT reads on it (each one 4 KiB request), and the histogram of that disk counts
exactly those reads, in ``ig``'s report, ``ig``'s JSON and the rows; the result is printed once
whether the run ends by ``-t``, Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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
    assert "nothing_counted" in done.stderr  # said on stderr, the data stays ig's


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


BOUNDS = [float(2 ** (i + 1) - 1) for i in range(27)]
"""The last value of each log2 bucket (1, 3, 7 ... µs): the bucket rows land on them exactly."""


def test_the_histogram_is_a_prometheus_histogram(
    igrun_cli: IgrunCli, loop_disk: str, tmp_path: Path
) -> None:
    """With --interval each interval's buckets add to a Prometheus histogram of the disk:
    every read counted once, in the bucket of the report's rows."""
    from prometheus_client.parser import text_string_to_metric_families

    config = tmp_path / "metrics.toml"
    config.write_text(
        "[[histograms]]\n"
        'name = "igrun_block_io_latency_microseconds"\n'
        'labels = ["disk"]\n'
        'field = "end"\n'
        'count = "count"\n'
        f"buckets = {[int(b) for b in BOUNDS]}\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = igrun_cli.start(
        "profile", "block-io", "-D", "--disk", loop_disk, "--interval", "500ms",
        "-o", "json", "--metrics-config", str(config),
        "--metrics-listen-address", f"127.0.0.1:{port}",
    )  # fmt: skip
    read_blocks(loop_disk)
    name = "igrun_block_io_latency_microseconds"
    deadline = time.monotonic() + 10
    samples: dict[tuple[str, float], float] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = {
            (s.name, float(s.labels.get("le", "nan"))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith(name) and s.labels.get("disk") == loop_disk
        }
        if sum(v for (n, _), v in samples.items() if n == f"{name}_count") == READS:
            break
        time.sleep(0.2)
    out, err = run.stop()
    assert sum(v for (n, _), v in samples.items() if n == f"{name}_count") == READS, err
    assert samples[(f"{name}_bucket", math.inf)] == READS
    rows: dict[int, int] = {}
    for line in out.splitlines():  # the same reads, as the intervals printed them
        for i in json.loads(line).get("intervals", []):
            rows[i["end"]] = rows.get(i["end"], 0) + i["count"]
    cumulative = 0
    for bound in BOUNDS:
        cumulative += rows.get(int(bound), 0)
        assert samples[(f"{name}_bucket", bound)] == cumulative


def test_a_histograms_count_must_be_an_integer_field() -> None:
    from igrun.core import ParamError
    from igrun.operators.metrics_config import parse_config
    from igrun.plugins.profile_block_io import SCHEMA

    text = '[[histograms]]\nname = "h"\nfield = "end"\ncount = "{}"\nbuckets = [1, 3]\n'
    with pytest.raises(ParamError) as caught:
        parse_config(text.format("disk"), SCHEMA)
    assert str(caught.value) == 'metrics config: histograms[0].count: "disk" is a str, not a count'
    [metric] = parse_config(text.format("count"), SCHEMA)
    assert metric.count is not None and metric.count.name == "count"
