"""top file in the real kernel: a child reads and writes known amounts, and its rows say
exactly how many calls and bytes, per file, with the file's type.

The child names itself with a unique ``comm`` (``prctl``), so the run can keep only its rows
(``-F comm:…``) on a host that reads and writes all the time: the filter comes before sort and
max-rows, so no busier process pushes the child's rows out. A child's I/O may straddle two
intervals: rows are summed per file over every interval before they are compared.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from containerlab import unique
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

from igrun.core import plugins
from igrun.core.cli.flags import gadget_parser
from igrun.core.gadget import Gadget, GadgetContext, GadgetType
from igrun.core.output.columns import bytes_text
from igrun.core.run.local import Run, Runtime
from igrun.plugins.top_file import TopFile
from igrun.testing import marker

if TYPE_CHECKING:
    from igrun.testing import IgrunCli

pytestmark = pytest.mark.bpf

MiB = 1 << 20
WRITES = (4 * MiB, 2 * MiB, 2 * MiB, MiB, 512 * 1024, 512 * 1024)
"""Ten MiB in six write calls of known sizes."""
READS = (MiB, MiB, 768 * 1024, 256 * 1024)
"""Three MiB in four read calls, from a file longer than that (no short read at its end)."""
SOCKET_WRITES = (1000, 2000, 3000)
PIPE_WRITES = (10, 20)
PR_SET_NAME = 15
IG_HEADERS = (
    "RUNTIME.CONTAINERNAME", "PID", "COMM", "READS", "WRITES", "RBYTES", "WBYTES", "T", "FILE",
)  # fmt: skip
"""``ig top file``'s default columns (its docs, ``docs/builtin-gadgets/top/file.md``)."""
INTERVAL = "500ms"
REGULAR, SOCKET, OTHER = ord("R"), ord("S"), ord("O")
"""ig's fileType in JSON: the byte of the T column's letter."""

libc = ctypes.CDLL(None, use_errno=True)


def comm_marker() -> str:
    """A unique command name (at most 15 bytes: the kernel's comm)."""
    return marker()[:15]


def child_io(comm: str, written: Path, read: Path, other_fds: bool = False) -> int:
    """Fork a child named ``comm`` that writes :data:`WRITES` to ``written`` and reads
    :data:`READS` from ``read`` (and, with ``other_fds``, writes to a socket and a pipe);
    return its pid once it has exited."""
    if other_fds:
        left, right = socket.socketpair()
        pipe_read, pipe_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            libc.prctl(PR_SET_NAME, comm.encode(), 0, 0, 0)
            fd = os.open(written, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            for size in WRITES:
                assert os.write(fd, b"w" * size) == size
            os.close(fd)
            fd = os.open(read, os.O_RDONLY)
            for size in READS:
                assert len(os.read(fd, size)) == size
            os.close(fd)
            if other_fds:
                for size in SOCKET_WRITES:
                    assert os.write(left.fileno(), b"s" * size) == size
                for size in PIPE_WRITES:
                    assert os.write(pipe_write, b"p" * size) == size
            code = 0
        finally:
            os._exit(code)
    if other_fds:
        for closing in (left, right):
            closing.close()
        os.close(pipe_read)
        os.close(pipe_write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A file to write and one of 4 MiB to read, both with unique names."""
    tag = marker()
    read = tmp_path / f"read-{tag}"
    read.write_bytes(b"r" * (4 * MiB))
    return tmp_path / f"written-{tag}", read


def windows(out: str) -> list[list[dict[str, Any]]]:
    """Each line of ``-o json`` with ``--interval``: one JSON array per interval."""
    lines = [line for line in out.split("\n") if line]
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(w, list) for w in parsed), lines
    return parsed


def igs_json(row: dict[str, Any]) -> None:
    """A row as ``ig``'s ``top file`` writes its Stats: only its keys (and no ``type``),
    Go's types, and no empty value where its tag says omitempty."""
    from test_ig_json import IG, flatten, json_type_ok

    ig = IG["top file"]
    for key, value in flatten(row).items():
        assert key in ig, (key, row)
        assert json_type_ok(ig[key]["type"], value), (key, value)
        if ig[key]["omitempty"] and not ig[key]["type"].startswith("struct "):
            assert value not in (0, "", [], {}), (key, row)


def per_file(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows summed per file over intervals (counts and bytes), the rest as last seen."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for row in rows:
        sums = out[row["filename"]]
        for key, value in row.items():
            if key in ("reads", "writes", "rbytes", "wbytes"):
                sums[key] = sums.get(key, 0) + value
            else:
                sums[key] = value
    return dict(out)


def top(
    cli: IgrunCli, comm: str, action: Any, *flags: str
) -> tuple[list[list[dict[str, Any]]], int]:
    """``igrun top file --host -o json`` of the rows of ``comm`` while ``action`` runs: the
    windows and what ``action`` returned."""
    proc = cli.start(
        "top", "file", "--host", "-o", "json", "--interval", INTERVAL, "-F", f"comm:{comm}",
        *flags,
    )  # fmt: skip
    try:
        result = action()
        time.sleep(1.2)  # two more intervals: the last counts are drained
    finally:
        out, err = proc.stop()
    assert proc.returncode == 0, err
    proc.assert_released()
    return windows(out), result


def test_declares_igs_gadget() -> None:
    """``ig`` v0.25's ``top file``: its type, default sort, ``--all-files`` (``-a`` as in
    ``kubectl gadget top file``) and the interval gadgets' ``--interval 1`` and ``-m 50``."""
    assert TopFile.full_name() == "top file"
    assert TopFile.type is GadgetType.TRACE_INTERVALS
    assert TopFile.sort_by_default() == ["-reads", "-writes", "-rbytes", "-wbytes"]
    parser, routes = gadget_parser(TopFile, plugins.PluginRegistry())
    args = parser.parse_args([])
    flags = {
        opt: (routes[action.dest][1], getattr(args, action.dest))
        for opt, action in parser._option_string_actions.items()
        if action.dest in routes
    }
    assert flags["-a"] == flags["--all-files"] == ("all-files", None)
    assert flags["-m"][0] == "max-rows" and flags["--interval"][0] == "interval"
    help_text = parser.format_help()
    assert "[default: 1s]" in help_text and "[default: 50]" in help_text
    (all_files,) = TopFile.params
    assert all_files.default == "false"


def test_byte_columns_read_as_igs() -> None:
    """go-units' BytesSize, as ig's rbytes and wbytes columns show them."""
    sizes = [0, 4, 1023, 1024, 1536, 10 * MiB, 3 * MiB, 1023 * 1024 + 1000, 5 << 30, 12345678]
    assert [bytes_text(n) for n in sizes] == [
        "0B", "4B", "1023B", "1KiB", "1.5KiB", "10MiB", "3MiB", "1024KiB", "5GiB", "11.77MiB",
    ]  # fmt: skip


def test_exact_calls_and_bytes_per_file(igrun_cli: IgrunCli, files: tuple[Path, Path]) -> None:
    written, read = files
    comm = comm_marker()
    found, pid = top(igrun_cli, comm, lambda: child_io(comm, written, read))
    rows = [r for w in found for r in w]
    assert rows and {r["pid"] for r in rows} == {pid}
    for row in rows:
        igs_json(row)
    got = per_file(rows)
    assert set(got) == {written.name, read.name}
    mntns = os.stat("/proc/self/ns/mnt").st_ino
    assert got[written.name] == {
        "pid": pid, "tid": pid, "comm": comm, "mountnsid": mntns,
        "writes": len(WRITES), "wbytes": 10 * MiB, "fileType": REGULAR, "filename": written.name,
        "k8s": got[written.name]["k8s"], "runtime": {},
    }  # fmt: skip
    assert got[read.name] == {
        "pid": pid, "tid": pid, "comm": comm, "mountnsid": mntns,
        "reads": len(READS), "rbytes": 3 * MiB, "fileType": REGULAR, "filename": read.name,
        "k8s": got[read.name]["k8s"], "runtime": {},
    }  # fmt: skip


def test_other_files_only_with_all_files(igrun_cli: IgrunCli, files: tuple[Path, Path]) -> None:
    written, read = files
    comm = comm_marker()
    found, _ = top(igrun_cli, comm, lambda: child_io(comm, written, read, other_fds=True))
    assert {r["fileType"] for w in found for r in w} == {REGULAR}

    comm = comm_marker()
    found, pid = top(
        igrun_cli, comm, lambda: child_io(comm, written, read, other_fds=True), "--all-files"
    )
    rows = [r for w in found for r in w]
    sockets = [r for r in rows if r["fileType"] == SOCKET]
    pipes = [r for r in rows if r["fileType"] == OTHER]
    assert sum(r["writes"] for r in sockets) == len(SOCKET_WRITES)
    assert sum(r["wbytes"] for r in sockets) == sum(SOCKET_WRITES)
    assert sum(r["writes"] for r in pipes) == len(PIPE_WRITES)
    assert sum(r["wbytes"] for r in pipes) == sum(PIPE_WRITES)
    assert {r["pid"] for r in rows} == {pid}
    regular = per_file([r for r in rows if r["fileType"] == REGULAR])
    assert regular[written.name]["wbytes"] == 10 * MiB  # and the regular files still


def test_short_flag_a_is_all_files(igrun_cli: IgrunCli, files: tuple[Path, Path]) -> None:
    written, read = files
    comm = comm_marker()
    found, _ = top(igrun_cli, comm, lambda: child_io(comm, written, read, other_fds=True), "-a")
    assert {r["fileType"] for w in found for r in w} == {REGULAR, SOCKET, OTHER}


def test_one_array_per_interval(igrun_cli: IgrunCli) -> None:
    """With a timeout, as many arrays as intervals fit in it, empty ones included."""
    done = igrun_cli.run(
        "top", "file", "--host", "-o", "json", "--interval", "1s", "--timeout", "3s",
        "-F", f"comm:{comm_marker()}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert windows(done.stdout) == [[], [], []]


def test_columns_are_igs(igrun_cli: IgrunCli, files: tuple[Path, Path]) -> None:
    """The default columns and their headers, as ``ig top file`` prints them."""
    written, read = files
    comm = comm_marker()
    proc = igrun_cli.start(
        "top", "file", "--host", "--interval", INTERVAL, "-F", f"comm:{comm}",
    )  # fmt: skip
    child_io(comm, written, read)
    time.sleep(1.2)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    headers = {tuple(line.split()) for line in lines if "FILE" in line}
    assert headers == {IG_HEADERS}
    # A host process: an empty container name, then the child's cells.
    cells = [line.split() for line in lines if line.endswith(written.name)]
    # As ig's units.BytesSize: 10 MiB in one interval, or two parts across two.
    sizes = [c[5] for c in cells]
    assert sizes == ["10MiB"] or len(sizes) == 2, lines
    assert all(c[6] == "R" and c[1] == comm for c in cells)


def test_container_filter(
    igrun_cli: IgrunCli,
    podman: Podman,  # noqa: F811
    files: tuple[Path, Path],
) -> None:
    """``-c NAME``: the container's file writes, exactly, and nothing of the host's."""
    box = podman.run(unique("igrun-topfile"))
    name = f"out-{marker()}"
    proc = igrun_cli.start("top", "file", "-c", box.name, "-o", "json", "--interval", INTERVAL)
    try:
        written, read = files
        child_io(comm_marker(), written, read)  # on the host: not shown
        podman("exec", box.name, "dd", "if=/dev/zero", f"of=/tmp/{name}", "bs=4096", "count=5")
        time.sleep(1.2)
    finally:
        out, err = proc.stop()
    assert proc.returncode == 0, err
    rows = [r for w in windows(out) for r in w]
    assert rows and {r["runtime"]["containerName"] for r in rows} == {box.name}
    assert {r["mountnsid"] for r in rows} == {box.mntns}
    dd = [r for r in rows if r["filename"] == name]
    assert {r["comm"] for r in dd} == {"dd"}
    assert sum(r["writes"] for r in dd) == 5 and sum(r["wbytes"] for r in dd) == 5 * 4096
    assert not [r for r in rows if r["filename"] in (written.name, read.name)]


class SmallTopFile(TopFile):
    stats_entries = 2

    def object_path(self) -> Any:
        return TopFile().object_path()  # the object is in the gadget's package, not here


def test_files_that_do_not_fit_the_map_are_reported_lost(tmp_path: Path) -> None:
    """A map of two keys, a child that writes eight files at once: the files without room
    are counted as lost, not dropped in silence."""
    runtime = Runtime([])
    values = {"runtime.timeout": "1.5s", "runtime.interval": "1s"}
    params = runtime.params_for(SmallTopFile, values)

    def write_files() -> None:
        pid = os.fork()
        if pid == 0:
            for i in range(8):
                fd = os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o644)
                os.write(fd, b"x")
                os.close(fd)
            os._exit(0)
        os.waitpid(pid, 0)

    def ready(ctx: GadgetContext, instance: Gadget) -> None:
        write_files()

    ctx = runtime.run(SmallTopFile, *params, on_ready=ready)
    run = ctx.resources.get(Run)
    assert run is not None
    # At most two keys fit per interval, and the writes may straddle two intervals.
    assert run.lost_total >= 8 - 2 * 2


def test_a_gauge_shows_the_bytes_written_in_the_last_interval(
    igrun_cli: IgrunCli, files: tuple[Path, Path], tmp_path: Path
) -> None:
    """The Prometheus operator takes each interval as a gauge window: the child's file shows
    the bytes written in the last interval, then goes when an interval has none."""
    from test_prometheus import free_port, scrape

    written, read = files
    comm = comm_marker()
    config = tmp_path / "metrics.toml"
    config.write_text(
        '[[gauges]]\nname = "igrun_file_written_bytes"\nfield = "wbytes"\n'
        f'labels = ["comm", "file"]\nfilter = ["comm:{comm}", "wbytes:>0"]\ntop = 20\n'
    )
    url = f"http://127.0.0.1:{free_port()}/metrics"
    proc = igrun_cli.start(
        "top", "file", "--host", "--interval", INTERVAL, "-o", "none",
        "--metrics-config", str(config), "--metrics-listen-address", url[7:-8],
    )  # fmt: skip

    def gauge() -> dict[tuple[str, str], float]:
        return {
            (dict(key)["comm"], dict(key)["filename"]): value
            for (name, key), value in scrape(url).items()
            if name == "igrun_file_written_bytes"
        }

    try:
        child_io(comm, written, read)
        seen: list[dict[tuple[str, str], float]] = []
        deadline = time.monotonic() + 10
        while not (any(seen) and seen[-1] == {}):  # until shown, then gone again
            assert time.monotonic() < deadline, seen
            seen.append(gauge())
            time.sleep(0.05)
    finally:
        _, err = proc.stop()
    assert proc.returncode == 0, err
    # Each interval shows once (repeated scrapes of one interval agree); the writes may
    # straddle two intervals, whose gauges then add up to them.
    shown = [s for i, s in enumerate(seen) if s and (i == 0 or s != seen[i - 1])]
    assert shown and all(set(s) == {(comm, written.name)} for s in shown), seen
    assert sum(s[(comm, written.name)] for s in shown) == 10 * MiB
