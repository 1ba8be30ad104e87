"""``igrun.testing``: a pytest plugin for testing gadgets against the real kernel.

Installed with igrun and loaded by pytest through the ``pytest11`` entry point, so a gadget
package's tests use it without a conftest. What it gives (see docs/authoring.md, "Testing
your gadget"):

- the ``bpf`` marker: the test loads BPF; it is skipped where BPF cannot run (not root, no
  BTF, no bpffs), and fails instead with ``IGRUN_REQUIRE_BPF=1`` (CI: a green run really ran);
- :func:`trace` (fixture ``igrun_trace``): run a gadget in-process until every program is
  attached, run an action, and return the exact events, then check that the run left
  nothing behind;
- :class:`IgrunCli` (fixture ``igrun_cli``): start the ``igrun`` command, return once it
  says ``ready``, and stop it, with a deadline that holds even when igrun prints nothing;
- :func:`bpf_ids_of`, :func:`assert_released`: the programs, maps and links a run holds,
  and the check that none is left once it ended. Both are per run (a process or a run's own
  objects), so tests running beside other igrun runs see only their own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import pytest

if TYPE_CHECKING:
    from igrun.core import Gadget, Operator

__all__ = [
    "READY_LINE",
    "BpfIds",
    "CliRun",
    "IgrunCli",
    "assert_released",
    "bpf_ids_of",
    "bpf_unavailable",
    "marker",
    "trace",
    "without_ready",
]

READY_LINE = re.compile(r"\[info\] ready( |$)")
"""The line igrun writes on stderr once every program of a run is attached."""
PIN_ROOT = Path("/sys/fs/bpf/gadget")
IGRUN = (sys.executable, "-m", "igrun.core.cli")
RELEASE_WAIT = 5.0
"""The kernel frees a program some time after its last reference goes (RCU): a check that
something is gone looks again for this long."""


def bpf_unavailable() -> str | None:
    """Why BPF cannot run here, or ``None``."""
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel has no BTF"
    from igrun.core.bpf.pins import BPFFS, fs_type

    if fs_type(BPFFS) != "bpf":
        return f"bpffs is not mounted at {BPFFS}"
    return None


# ---- what a run holds, and whether it is gone --------------------------------------------------


@dataclass(frozen=True)
class BpfIds:
    """Kernel ids of BPF objects: programs, maps and links."""

    programs: frozenset[int] = frozenset()
    maps: frozenset[int] = frozenset()
    links: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.programs or self.maps or self.links)


def bpf_ids_of(pid: int | None = None) -> BpfIds:
    """The BPF programs, maps and links process ``pid`` (default: this one) holds a file
    descriptor of, from the kernel's fdinfo."""
    programs, maps, links = set(), set(), set()
    for entry in Path(f"/proc/{pid or 'self'}/fdinfo").iterdir():
        try:
            text = entry.read_text()
        except OSError:  # closed meanwhile
            continue
        info = dict(line.partition(":")[::2] for line in text.splitlines())
        if "link_id" in info:  # a link's fdinfo names its program too
            links.add(int(info["link_id"]))
        elif "prog_id" in info:
            programs.add(int(info["prog_id"]))
        elif "map_id" in info:
            maps.add(int(info["map_id"]))
    return BpfIds(frozenset(programs), frozenset(maps), frozenset(links))


_libbpf: Any = None


def _get_fd_by_id(kind: str, ident: int) -> int:
    """``bpf_<kind>_get_fd_by_id`` from the system's libbpf (which igrun links): an fd, or a
    negative errno."""
    global _libbpf
    if _libbpf is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        _libbpf = ctypes.CDLL(name, use_errno=True)
    call = getattr(_libbpf, f"bpf_{kind}_get_fd_by_id")
    call.argtypes = [ctypes.c_uint32]
    call.restype = ctypes.c_int
    return int(call(ident))


def _alive(ids: BpfIds) -> BpfIds:
    """Those of ``ids`` that the kernel still has."""
    alive: dict[str, set[int]] = {"programs": set(), "maps": set(), "links": set()}
    for kind, attr in (("prog", "programs"), ("map", "maps"), ("link", "links")):
        for ident in getattr(ids, attr):
            fd = _get_fd_by_id(kind, ident)
            if fd >= 0:
                os.close(fd)
                alive[attr].add(ident)
    return BpfIds(frozenset(alive["programs"]), frozenset(alive["maps"]), frozenset(alive["links"]))


def assert_released(
    ids: BpfIds = BpfIds(), pins: Sequence[Path] = (), wait: float = RELEASE_WAIT
) -> None:
    """Fail unless every one of ``ids`` is gone from the kernel and no path of ``pins``
    exists, looking again for up to ``wait`` seconds (the kernel frees programs lazily)."""
    deadline = time.monotonic() + wait
    while True:
        left = _alive(ids)
        pinned = [p for p in pins if p.exists()]
        if not left and not pinned:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"left behind: {left}, pins {[str(p) for p in pinned]}")
        time.sleep(0.05)


def without_ready(stderr: str) -> str:
    """``stderr`` without its ``ready`` lines: what is left to compare exactly."""
    return "".join(line for line in stderr.splitlines(True) if not READY_LINE.search(line))


def pins_of(pid: int) -> list[Path]:
    """The pin folders of the igrun process ``pid`` (``<pid>-<n>`` under the pin root)."""
    if not PIN_ROOT.is_dir():
        return []
    return [d for d in PIN_ROOT.iterdir() if d.name.startswith(f"{pid}-")]


# ---- in-process runs ---------------------------------------------------------------------------


def trace(
    gadget: str | os.PathLike[str] | type[Gadget],
    action: Callable[[], object],
    params: Mapping[str, Any] | None = None,
    operators: Sequence[str | type[Operator]] | None = None,
    *,
    settle: float = 0.3,
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """The events ``gadget`` saw while ``action`` ran, as ``-o json`` shows them.

    Starts the run (``run_gadget``), waits until every program is attached, runs ``action``,
    waits ``settle`` seconds for its events to arrive, cancels the run and takes every event
    through the final drain; then asserts that the run's programs and pin folder are gone.
    ``params`` is the flat map (``{"ignore-errors": True}``); ``timeout`` bounds the run.
    """
    from igrun.core import run_gadget

    values = {"runtime.timeout": f"{timeout}s", **(params or {})}
    with run_gadget(gadget, values, operators) as run:
        run.wait_ready(timeout)
        ids, folder = BpfIds(programs=run.program_ids), run.pin_folder
        try:
            action()
            time.sleep(settle)
        finally:
            run.cancel()
        events = list(run.events())
    assert_released(ids, [folder] if folder is not None else [])
    return events


def marker() -> str:
    """A string no other process on the host uses: a file name, a comm, an argument."""
    return f"igrun-{uuid.uuid4().hex[:10]}"


# ---- the igrun command -------------------------------------------------------------------------


class CliRun:
    """A started ``igrun``, read all along (a full pipe never stalls it), with the
    :class:`subprocess.Popen` methods tests use: ``pid``, ``poll``, ``wait``,
    ``send_signal``, ``kill``, ``returncode``, and ``communicate`` returning text."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        on_err_line: Callable[[str], None],
        read_stdout: bool = True,
    ) -> None:
        self.proc = proc
        self.ids = BpfIds()
        """The programs, maps and links the process held when it said ``ready``."""
        self.stdout: io.TextIOWrapper | None = None
        """igrun's stdout, for the test to read (and close) itself, when it asked to."""
        self._out: list[bytes] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=_pump, args=(proc.stderr, self._err, on_err_line), daemon=True)
        ]
        if read_stdout:
            pump = threading.Thread(target=_pump, args=(proc.stdout, self._out, None), daemon=True)
            self._readers.append(pump)
        else:
            self.stdout = io.TextIOWrapper(cast(IO[bytes], proc.stdout))
        for t in self._readers:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def stderr_so_far(self) -> str:
        return "".join(self._err)

    def poll(self) -> int | None:
        return self.proc.poll()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        self.proc.kill()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def communicate(self, timeout: float | None = 30.0) -> tuple[str, str]:
        """Wait for igrun to end (kill it after ``timeout``: the test then fails) and
        return all it wrote to stdout and stderr."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._join()
            raise AssertionError(
                f"igrun did not end within {timeout}s:\n{self.stderr_so_far}"
            ) from None
        self._join()
        return b"".join(self._out).decode(errors="replace"), self.stderr_so_far

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> tuple[str, str]:
        """Signal igrun to end (Ctrl-C by default), wait and return its stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.communicate(timeout)

    def _join(self) -> None:
        for t in self._readers:
            t.join(10)

    def assert_released(self) -> None:
        """Nothing this run held is left: its programs, maps, links and pin folders."""
        assert self.proc.poll() is not None, "the run is still going"
        assert_released(self.ids, pins_of(self.pid))


def _pump(stream: Any, sink: list[Any], on_line: Callable[[Any], None] | None) -> None:
    for line in iter(stream.readline, b""):
        sink.append(line if on_line is None else line.decode(errors="replace"))
        if on_line is not None:
            on_line(sink[-1])
    stream.close()


@dataclass
class IgrunCli:
    """Runs the ``igrun`` command as users do (``python -m igrun.core.cli`` by default)."""

    command: tuple[str, ...] = IGRUN
    verbose: bool = False
    """Start runs with ``-v`` (debug lines on stderr)."""

    def start(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 20.0,
        runs: int = 1,
        read_stdout: bool = True,
    ) -> CliRun:
        """Start ``igrun ARGS`` and return once it says ``ready`` (every program attached;
        ``runs`` times for a config of several runs), or fail the test after ``timeout``
        seconds, or as soon as it exits. With ``read_stdout=False`` the test reads
        :attr:`CliRun.stdout` itself (to close it early, as ``| head`` does)."""
        proc = subprocess.Popen(
            [*self.command, *args, *(["-v"] if self.verbose else [])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
        )
        ready = threading.Event()
        seen = [0]

        def on_line(line: str) -> None:
            if READY_LINE.search(line):
                seen[0] += 1
                if seen[0] >= runs:
                    ready.set()

        run = CliRun(proc, on_line, read_stdout)
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if proc.poll() is not None or time.monotonic() >= deadline:
                if proc.poll() is None:
                    proc.kill()
                out, err = run.communicate(5)
                raise AssertionError(
                    f"igrun {' '.join(args)} did not get ready within {timeout}s "
                    f"(exit {proc.returncode}):\n{out}{err}"
                )
        run.ids = bpf_ids_of(proc.pid)
        return run

    def run(
        self, *args: str, timeout: float = 60.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``igrun ARGS`` to its end; its exit code, stdout and stderr."""
        return subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
        )

    @staticmethod
    def events(stdout: str) -> list[dict[str, Any]]:
        """The JSON events of ``-o json`` output: one object per line, or (``--interval``)
        one array of them per window."""
        events: list[dict[str, Any]] = []
        for line in stdout.split("\n"):
            if line.startswith("{"):
                events.append(json.loads(line))
            elif line.startswith("["):
                events += json.loads(line)
        return events


# ---- the pytest plugin -------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "bpf: loads real BPF programs into the kernel (needs root, bpffs, BTF)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("bpf") is None:
        return
    reason = bpf_unavailable()
    if reason is None:
        return
    if os.environ.get("IGRUN_REQUIRE_BPF") == "1":
        pytest.fail(f"BPF is required (IGRUN_REQUIRE_BPF=1) but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def igrun_cli() -> IgrunCli:
    """Starts the ``igrun`` command and waits for it to be ready."""
    return IgrunCli()


@pytest.fixture
def igrun_trace() -> Callable[..., list[dict[str, Any]]]:
    """:func:`trace`: a gadget's exact events while an action runs, nothing left after."""
    return trace
