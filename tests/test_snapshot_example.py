"""One-shot gadgets end to end, on the example ``snapshot openfiles``
(examples/igrun-gadget-openfiles), a third-party gadget on ``BpfSnapshot``: the iterator's
records are the exact open files of a child, sorted by the gadget's default, limited, one JSON
array per snapshot with ``--interval``, and nothing is left after the run."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from igrun.core import BpfSnapshot, run_gadget
from igrun.core.bpf.build import compile_bpf
from igrun.testing import BpfIds, assert_released

pytestmark = pytest.mark.bpf

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "igrun-gadget-openfiles"
SOURCE = EXAMPLE / "igrun_gadget_openfiles" / "openfiles.bpf.c"
sys.path.insert(0, str(EXAMPLE))

from igrun_gadget_openfiles import SnapshotOpenfiles  # noqa: E402 (found through the line above)

HOST = {"operator.containers.host": True}  # --host: the test's processes are in no container
ALL = {"operator.limit.max-rows": 0}  # every row, not ig's 50
HOLDER = (
    "import os, sys\n"
    "fds = [os.open(p, os.O_RDONLY) for p in sys.argv[1:]]\n"
    "print(*fds, flush=True); sys.stdin.read()\n"
)
"""A child that opens the files it is given, prints their descriptors and waits."""
KINDS = {stat.S_IFREG: "REG", stat.S_IFIFO: "FIFO", stat.S_IFCHR: "CHR", stat.S_IFSOCK: "SOCK",
         stat.S_IFDIR: "DIR"}  # fmt: skip


class CompiledOpenfiles(SnapshotOpenfiles):
    compiled: ClassVar[Path]

    def object_path(self) -> Any:
        return self.compiled


@pytest.fixture(scope="module", autouse=True)
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("openfiles")
    CompiledOpenfiles.compiled = compile_bpf(SOURCE, out / "openfiles.bpf.o", build_dir=out / "b")
    return CompiledOpenfiles.compiled


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[int, Path]]]:
    files = [tmp_path / "first", tmp_path / "second"]
    for f in files:
        f.write_text("x")
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *map(str, files)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    fds = [int(fd) for fd in child.stdout.readline().split()]
    try:
        yield child, dict(zip(fds, files, strict=True))
    finally:
        child.kill()
        child.wait()


def snapshot(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the gadget to its end: its rows, as ``-o json`` writes them; nothing left after."""
    with run_gadget(CompiledOpenfiles, {"runtime.timeout": "10s", **values}) as run:
        run.wait_ready(10)
        ids, folder = BpfIds(programs=run.program_ids), run.pin_folder
        events = list(run.events())
    assert_released(ids, [folder] if folder is not None else [])
    return events


def test_is_a_bpf_snapshot() -> None:
    assert issubclass(SnapshotOpenfiles, BpfSnapshot)
    assert SnapshotOpenfiles.type.value == "oneShot"


def test_rows_are_the_childs_open_files_exactly(
    holder: tuple[subprocess.Popen[str], dict[int, Path]],
) -> None:
    child, files = holder
    rows = snapshot({"pid": child.pid, **HOST, **ALL})
    fds = {int(fd) for fd in os.listdir(f"/proc/{child.pid}/fd")}
    assert [r["fd"] for r in rows] == sorted(fds)  # the default sort: pid, then fd
    by_fd = {r["fd"]: r for r in rows}
    for fd, path in files.items():
        row = by_fd[fd]
        assert (row["path"], row["type"]) == (str(path), "REG")
        assert row["inode"] == path.stat().st_ino
        comm = Path(f"/proc/{child.pid}/comm").read_text().strip()
        assert (row["pid"], row["comm"]) == (child.pid, comm)
    for fd in fds:
        target = os.stat(f"/proc/{child.pid}/fd/{fd}")
        assert by_fd[fd]["inode"] == target.st_ino
        assert by_fd[fd]["type"] == KINDS[stat.S_IFMT(target.st_mode)]
    assert {r["mountnsid"] for r in rows} == {os.stat(f"/proc/{child.pid}/ns/mnt").st_ino}


def test_max_rows_and_sort_apply_to_the_snapshot(
    holder: tuple[subprocess.Popen[str], dict[int, Path]],
) -> None:
    child, _ = holder
    rows = snapshot({"pid": child.pid, **HOST, "operator.limit.max-rows": 2,
                     "operator.sort.sort": "-fd"})  # fmt: skip
    fds = sorted((int(fd) for fd in os.listdir(f"/proc/{child.pid}/fd")), reverse=True)
    assert [r["fd"] for r in rows] == fds[:2]


def test_without_host_no_host_process_is_read() -> None:
    """The kernel's mount-ns filter: with no container selected, the host's processes never
    reach user space."""
    rows = snapshot({"pid": os.getpid(), **ALL})
    assert rows == []
