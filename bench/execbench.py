"""Startup time, memory and exec-storm figures for ``igrun trace exec``.

The storm runs twice, under igrun and under libbpf-tools' execsnoop, so that what igrun keeps up
with is read against a C tracer on the same machine at the same moment. Every exec of a storm
carries a unique marker argument, so a trace is matched to the storm exactly and the rest of the
host's activity does not count.

Run as root: ``python bench/execbench.py`` prints one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

HERE = Path(__file__).resolve().parent
PIN_ROOT = Path("/sys/fs/bpf/gadget")
TRUE = "/bin/true"
ATTACH_TIMEOUT = 60.0  # loading and attaching takes well under this even on a busy host
STOP_TIMEOUT = 15.0
SETTLE = 1.0  # after a storm: time for the tracer to drain its buffer before it is stopped
IGRUN_LOST = re.compile(r"lost (\d+) events(?! \(buffer full\))")
"""igrun's warnings of lost events as they happen, not its summary of them all at exit."""
EXEC_LINKS = 4  # trace exec attaches execve and execveat, each at enter and exit
LINK_POLL = 0.001
EXECSNOOP_LOST = re.compile(r"Lost (\d+) events on CPU")
EXECSNOOP_HEADER = "PCOMM"


def build_c(name: str, out_dir: Path) -> Path:
    """Compile ``bench/<name>.c`` into ``out_dir`` unless the binary there is newer."""
    source, binary = HERE / f"{name}.c", out_dir / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def igrun_command() -> list[str]:
    """The igrun of this interpreter's environment: the ``igrun`` command next to
    sys.executable (the C launcher), or the CLI module when the package was installed without
    its scripts."""
    script = Path(sys.executable).parent / "igrun"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "igrun.core.cli"]


def snoop_command(kind: str) -> list[str] | None:
    """libbpf-tools' ``<kind>snoop`` (execsnoop, opensnoop), stdout line-buffered: its header
    line, printed once its programs are attached, must reach the output file for the run to
    know it is ready."""
    path = shutil.which(f"{kind}snoop", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    return None if path is None else ["stdbuf", "-oL", path]


class Tracer:
    """One tracer process, stopped with SIGINT (SIGKILL if it hangs) when the block ends.

    A thread drains its stderr, since a full pipe would stall the tracer, and on the way notes
    when the ``ready`` text first shows up and adds up the losses the tracer reports.
    """

    def __init__(
        self,
        argv: list[str],
        stdout: IO[bytes],
        lost: re.Pattern[str],
        ready: str | None = None,
        ready_links: int = 0,
    ) -> None:
        self.argv = argv
        self.lost = 0
        self.ready = threading.Event()
        self.ready_at = 0.0
        self._ready_text = ready
        self._lost_pattern = lost
        self._tail: deque[str] = deque(maxlen=5)
        self._interrupted = False
        self.started_at = time.monotonic()
        # A session of its own: Ctrl-C on the benchmark reaches only the benchmark, which then
        # stops the tracer with one SIGINT.
        self.proc = subprocess.Popen(
            argv, stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        if ready_links:
            threading.Thread(target=self._watch_links, args=(ready_links,), daemon=True).start()

    def _watch_links(self, count: int) -> None:
        """Ready once the process holds ``count`` BPF links: its programs are attached."""
        while not self.ready.is_set() and self.proc.poll() is None:
            if bpf_links(self.proc.pid) >= count:
                self.ready_at = time.monotonic()
                self.ready.set()
                return
            time.sleep(LINK_POLL)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if self._ready_text and not self.ready.is_set() and self._ready_text in line:
                self.ready_at = time.monotonic()
                self.ready.set()
            if match := self._lost_pattern.search(line):
                self.lost += int(match.group(1))
            self._tail.append(line.rstrip())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = ATTACH_TIMEOUT) -> None:
        """Wait until ``predicate()`` holds; fail at once if the tracer exits first."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                self._thread.join(1)
                raise RuntimeError(
                    f"{' '.join(self.argv)} exited with {self.proc.returncode}: "
                    + " | ".join(self._tail)
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(self.argv)} not ready after {timeout} s")
            time.sleep(0.005)

    def stop(self) -> int:
        """SIGINT, as Ctrl-C would send, then the exit code (negative: ended by a signal).

        SIGINT goes once only: a second one may cut the tracer's cleanup short, so a stop that
        was itself interrupted just waits again when the ``with`` block ends.
        """
        if self.proc.poll() is None and not self._interrupted:
            self._interrupted = True
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(STOP_TIMEOUT)
        return self.proc.returncode

    def __enter__(self) -> Tracer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_igrun(stdout: IO[bytes]) -> Tracer:
    """``igrun trace exec --host -o json``, as a user runs it; attached once the process
    holds a BPF link for each of its programs."""
    argv = [*igrun_command(), "trace", "exec", "--host", "-o", "json"]
    return Tracer(argv, stdout, IGRUN_LOST, ready_links=EXEC_LINKS)


def bpf_links(pid: int) -> int:
    """How many BPF links process ``pid`` holds open."""
    count = 0
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf_link"
    return count


def igrun_pins_left(pid: int) -> list[str]:
    """Pin folders of the igrun process ``pid`` (named ``<pid>-<start time>``) still present.
    Only this pid's: other igrun runs on the host may hold folders of their own."""
    if not PIN_ROOT.is_dir():
        return []
    return sorted(p.name for p in PIN_ROOT.iterdir() if p.name.startswith(f"{pid}-"))


def read_igrun_output(path: Path, marker: str) -> tuple[int, int]:
    """Events whose args hold ``marker``, and the losses of the JSON warn records."""
    seen = lost = 0
    with path.open() as f:
        for line in f:
            record = json.loads(line)
            if record.get("type") == "warn":
                if match := IGRUN_LOST.search(record.get("message", "")):
                    lost += int(match.group(1))
            elif marker in record.get("args", ()):
                seen += 1
    return seen, lost


def proc_status_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (peak resident) of ``pid``, in MB."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) / 1024  # the kernel reports kB
    return figures


def startup(runs: int = 5) -> dict[str, Any]:
    """Launch-to-attached time and memory of ``igrun trace exec --host``, over ``runs`` runs.

    The clock starts just before the process is spawned, so interpreter start, imports, plugin
    discovery, BPF load and attach all count, as they do for a user. Memory is read after about
    a second of tracing a trickle of execs, which it must have seen for the figure to mean much.
    """
    attach_ms: list[float] = []
    rss_mb: list[float] = []
    hwm_mb: list[float] = []
    exit_codes: list[int] = []
    missed: list[int] = []
    pins_left: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            marker = f"igrun-startup-{uuid.uuid4().hex[:12]}"
            out = Path(tmp) / f"startup-{i}.json"
            execs = 0
            with out.open("wb") as stdout, start_igrun(stdout) as igrun:
                igrun.wait_for(igrun.ready.is_set)
                attach_ms.append((igrun.ready_at - igrun.started_at) * 1000)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    subprocess.run([TRUE, marker], check=True)
                    execs += 1
                    time.sleep(0.01)
                status = proc_status_mb(igrun.proc.pid)
                rss_mb.append(status["VmRSS"])
                hwm_mb.append(status["VmHWM"])
                exit_codes.append(igrun.stop())
            seen, _ = read_igrun_output(out, marker)
            missed.append(execs - seen)
            pins_left += igrun_pins_left(igrun.proc.pid)
    return {
        "runs": runs,
        "attach_ms_median": round(statistics.median(attach_ms), 1),
        "attach_ms_max": round(max(attach_ms), 1),
        "attach_ms": [round(ms, 1) for ms in attach_ms],
        "rss_mb_max": round(max(rss_mb), 1),
        "hwm_mb_max": round(max(hwm_mb), 1),
        "exit_codes": exit_codes,
        "trickle_missed": missed,  # execs of the trickle that igrun did not show
        "pins_left": pins_left,
    }


def run_storm(storm: Path, count: int, workers: int, tag: str) -> dict[str, Any]:
    """Run the storm binary and return its JSON summary."""
    argv = [str(storm), "--count", str(count), "--workers", str(workers), "--tag", tag]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def storm_igrun(storm: Path, count: int, workers: int, out_dir: Path) -> dict[str, Any]:
    """The storm under ``igrun trace exec --host -o json`` with its default buffer size."""
    tag = uuid.uuid4().hex[:12]
    out = out_dir / f"igrun-{tag}.json"
    with out.open("wb") as stdout, start_igrun(stdout) as igrun:
        igrun.wait_for(igrun.ready.is_set)
        summary = run_storm(storm, count, workers, tag)
        time.sleep(SETTLE)
        exit_code = igrun.stop()
    seen, lost_json = read_igrun_output(out, f"igrun-storm-{tag}")
    return {
        "expected": count,
        "seen": seen,
        "lost_json": lost_json,  # every exec lost on the host, not only the storm's
        "lost_stderr": igrun.lost,
        "storm_rate": summary["rate"],
        "exit_code": exit_code,
        "pins_left": igrun_pins_left(igrun.proc.pid),
    }


def storm_execsnoop(
    execsnoop: list[str], storm: Path, count: int, workers: int, out_dir: Path
) -> dict[str, Any]:
    """The same storm under libbpf-tools' execsnoop, which prints one line per exec with its
    arguments and reports ``Lost N events on CPU #C!`` on stderr."""
    tag = uuid.uuid4().hex[:12]
    marker = f"igrun-storm-{tag}"
    out = out_dir / f"execsnoop-{tag}.txt"

    def attached() -> bool:
        return EXECSNOOP_HEADER in out.read_text()

    with out.open("wb") as stdout, Tracer(execsnoop, stdout, EXECSNOOP_LOST) as snoop:
        snoop.wait_for(attached)
        summary = run_storm(storm, count, workers, tag)
        time.sleep(SETTLE)
        exit_code = snoop.stop()
    with out.open() as f:
        seen = sum(marker in line for line in f)
    return {
        "expected": count,
        "seen": seen,
        "lost_stderr": snoop.lost,
        "storm_rate": summary["rate"],
        "exit_code": exit_code,
    }


def exec_storm(count: int = 20000, workers: int = 2) -> dict[str, Any]:
    """An exec storm of ``count`` execs from ``workers`` processes under igrun, then under
    execsnoop, plus the storm's rate with no tracer as the baseline."""
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        storm = build_c("storm", out_dir)
        result: dict[str, Any] = {
            "count": count,
            "workers": workers,
            "untraced_rate": run_storm(storm, count, workers, uuid.uuid4().hex[:12])["rate"],
            "igrun": storm_igrun(storm, count, workers, out_dir),
        }
        execsnoop = snoop_command("exec")
        if execsnoop is None:
            result["execsnoop"] = "not installed"
        else:
            result["execsnoop"] = storm_execsnoop(execsnoop, storm, count, workers, out_dir)
    return result


def main() -> None:
    """Every figure as one JSON object; the flags let a run trade precision for time."""
    parser = argparse.ArgumentParser(description="igrun trace exec: startup, memory, exec storm")
    parser.add_argument("--runs", type=int, default=5, help="startup runs")
    parser.add_argument("--count", type=int, default=20000, help="execs in the storm")
    parser.add_argument("--workers", type=int, default=2, help="processes of the storm")
    args = parser.parse_args()
    figures = {"startup": startup(args.runs), "exec_storm": exec_storm(args.count, args.workers)}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
