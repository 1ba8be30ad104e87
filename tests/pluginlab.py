"""Third-party plugins as pip leaves them, for tests that run the real ``igrun`` command.

:func:`plugin_site` writes distributions (a ``dist-info`` folder and a module each) into a
folder every user may read, so the command can also be run as an unprivileged user
(:data:`AS_NOBODY`); the environment it returns puts that folder on ``PYTHONPATH``.

- ``igrun-operator-username`` 0.1.0: operator ``username`` adds the field ``user`` to every
  gadget whose events have a ``uid``, from ``--passwd-file``, which it reads when the run
  starts (so ``--passwd-file /nope`` fails with a plain ``FileNotFoundError``).
- ``igrun-gadget-boom`` 0.2.0: gadget ``trace boom``, pure Python, raises ``KeyError`` once
  running.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
IGRUN = (sys.executable, "-m", "igrun.core.cli")

USERNAME = '''
"""``--passwd-file``: the user name of each event's uid."""

import numpy as np

from igrun.core import PRIORITY_ENRICH, Column, Field, Kind, Operator, ParamDesc, hookimpl


class Username(Operator):
    name = "username"
    description = "the user name of each event's uid"
    priority = PRIORITY_ENRICH
    params = (
        ParamDesc("passwd-file", default="/etc/passwd", description="where names come from"),
    )
    fields = (Field("user", Kind.STR, "user name", column=Column(width=12)),)

    @classmethod
    def can_operate_on(cls, gadget):
        return "uid" in gadget.schema

    @classmethod
    def instantiate(cls, ctx, params):
        self = cls(ctx, params)
        with open(params.get("passwd-file")) as passwd:
            rows = [line.split(":") for line in passwd]
        self.names = {int(row[2]): row[0] for row in rows if len(row) > 2}
        return self

    def process(self, batch):
        distinct, index = np.unique(batch["uid"], return_inverse=True)
        table = np.array([self.names.get(int(u), str(u)) for u in distinct], dtype=object)
        batch.set_column("user", table[index.reshape(-1)])
        return batch


@hookimpl
def igrun_register_operators(register):
    register(Username)
'''

BOOM = '''
"""``trace boom``: a gadget whose run fails with an exception no contract covers."""

from igrun.core import Category, Field, Gadget, Kind, Schema, hookimpl


class TraceBoom(Gadget):
    name = "boom"
    category = Category.TRACE
    description = "fails once running"
    schema = Schema([Field("pid", Kind.UINT, "process id")])

    def run(self, ctx):
        return {}["nope"]


@hookimpl
def igrun_register_gadgets(register):
    register(TraceBoom)
'''

DISTS = {
    "igrun-operator-username": (
        "0.1.0",
        "igrun_operator_username",
        USERNAME,
        "[igrun.operators]\nusername = igrun_operator_username\n",
    ),
    "igrun-gadget-boom": (
        "0.2.0",
        "igrun_gadget_boom",
        BOOM,
        "[igrun.gadgets]\ntrace_boom = igrun_gadget_boom\n",
    ),
}


def plugin_site(root: Path) -> dict[str, str]:
    """Both distributions in ``root`` (made readable by every user); the environment of a
    command that should find them."""
    root.mkdir(parents=True, exist_ok=True)
    for dist, (version, module, source, eps) in DISTS.items():
        info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(eps)
        (root / f"{module}.py").write_text(textwrap.dedent(source).lstrip())
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {k: v for k, v in os.environ.items() if k not in ("IGRUN_PLUGINS", "IGRUN_NO_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
    return env


@contextmanager
def open_folder() -> Iterator[Path]:
    """A fresh folder that an unprivileged user may read (pytest's own are root's only),
    removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="igrun-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
