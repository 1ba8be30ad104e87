"""What ``igrun traceloop`` costs the workloads it records, and everything else.

Three workloads run in a podman container (busybox, with the host's /usr mounted read-only for
the compiler), each timed inside the container: a loop of ``getppid`` (the worst case: a
syscall that does nothing, ns per call), ``tar`` of a tree of 2,000 small files (ms), and
``gcc -O2 -c`` of six C files (ms). They run under four conditions, in turns, ``--rounds``
times each, and the medians are compared:

- ``none``: igrun not running;
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

IMAGE = "localhost/igrun-test-busybox:latest"
RESULTS = Path(__file__).resolve().parent / "results"
CONDITIONS = ("none", "traced", "other", "host")

LOOP_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
static double now_ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
int main(int argc, char **argv) {
	if (argc > 2 && argv[1][0] == 'g') { /* getppid N: ns per call */
		long n = atol(argv[2]);
		double a = now_ms();
		for (long i = 0; i < n; i++)
			syscall(SYS_getppid);
		printf("%.1f\n", (now_ms() - a) * 1e6 / n);
		return 0;
	}
	double a = now_ms(); /* CMD...: ms it took */
	pid_t p = fork();
	int st = 0;
	if (p == 0) {
		execvp(argv[1], argv + 1);
		_exit(127);
	}
	waitpid(p, &st, 0);
	printf("%.3f\n", now_ms() - a);
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


def podman_env(folder: Path) -> dict[str, str]:
    conf = folder / "containers.conf"
    conf.write_text(
        '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        '[engine]\nruntime = "runc"\n'
    )
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


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
    for i in range(6):
        body = "\n".join(
            f"int f{i}_{j}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += k * {j}; "
            f"return s ^ x; }}"
            for j in range(150)
        )
        (src / f"u{i}.c").write_text(body + "\n")


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
                        "traced": ["-c", name],
                        "other": ["-c", "no-such-container"],
                        "host": ["--host"],
                    }[condition]
                    proc = start_igrun(args) if args is not None else None
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
        finally:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], env=env, capture_output=True)
    medians = {c: {w: statistics.median(v) for w, v in s.items()} for c, s in samples.items()}
    slowdown = {
        c: {w: round(100 * (medians[c][w] / medians["none"][w] - 1), 1) for w in WORKLOADS}
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
        "slowdown_percent": slowdown,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"traceloop-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'condition':<10}" + "".join(f"{w:>22}" for w in WORKLOADS))
    for c in CONDITIONS:
        cells = "".join(
            f"{medians[c][w]:>14.1f}"
            + (f" ({slowdown[c][w]:+5.1f}%)" if c in slowdown else " " * 8)
            for w in WORKLOADS
        )
        print(f"{c:<10}{cells}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
