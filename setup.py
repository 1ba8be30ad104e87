"""cffi_modules, the BPF build step and the ``igrun`` command (a small C program) need a
setup.py; everything else is in pyproject.toml."""

import importlib.util
from types import ModuleType

from setuptools import setup


def _load(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bpfbuild = _load("igrun_bpfbuild", "core/bpf/build.py")
launcher = _load("igrun_launcherbuild", "csrc/launcher_build.py")

setup(
    cffi_modules=["csrc/build.py:ffibuilder"],
    cmdclass={"build_py": bpfbuild.BuildBpf, "build_scripts": launcher.BuildLauncher},
    scripts=["csrc/launcher.c"],  # compiled into the igrun command by BuildLauncher
)
