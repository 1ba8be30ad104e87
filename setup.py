"""cffi_modules and the BPF build step need a setup.py; everything else is in pyproject.toml."""

import importlib.util

from setuptools import setup

_spec = importlib.util.spec_from_file_location("igrun_bpfbuild", "core/bpf/build.py")
assert _spec and _spec.loader
bpfbuild = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bpfbuild)

setup(cffi_modules=["csrc/build.py:ffibuilder"], cmdclass={"build_py": bpfbuild.BuildBpf})
