"""Compile gadget BPF C sources to CO-RE objects at build time.

Gadgets ship their BPF programs as ``*.bpf.o`` package data so that nothing is compiled when a
gadget runs. This module is the one place that knows how: igrun's own ``setup.py`` loads it by
path (igrun is not installed yet while it builds itself) and third-party gadget packages use it
through their ``setup.py``::

    from igrun.core.bpfbuild import BuildBpf
    setup(cmdclass={"build_py": BuildBpf})

It imports nothing but the standard library and setuptools for that reason.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from setuptools.command.build_py import build_py  # type: ignore[import-untyped]

_ARCH = {
    "x86_64": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "s390x": "s390",
    "ppc64le": "powerpc",
}
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
HEADER_DIR = Path(__file__).resolve().parent.parent / "plugins" / "include"


def include_dir() -> Path:
    """Where igrun's BPF helper headers (``igrun/*.h``) are.

    ``core/`` and ``plugins/`` are siblings both in the source tree and once installed
    (``igrun/core``, ``igrun/plugins``), so one relative path serves both.
    """
    return HEADER_DIR


def ensure_vmlinux_h(out_dir: Path) -> Path:
    """Write ``vmlinux.h`` from the build host's BTF (CO-RE relocates it on other kernels)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "vmlinux.h"
    if target.exists() and target.stat().st_size > 0:
        return target
    bpftool = shutil.which("bpftool") or "/usr/sbin/bpftool"
    if not VMLINUX_BTF.exists():
        raise RuntimeError(
            f"cannot build BPF objects: {VMLINUX_BTF} is missing (kernel without BTF)"
        )
    text = subprocess.run(
        [bpftool, "btf", "dump", "file", str(VMLINUX_BTF), "format", "c"],
        check=True,
        capture_output=True,
    ).stdout
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(text)
    tmp.replace(target)
    return target


def compile_bpf(
    source: Path, output: Path, include_dirs: Iterable[Path] = (), build_dir: Path | None = None
) -> Path:
    """Compile one ``*.bpf.c`` file to a CO-RE object with BTF, stripped of DWARF."""
    clang = os.environ.get("IGRUN_CLANG", "clang")
    build_dir = build_dir or Path(os.environ.get("IGRUN_BPF_BUILD_DIR", "build/bpf"))
    vmlinux_dir = ensure_vmlinux_h(build_dir).parent
    arch = _ARCH.get(platform.machine(), platform.machine())
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        clang,
        "-g",
        "-O2",
        "-target",
        "bpf",
        f"-D__TARGET_ARCH_{arch}",
        "-Wall",
        "-Wno-unused-function",
        f"-I{vmlinux_dir}",
        f"-I{include_dir()}",
        *(f"-I{d}" for d in include_dirs),
        "-I/usr/include/" + platform.machine() + "-linux-gnu",
        "-c",
        str(source),
        "-o",
        str(output),
    ]
    subprocess.run(cmd, check=True)
    llvm_strip = shutil.which("llvm-strip") or shutil.which("llvm-strip-14")
    if llvm_strip:  # keep BTF, drop DWARF: objects shrink ~5x
        subprocess.run([llvm_strip, "-g", str(output)], check=True)
    return output


def compile_tree(root: Path, build_dir: Path | None = None) -> list[Path]:
    """Compile every ``*.bpf.c`` below ``root`` next to its source, when out of date."""
    built = []
    headers = list(include_dir().rglob("*.h"))
    for source in sorted(root.rglob("*.bpf.c")):
        if "build" in source.relative_to(root).parts:
            continue
        output = source.with_suffix(".o")
        deps = [source, *headers, *source.parent.glob("*.h")]
        if output.exists() and output.stat().st_mtime >= max(d.stat().st_mtime for d in deps):
            continue
        built.append(compile_bpf(source, output, [source.parent], build_dir))
    return built


class BuildBpf(build_py):  # type: ignore[misc]
    """``build_py`` that compiles the BPF sources of every package first."""

    def run(self) -> None:
        roots = {Path(self.get_package_dir(pkg)) for pkg in self.packages or ()}
        for root in sorted(roots):
            if root.is_dir():
                compile_tree(root, Path(self.build_lib).parent / "bpf")
        super().run()
