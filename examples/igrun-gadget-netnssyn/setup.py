"""The BPF build step needs a setup.py; everything else is in pyproject.toml."""

from setuptools import setup

from igrun.core.bpfbuild import BuildBpf

setup(cmdclass={"build_py": BuildBpf})
