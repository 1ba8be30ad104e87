"""Plugin discovery: entry points, lazy loading, broken plugins, allow-lists, pip installs."""

from __future__ import annotations

import importlib
import subprocess
import sys
import sysconfig
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from igrun.core.errors import GadgetNotFound
from igrun.core.plugins import PluginRegistry, normalise_name
from igrun.testing import without_ready

FIXTURES = Path(__file__).parent / "fixtures"

GADGET_MODULE = """
from igrun.core import Category, Field, Gadget, Kind, Schema, hookimpl

class {cls}(Gadget):
    name = "{name}"
    category = Category.TRACE
    description = "fake"
    schema = Schema([Field("pid", Kind.UINT)])

@hookimpl
def igrun_register_gadgets(register):
    register({cls})
"""


def make_dist(root: Path, dist: str, version: str, modules: dict[str, str], eps: str) -> None:
    """A distribution as pip leaves it: a dist-info folder and modules on sys.path."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(eps))
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_dist(
        tmp_path,
        "igrun-gadget-fake",
        "1.0",
        {
            "igrun_fake_one": GADGET_MODULE.format(cls="One", name="fakeone"),
            "igrun_fake_two": GADGET_MODULE.format(cls="Two", name="faketwo"),
        },
        """
        [igrun.gadgets]
        trace_fakeone = igrun_fake_one
        trace_faketwo = igrun_fake_two
        """,
    )
    make_dist(
        tmp_path,
        "igrun-gadget-broken",
        "2.3",
        {
            "igrun_broken_import": "raise ImportError('needs libfoo')\n",
            "igrun_broken_register": """
                from igrun.core import hookimpl

                @hookimpl
                def igrun_register_gadgets(register):
                    register(object)
            """,
        },
        """
        [igrun.gadgets]
        trace_brokenimport = igrun_broken_import
        trace_brokenregister = igrun_broken_register
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    for mod in ("igrun_fake_one", "igrun_fake_two"):
        sys.modules.pop(mod, None)
    return tmp_path


def test_names_normalise() -> None:
    assert normalise_name("trace exec") == "trace_exec"
    assert normalise_name("trace_exec") == "trace_exec"
    assert normalise_name("trace-exec") == "trace_exec"


def test_one_gadget_loads_only_its_module(site: Path) -> None:
    reg = PluginRegistry()
    gadget = reg.gadget("trace fakeone")
    assert gadget.id() == "trace_fakeone"
    assert reg.gadget("trace_fakeone") is gadget
    assert reg.provider(gadget) == "igrun-gadget-fake 1.0"
    assert "igrun_fake_one" in sys.modules
    assert "igrun_fake_two" not in sys.modules  # lazy: nothing else was imported
    assert reg.errors == []


def test_unknown_gadget_suggests_close_names(site: Path) -> None:
    with pytest.raises(
        GadgetNotFound,
        match='unknown gadget "trace fakeon" '
        r'\(did you mean "trace fakeone"',
    ):
        PluginRegistry().gadget("trace fakeon")


def test_broken_plugins_are_reported_and_skipped(site: Path) -> None:
    reg = PluginRegistry()
    gadgets = reg.gadgets()
    assert {"trace_fakeone", "trace_faketwo", "trace_exec"} <= set(gadgets)
    errors = {e.entry_point: e for e in reg.errors}
    assert set(errors) == {"trace_brokenimport", "trace_brokenregister"}
    assert errors["trace_brokenimport"].dist == "igrun-gadget-broken"
    assert errors["trace_brokenimport"].version == "2.3"
    assert "needs libfoo" in errors["trace_brokenimport"].message
    assert "not a Gadget subclass" in errors["trace_brokenregister"].message


def test_allow_list_and_block_switch(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builtin = {ep.name for ep in entry_points(group="igrun.gadgets") if ep.dist.name == "igrun"}
    assert "trace_exec" in builtin
    monkeypatch.setenv("IGRUN_PLUGINS", "igrun-gadget-fake")
    reg = PluginRegistry()
    assert {"trace_fakeone", "trace_faketwo"} | builtin == set(reg.gadgets())
    assert reg.errors == []  # the broken distribution was never imported
    monkeypatch.delenv("IGRUN_PLUGINS")
    monkeypatch.setenv("IGRUN_NO_PLUGINS", "1")
    assert set(PluginRegistry().gadgets()) == builtin  # built-ins always load


def test_builtins_register_through_entry_points() -> None:
    ops = {ep.name for ep in entry_points(group="igrun.operators")}
    assert {"filter", "sort", "limit", "output"} <= ops
    reg = PluginRegistry()
    assert {op.name for op in reg.operators()} >= {"filter", "sort", "limit", "output"}
    assert reg.provider(reg.gadget("trace exec")).startswith("igrun ")


def test_pip_installed_package_is_discovered(tmp_path: Path) -> None:
    """A real `pip install` of a gadget package into a fresh venv that sees igrun."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    Path(purelib, "_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-build-isolation",
            "--no-deps",
            str(FIXTURES / "igrun-gadget-example"),
        ],
        check=True,
    )
    probe = (
        "from igrun.core.plugins import PluginRegistry\n"
        "r = PluginRegistry(); g = r.gadget('trace example')\n"
        "print(g.__module__, r.provider(g), g.description)\n"
    )
    out = subprocess.run([python, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == (
        "igrun_gadget_example igrun-gadget-example 0.1.0 An example third-party gadget"
    )
    listed = subprocess.run(
        [python, "-m", "igrun.core.cli", "list"], check=True, capture_output=True, text=True
    ).stdout
    assert any(line.split()[:2] == ["trace", "example"] for line in listed.splitlines())


# ---- the error contract: a plugin's own failure names the plugin ---------------------------

FAILING_MODULE = """
from igrun.core import Category, Field, Gadget, Kind, Schema, hookimpl

class Failing(Gadget):
    name = "failing"
    category = Category.TRACE
    schema = Schema([Field("pid", Kind.UINT)])

    def own(self):
        return {}["missing"]

    def through_igrun(self):
        return self.schema["missing"]  # igrun's code raises, called by the plugin's

@hookimpl
def igrun_register_gadgets(register):
    register(Failing)
"""


def test_blame_names_the_plugin_a_failure_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dist(
        tmp_path, "igrun-gadget-failing", "3.1", {"igrun_failing": FAILING_MODULE},
        "[igrun.gadgets]\ntrace_failing = igrun_failing\n",
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reg = PluginRegistry()
    gadget = reg.gadget("trace failing")()
    for call in (gadget.own, gadget.through_igrun):  # type: ignore[attr-defined]
        with pytest.raises(KeyError) as info:
            call()
        assert reg.blame(info.value) == "plugin trace_failing from igrun-gadget-failing 3.1"
    with pytest.raises(KeyError) as own:
        reg.gadget("trace exec").schema["missing"]  # igrun's own code only
    assert reg.blame(own.value) is None
    try:  # raised from igrun code, caused by the plugin's exception
        try:
            gadget.own()  # type: ignore[attr-defined]
        except KeyError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as wrapped:
        assert reg.blame(wrapped) == "plugin trace_failing from igrun-gadget-failing 3.1"


@pytest.mark.bpf
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["trace", "exec", "--passwd-file", "/nope"],
            "plugin username from igrun-operator-username 0.1.0: FileNotFoundError: "
            "[Errno 2] No such file or directory: '/nope' (-v for details)",
        ),
        (
            ["trace", "boom"],
            "plugin trace_boom from igrun-gadget-boom 0.2.0: KeyError: 'nope' (-v for details)",
        ),
    ],
)
def test_a_plugins_failure_is_one_line_naming_it(
    tmp_path: Path, args: list[str], line: str
) -> None:
    """An operator's and a gadget's exception outside the contract: one line, exit code 1,
    the distribution and version, and nothing of the run left pinned."""
    from pluginlab import IGRUN, plugin_site

    env = plugin_site(tmp_path / "site")
    proc = subprocess.Popen(
        [*IGRUN, *args, "-t", "5s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert without_ready(err) == f"igrun: error: {line}\n"
    pins = Path("/sys/fs/bpf/gadget")
    assert not [d for d in pins.iterdir() if d.name.startswith(f"{proc.pid}-")]
