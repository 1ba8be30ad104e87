"""Build the throughput benchmark: the burst BPF objects and the two C programs.

The BPF objects are compiled by igrun's own build step (``compile_tree``), next to their
sources, so the benchmark measures objects built exactly as gadgets are. The load generator
and the reference consumer are plain C over the system libbpf.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from igrun.core.bpf.build import compile_tree

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUT = BENCH_DIR / "build"
PROGRAMS = ("loadgen", "refconsumer")


def _libbpf_flags() -> list[str]:
    out = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "libbpf"], check=True, capture_output=True, text=True
    ).stdout
    # libbpf's static dependencies, which its .pc file does not always list.
    return [*shlex.split(out), "-lelf", "-lz"]


def _compile_c(source: Path, output: Path) -> None:
    if output.exists() and output.stat().st_mtime >= source.stat().st_mtime:
        return
    cmd = ["cc", "-O2", "-Wall", "-o", str(output), str(source), *_libbpf_flags()]
    subprocess.run(cmd, check=True)


def build(out_dir: Path = DEFAULT_OUT) -> dict[str, Path]:
    """Compile what is out of date and return where each part is."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # vmlinux.h goes to out_dir, not to the working directory's build/.
    compile_tree(BENCH_DIR, out_dir / "bpf")
    paths = {name: out_dir / name for name in PROGRAMS}
    for name, path in paths.items():
        _compile_c(BENCH_DIR / f"{name}.c", path)
    return {
        **paths,
        "ring": BENCH_DIR / "burst_ring.bpf.o",
        "perf": BENCH_DIR / "burst_perf.bpf.o",
    }


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for name, path in build(out).items():
        print(f"{name}: {path}")
