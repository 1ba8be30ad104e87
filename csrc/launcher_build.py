"""Build step for the ``igrun`` command: ``launcher.c`` compiled into the scripts folder.

The command is a small C program rather than a Python script so that it can block the stop
signals before the interpreter starts (see ``launcher.c``); setuptools installs it like a
script (``setup.py`` lists ``csrc/launcher.c`` as one, and this command compiles instead of
copying it).
"""

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools.dist import Distribution

SOURCE = Path(__file__).resolve().parent / "launcher.c"
_BuildScripts = Distribution().get_command_class("build_scripts")  # distutils', via setuptools


class BuildLauncher(_BuildScripts):  # type: ignore[misc,valid-type]
    """``build_scripts`` that compiles ``launcher.c`` into the ``igrun`` command."""

    def run(self) -> None:
        out = Path(self.build_dir) / "igrun"
        out.parent.mkdir(parents=True, exist_ok=True)
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        python = sys.executable.replace("\\", "\\\\").replace('"', '\\"')
        command = [*cc, "-O2", "-Wall", "-Werror", f'-DIGRUN_PYTHON="{python}"', "-o", str(out)]
        # Static where the C library allows it: no dynamic loader runs before the signals
        # are blocked (a few hundred microseconds less of a window).
        static = [*command, "-static", str(SOURCE)]
        if subprocess.run(static, capture_output=True, check=False).returncode != 0:
            subprocess.run([*command, str(SOURCE)], check=True)
        out.chmod(0o755)
