"""The examples and the test gadget packages use igrun's public API only: ``igrun.core`` and
``igrun.testing``, no submodule and no underscore name; and every public name resolves,
those imported on first use included."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import igrun.core

REPO = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = {"igrun.core", "igrun.testing"}
AUTHORED = sorted(
    [
        *(REPO / "examples").rglob("*.py"),
        REPO / "tests" / "pluginlab.py",
        REPO / "tests" / "netns_syn.py",
    ]
)


def is_igrun(module: str) -> bool:
    return module == "igrun" or module.startswith("igrun.")


def igrun_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every import from igrun in ``path``, the plugin code that
    pluginlab writes out included (it is source in a string)."""
    out: list[tuple[str, str]] = []
    trees = [ast.parse(path.read_text())]
    for node in ast.walk(trees[0]):
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and "import" in text:
            try:
                trees.append(ast.parse(textwrap.dedent(text)))
            except SyntaxError:
                continue
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and is_igrun(node.module or ""):
                out += [(node.module or "", alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                out += [(a.name, "") for a in node.names if is_igrun(a.name)]
    return out


@pytest.mark.parametrize("path", AUTHORED, ids=[str(p.relative_to(REPO)) for p in AUTHORED])
def test_authored_code_imports_only_public_names(path: Path) -> None:
    imports = igrun_imports(path)
    internal = [f"{m} {n}".strip() for m, n in imports if m not in PUBLIC_MODULES]
    private = [f"{m}.{n}" for m, n in imports if n.startswith("_")]
    assert internal == [] and private == []


def test_the_examples_are_checked() -> None:
    names = {p.parent.name for p in AUTHORED}
    assert {"igrun_gadget_unlink", "igrun_gadget_netnssyn", "igrun_operator_droproot"} <= names
    assert any(igrun_imports(p) for p in AUTHORED)


def test_every_public_name_resolves() -> None:
    for name in igrun.core.__all__:
        assert getattr(igrun.core, name) is not None, name
    assert not any(name.startswith("_") for name in igrun.core.__all__)


def test_importing_the_package_does_not_load_the_c_extension() -> None:
    """``import igrun.core`` stays light: the extension loads with BpfTracer and the like."""
    code = (
        "import sys, igrun.core\n"
        "assert 'igrun.core._libbpf' not in sys.modules\n"
        "from igrun.core import BpfTracer\n"
        "assert 'igrun.core._libbpf' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
