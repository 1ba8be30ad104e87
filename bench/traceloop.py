"""What ``igrun traceloop`` costs the workloads it records, and everything else.

Three workloads run in a podman container (busybox, with the host's /usr mounted read-only for
the compiler), each timed inside the container: a loop of ``getppid`` (the worst case: a
syscall that does nothing, ns per call), ``tar`` of a tree of 2,000 small files (ms), and
``gcc -O2 -c`` of three C files (ms). They run under four conditions, in turns, ``--rounds``
times each. Each is timed in CPU time (user + system, its children's too), which the
recording adds to (the programs run in the traced task) but other work on the machine does
not; the medians and the minimums are compared:

- ``none``: igrun not running;
- ``hooks``: two empty programs on ``sys_enter`` and ``sys_exit``: the floor any recorder of
  syscalls pays, as the kernel takes its slower syscall path for every process while a
  syscall tracepoint has a user;
- ``traced``: ``igrun traceloop -c <the container>``;
- ``other``: ``igrun traceloop -c <another name>``: the container is not recorded, but its
  syscalls pass the hooks (what every process not selected pays);
- ``host``: ``igrun traceloop --host``: every container and the host recorded.

Writes ``bench/results/traceloop-<time>.json`` and prints a table (root, podman and gcc)::

    sudo .venv/bin/python bench/traceloop.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.objects import BpfObject

sys.path.insert(0, str(Path(__file__).resolve().parent))
from podmanlab import IMAGE, ensure_image, podman_env

RESULTS = Path(__file__).resolve().parent / "results"
CONDITIONS = ("none", "hooks", "traced", "other", "host")

EMPTY_C = r"""
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
SEC("tp_btf/sys_enter") int enter(void *ctx) { return 0; }
SEC("tp_btf/sys_exit") int leave(void *ctx) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/wait.h>
static double cpu_ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
int main(int argc, char **argv) {
	if (argc > 2 && argv[1][0] == 'g') { /* getppid N: CPU ns per call */
		long n = atol(argv[2]);
		double a = cpu_ms();
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		printf("%.1f\n", (cpu_ms() - a) * 1e6 / n);
		return 0;
	}
	pid_t p = fork(); /* CMD...: the CPU ms it and its children took (user + system) */
	int st = 0;
	struct rusage ru;
	if (p == 0) {
		execvp(argv[1], argv + 1);
		_exit(127);
	}
	waitpid(p, &st, 0);
	getrusage(RUSAGE_CHILDREN, &ru);
	printf("%.3f\n", (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
			(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3);
	return WEXITSTATUS(st);
}
"""

WORKLOADS = {
    "getppid_ns": ["/bench/work", "g", "1000000"],
    "tar_ms": ["/bench/work", "tar", "cf", "/tmp/x.tar", "-C", "/bench", "tree"],
    "gcc_ms": [
        "/bench/work", "sh", "-c",
        "for f in /bench/src/*.c; do gcc -O2 -c $f -o /tmp/$(basename $f).o || exit 1; done",
    ],
}  # fmt: skip


def prepare(folder: Path) -> None:
    (folder / "work.c").write_text(LOOP_C)
    subprocess.run(
        ["gcc", "-O2", "-static", "-o", str(folder / "work"), str(folder / "work.c")], check=True
    )
    for d in range(20):
        sub = folder / "tree" / f"d{d}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f}.c").write_bytes(os.urandom(2048))
    src = folder / "src"
    src.mkdir()
    for i in range(3):
        body = "\n".join(
            f"int f{i}_{j}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += k * {j}; "
            f"return s ^ x; }}"
            for j in range(150)
        )
        (src / f"u{i}.c").write_text(body + "\n")


def empty_hooks(folder: Path) -> BpfObject:
    """Two programs that do nothing, attached to the syscall tracepoints."""
    source = folder / "empty.bpf.c"
    if not source.exists():
        source.write_text(EMPTY_C)
        compile_bpf(source, folder / "empty.bpf.o", build_dir=folder / "build")
    obj = BpfObject.open(folder / "empty.bpf.o")
    obj.load()
    obj.attach_all()
    return obj


def start_igrun(args: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "igrun.core.cli", "traceloop", *args, "-o", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "[info] ready" in line:
            return proc
    raise RuntimeError(f"igrun traceloop {' '.join(args)} ended before it was ready")


def stop_igrun(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(2)
    proc.communicate(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="igrun-tl-bench-") as tmp:
        folder = Path(tmp)
        prepare(folder)
        env = podman_env(folder)
        ensure_image(env)
        name = f"igrun-tl-bench-{uuid.uuid4().hex[:6]}"
        mounts = [f"{folder}:/bench:ro", "/usr:/usr:ro"]
        mounts += [f"{d}:{d}:ro" for d in ("/lib", "/lib64") if Path(d).is_dir()]
        subprocess.run(
            ["podman", "run", "-d", "--pull=never", "--network", "none", "--name", name,
             *(a for m in mounts for a in ("-v", m)), "-e", "PATH=/usr/bin:/bin",
             IMAGE, "sh", "-c", "while true; do sleep 1; done"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        samples: dict[str, dict[str, list[float]]] = {
            c: {w: [] for w in WORKLOADS} for c in CONDITIONS
        }
        try:
            for _ in range(opts.rounds):
                for condition in CONDITIONS:
                    args = {
                        "none": None,
                        "hooks": [],
                        "traced": ["-c", name],
                        "other": ["-c", "no-such-container"],
                        "host": ["--host"],
                    }[condition]
                    proc = start_igrun(args) if args is not None and args else None
                    hooks = empty_hooks(folder) if condition == "hooks" else None
                    try:
                        for workload, cmd in WORKLOADS.items():
                            out = subprocess.run(
                                ["podman", "exec", name, *cmd],
                                env=env, check=True, capture_output=True, text=True,
                            )  # fmt: skip
                            samples[condition][workload].append(float(out.stdout.split()[-1]))
                    finally:
                        if proc is not None:
                            stop_igrun(proc)
                        if hooks is not None:
                            hooks.close()
        finally:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], env=env, capture_output=True)
    medians = {c: {w: statistics.median(v) for w, v in s.items()} for c, s in samples.items()}
    minimums = {c: {w: min(v) for w, v in s.items()} for c, s in samples.items()}

    def slowdown(table: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        return {
            c: {w: round(100 * (table[c][w] / table["none"][w] - 1), 1) for w in WORKLOADS}
            for c in CONDITIONS
            if c != "none"
        }

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "rounds": opts.rounds,
        "samples": samples,
        "median": medians,
        "minimum": minimums,
        "slowdown_percent_median": slowdown(medians),
        "slowdown_percent_minimum": slowdown(minimums),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"traceloop-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for what, table in (("median", medians), ("minimum", minimums)):
        slow = slowdown(table)
        print(f"{what:<10}" + "".join(f"{w:>22}" for w in WORKLOADS))
        for c in CONDITIONS:
            cells = "".join(
                f"{table[c][w]:>14.1f}" + (f" ({slow[c][w]:+5.1f}%)" if c in slow else " " * 8)
                for w in WORKLOADS
            )
            print(f"{c:<10}{cells}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
