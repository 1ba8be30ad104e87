"""Compile gadget BPF C sources to CO-RE objects at build time.

Gadgets ship their BPF programs as ``*.bpf.o`` package data so that nothing is compiled when a
gadget runs. This module is the one place that knows how, and it runs where igrun is not
installed, so it imports nothing but the standard library and setuptools:

- igrun's own ``setup.py`` loads it by path (igrun is what is being built);
- a gadget package's build gets it as ``igrun_build``, a wheel of this file and igrun's BPF
  headers that ``python -m igrun.core.bpf.buildhelper DIR`` writes (docs/authoring.md). The
  gadget's build environment then holds setuptools and this module, not numpy, pydantic or
  cffi. Its ``pyproject.toml`` names the two commands below::

      [tool.setuptools.cmdclass]
      build_py = "igrun_build.BuildBpf"
      bdist_wheel = "igrun_build.BdistWheel"

Everything a build writes (``vmlinux.h``, the objects) goes to the build folder, not next to
the sources (but for a lenient editable install: see ``BuildBpf``).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from setuptools.command.bdist_wheel import bdist_wheel  # type: ignore[import-untyped]
from setuptools.command.build_py import build_py  # type: ignore[import-untyped]

_ARCH = {
    "x86_64": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "s390x": "s390",
    "ppc64le": "powerpc",
}
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
_HERE = Path(__file__).resolve().parent


def include_dir() -> Path:
    """Where igrun's BPF helper headers (``igrun/*.h``) are.

    In the ``igrun_build`` helper they sit beside this file (``include/``). In igrun, ``core/``
    and ``plugins/`` are siblings both in the source tree and once installed (``igrun/core``,
    ``igrun/plugins``), so one relative path serves both.
    """
    shipped = _HERE / "include"
    return shipped if shipped.is_dir() else _HERE.parents[1] / "plugins" / "include"


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
    """Compile one ``*.bpf.c`` file to a CO-RE object with BTF, stripped of DWARF.

    ``vmlinux.h`` is made in ``build_dir`` (once: it is some 3 MB of this host's kernel types).
    """
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


def _stale(source: Path, output: Path) -> bool:
    """Whether ``output`` is older than its source or any header it may include."""
    if not output.exists():
        return True
    deps = [source, *include_dir().rglob("*.h"), *source.parent.glob("*.h")]
    return output.stat().st_mtime < max(d.stat().st_mtime for d in deps)


def compile_tree(root: Path, build_dir: Path | None = None) -> list[Path]:
    """Compile every ``*.bpf.c`` below ``root`` next to its source, when out of date.

    For trees that are no package (the benchmark's objects); packages use ``BuildBpf``.
    """
    built = []
    for source in sorted(root.rglob("*.bpf.c")):
        if "build" in source.relative_to(root).parts:
            continue
        output = source.with_suffix(".o")
        if _stale(source, output):
            built.append(compile_bpf(source, output, [source.parent], build_dir))
    return built


class BuildBpf(build_py):  # type: ignore[misc]
    """``build_py`` that also compiles each package's ``*.bpf.c`` into the package.

    Objects and ``vmlinux.h`` are made in ``<build>/bpf/`` (kept between builds: only what is
    out of date is compiled again) and copied into the built package; a strict editable install
    links to them there. The source tree is never written, except by a lenient editable install,
    which can only see objects next to their sources.
    """

    def _links_sources(self) -> bool:
        """Whether this is an editable install that maps the packages to their source folders
        (setuptools' default, lenient mode): it sees no object that is not next to its source.
        A strict one (``--config-settings editable_mode=strict``) links to the build folder."""
        if not self.editable_mode:
            return False
        mode = self.distribution.get_command_obj("editable_wheel").mode
        return str(mode or "lenient").lower() != "strict"

    def _bpf_objects(self) -> list[tuple[Path, Path, Path]]:
        """``(source, object in the build folder, object in the built package)`` of each
        ``*.bpf.c`` directly in a package (subpackages are packages of their own)."""
        base = Path(self.get_finalized_command("build").build_base, "bpf")
        in_tree = self._links_sources()
        jobs = []
        for package in self.packages or ():
            parts = package.split(".")
            for source in sorted(Path(self.get_package_dir(package)).glob("*.bpf.c")):
                name = source.name.removesuffix(".c") + ".o"
                built = source.with_name(name) if in_tree else base.joinpath(*parts, name)
                jobs.append((source, built, Path(self.build_lib, *parts, name)))
        return jobs

    def run(self) -> None:
        jobs = self._bpf_objects()
        base = Path(self.get_finalized_command("build").build_base, "bpf")
        for source, built, _ in jobs:
            if _stale(source, built):
                compile_bpf(source, built, [source.parent], base)
        super().run()  # copies package data: a stale object in the sources must not win
        if not self.editable_mode:
            for _, built, target in jobs:
                self.copy_file(str(built), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = super().get_outputs(include_bytecode)
        if self.editable_mode:  # already in the mapping below
            return outputs
        return [*outputs, *(str(target) for _, _, target in self._bpf_objects())]

    def get_output_mapping(self) -> dict[str, str]:
        mapping: dict[str, str] = super().get_output_mapping()
        mapping.update({str(target): str(built) for _, built, target in self._bpf_objects()})
        return mapping


class BdistWheel(bdist_wheel):  # type: ignore[misc]
    """A wheel tagged for the architecture its objects were built for (``py3-none-<platform>``).

    A BPF object is no pure Python: it is little- or big-endian like the host that built it,
    and ``__TARGET_ARCH_*`` picks the register layout its programs read. Any Python 3 on that
    architecture can load it.
    """

    def finalize_options(self) -> None:
        # Installed as extensions are (platlib, the wheel's root), not as pure Python.
        self.distribution.has_ext_modules = lambda: True
        super().finalize_options()

    def get_tag(self) -> tuple[str, str, str]:
        platform_tag: str = super().get_tag()[2]
        return "py3", "none", platform_tag
