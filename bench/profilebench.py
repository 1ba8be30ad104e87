"""What ``profile cpu`` costs, and how fast it names stacks.

**Overhead.** ``igrun profile cpu --host`` runs at its default frequency (ig's 49 Hz on every
online CPU) for ``--seconds`` while one busy loop per CPU keeps every CPU running user code,
so every sample is taken and counted (an idle CPU's samples stop early in the program). The
cost is measured, not estimated:

- igrun's own CPU time (user + system, ``/proc/<pid>/stat``) between its ``ready`` line and
  the end of the sampling window: the steady state (its 100 ms ticks and the once-a-second look
  at new processes); its start (loading) and its end (reading the maps, naming the frames,
  writing the result) are reported apart, once per run;
- the BPF program's own time: the kernel's ``run_time_ns`` of the program, read from
  ``/proc/<igrun pid>/fdinfo`` of its program fd, counted while BPF statistics are on (this
  script turns them on with ``BPF_ENABLE_STATS`` for as long as it runs).

The sum over the window, divided by the window's CPU capacity (seconds × CPUs), is the
overhead; per CPU it is the same figure. Not counted: the timer interrupt that perf takes on
each sample before the program runs (the same a ``perf record`` at that rate pays).

**Naming.** ``--stacks`` distinct stacks (10,000 by default) of real addresses: kernel ones
from ``/proc/kallsyms``' text symbols, user ones inside this process's executable mappings
(python, libc, numpy's libraries...), ``--depth`` frames each, half user, half kernel. They
are named by the gadget's own code
(``symbolize_rows``) from a stand-in for the BPF stack map that answers ``lookup_many`` from
memory: cold (a new symbolizer: kallsyms and every ELF file read) and warm (tables cached).

Run as root: ``nox -s profilebench`` or ``python bench/profilebench.py --seconds 30``; prints
a table and writes ``bench/results/profile-<time>.json`` (``--out FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BUSY = "while True: pass"


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def prog_stats(pid: int) -> tuple[int, int]:
    """``(run_time_ns, run_cnt)`` summed over the BPF programs ``pid`` holds."""
    ns = cnt = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        run = re.search(r"run_time_ns:\s+(\d+)", info)
        count = re.search(r"run_cnt:\s+(\d+)", info)
        ns += int(run.group(1)) if run else 0
        cnt += int(count.group(1)) if count else 0
    return ns, cnt


def overhead(seconds: float) -> dict[str, Any]:
    from igrun.core.bpf.objects import RunTimeStats, online_cpus

    cpus = len(online_cpus())
    stats = RunTimeStats()
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(cpus)]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "igrun.core.cli", "profile", "cpu", "--host", "-o", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        started = time.monotonic()
        for line in proc.stderr:
            if " ready " in line:
                break
        else:
            raise SystemExit(f"igrun ended before it was ready (exit {proc.wait()})")
        ready = time.monotonic()
        cpu0, (ns0, cnt0) = cpu_seconds(proc.pid), prog_stats(proc.pid)
        time.sleep(seconds)
        cpu1, (ns1, cnt1) = cpu_seconds(proc.pid), prog_stats(proc.pid)
        window = time.monotonic() - ready
        end = time.monotonic()
        proc.send_signal(2)
        out, _ = proc.communicate(timeout=120)
        ended = time.monotonic()
    finally:
        for b in busy:
            b.kill()
            b.wait()
        stats.close()
    # The last reading: once igrun has exited its CPU time is in no /proc file; the end's cost
    # is measured as wall time of the reading, naming and writing (one thread, CPU bound).
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    user_s = cpu1 - cpu0
    bpf_s = (ns1 - ns0) / 1e9
    capacity = window * cpus
    return {
        "cpus": cpus,
        "frequency_hz": 49,
        "window_s": round(window, 3),
        "igrun_cpu_s": round(user_s, 4),
        "bpf_run_time_s": round(bpf_s, 6),
        "bpf_runs": cnt1 - cnt0,
        "bpf_ns_per_run": round((ns1 - ns0) / max(cnt1 - cnt0, 1)),
        "expected_runs": round(49 * cpus * window),
        "overhead_percent": round(100 * (user_s + bpf_s) / capacity, 4),
        "igrun_percent": round(100 * user_s / capacity, 4),
        "bpf_percent": round(100 * bpf_s / capacity, 4),
        "startup_wall_s": round(ready - started, 3),
        "startup_cpu_s": round(cpu0, 3),
        "result_wall_s": round(ended - end, 3),
        "rows": len(rows),
        "samples": sum(r.get("count", 0) for r in rows),
    }


class MemoryStacks:
    """The BPF stack map's ``lookup_many`` over stacks held in memory."""

    def __init__(self, frames: np.ndarray[Any, Any]) -> None:
        self.frames = frames
        self.value_size = frames.shape[1] * 8

    def lookup_many(self, ids: np.ndarray[Any, Any]) -> tuple[Any, Any]:
        rows = self.frames[ids.astype(np.int64)]
        return rows.view(np.uint8).reshape(len(ids), -1), np.ones(len(ids), bool)


def naming(stacks: int, depth: int) -> dict[str, Any]:
    from igrun.plugins.profile_cpu import MAX_STACK_DEPTH, ROW, symbolize_rows
    from igrun.plugins.profile_cpu.symbolize import KernelSymbols, Symbolizer

    rng = np.random.default_rng(1)
    kernel = KernelSymbols()
    kaddrs = kernel.addrs[kernel.addrs > 0]
    exec_maps: list[tuple[int, int]] = []
    sym = Symbolizer()
    for line in Path(f"/proc/{os.getpid()}/maps").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 6 and "x" in parts[1] and parts[5].startswith("/"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            exec_maps.append((lo, hi))
    half = depth // 2
    frames = np.zeros((2 * stacks, MAX_STACK_DEPTH), np.uint64)
    for i in range(stacks):  # user stacks: ids 0..n-1; kernel stacks: n..2n-1
        picks = rng.integers(0, len(exec_maps), half)
        frames[i, :half] = [rng.integers(*exec_maps[p]) for p in picks]
        frames[stacks + i, :half] = kaddrs[rng.integers(0, len(kaddrs), half)] + 1
    rows = np.zeros(stacks, ROW)
    rows["pid"] = os.getpid()
    rows["user_stack_id"] = np.arange(stacks)
    rows["kern_stack_id"] = np.arange(stacks) + stacks
    rows["comm"] = b"python"
    rows["count"] = 1
    distinct = len({tuple(r) for r in frames[:stacks, :half].tolist()}) + len(
        {tuple(r) for r in frames[stacks:, :half].tolist()}
    )
    store = MemoryStacks(frames)
    out: dict[str, Any] = {"stacks": stacks, "depth": depth, "distinct_stacks": distinct}
    # The first call reads kallsyms and the ELF files; the best of three runs of each kind is
    # kept (other work on the machine only ever adds to a run's time).
    for label in ("cold", "warm"):
        walls, cpus = [], []
        for _ in range(3):
            if label == "cold":
                sym = Symbolizer()
            t0, c0 = time.perf_counter(), time.process_time()
            user, kern = symbolize_rows(sym, store, rows)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            if label == "cold":
                sym.close()
        out[f"{label}_wall_s"] = round(min(walls), 4)
        out[f"{label}_cpu_s"] = round(min(cpus), 4)
    named = sum(1 for u in user.tolist() for f in u if "+0x" not in f)
    out["user_frames"] = int(sum(len(u) for u in user.tolist()))
    out["user_frames_named"] = named
    out["kernel_frames"] = int(sum(len(k) for k in kern.tolist()))
    out["load_average"] = os.getloadavg()[0]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--stacks", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": os.uname().release,
        "naming": naming(args.stacks, args.depth),
    }
    if not args.skip_overhead:
        result["overhead"] = overhead(args.seconds)
    out = args.out or RESULTS / f"profile-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    n = result["naming"]
    print("| measure | value |\n|---|---|")
    print(f"| naming {n['stacks']:,} stacks of {n['depth']} frames, cold | {n['cold_wall_s']} s |")
    print(f"| naming {n['stacks']:,} stacks of {n['depth']} frames, warm | {n['warm_wall_s']} s |")
    if "overhead" in result:
        o = result["overhead"]
        print(f"| window | {o['window_s']} s on {o['cpus']} busy CPUs at 49 Hz |")
        print(f"| igrun CPU in the window | {o['igrun_cpu_s']} s ({o['igrun_percent']} %) |")
        print(f"| BPF program time | {o['bpf_run_time_s']} s ({o['bpf_percent']} %), "
              f"{o['bpf_runs']} runs, {o['bpf_ns_per_run']} ns each |")  # fmt: skip
        print(f"| overhead | {o['overhead_percent']} % of the CPUs |")
        print(f"| start / result | {o['startup_wall_s']} s / {o['result_wall_s']} s wall |")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
