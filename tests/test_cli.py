"""The launcher: one clear line and the right exit code for every kind of bad input."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from clilab import IGRUN, fresh_registry, run  # noqa: F401 (fresh_registry: autouse)

from igrun.core import plugins
from igrun.core.bpf.build import compile_bpf
from igrun.core.cli import main as cli

VERSION = version("igrun")  # defined once, in pyproject.toml

HERE = Path(__file__).parent


AFTER_HOST_CHECK = pytest.mark.bpf
"""Operators read their params after the host check: without root these say "needs root"."""
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to drop it)")


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["trace", "exce"], 2, 'unknown gadget "trace exce" (did you mean "trace exec"?)'),
        (["trace_exce"], 2, 'unknown gadget "trace exce" (did you mean "trace exec"?)'),
        (["nope"], 2, "unknown command 'nope'"),
        (["trace", "-x"], 2, "igrun trace: name a gadget (see 'igrun trace --help')"),
        (["list", "--bogus"], 2, "igrun list: unrecognized arguments: --bogus"),
        (["list", "-o", "xml"], 2, "igrun list: argument -o/--output: invalid choice: 'xml'"),
        (["list", "nope"], 2, "igrun list: argument category: invalid choice: 'nope'"),
        (["version", "--bogus"], 2, "igrun version: unrecognized arguments: --bogus"),
        (["completion", "tcsh"], 2, "igrun completion: argument shell: invalid choice: 'tcsh'"),
        (["completion"], 2, "igrun completion: the following arguments are required: shell"),
        (["man", "--bogus"], 2, "igrun man: unrecognized arguments: --bogus"),
        (["config", "show"], 2, "igrun config: argument action: invalid choice: 'show'"),
        (["list-containers", "--bogus"], 2, "igrun list-containers: unrecognized arguments"),
        (["trace", "exec", "--bogus"], 2, "unrecognized arguments: --bogus"),
        pytest.param(
            ["trace", "exec", "-F", "pidd:1"],
            2,
            'invalid filter "pidd:1": no column "pidd"',
            marks=AFTER_HOST_CHECK,
        ),
        pytest.param(
            ["trace", "exec", "-F", "pid:x"],
            2,
            'invalid filter "pid:x": pid is a number',
            marks=AFTER_HOST_CHECK,
        ),
        pytest.param(
            ["trace", "exec", "--sort", "-nope"],
            2,
            'invalid sort "-nope": no column "nope"',
            marks=AFTER_HOST_CHECK,
        ),
        pytest.param(
            ["trace", "exec", "-o", "columns=+nope"], 2, 'no column "nope"', marks=AFTER_HOST_CHECK
        ),
        pytest.param(
            ["trace", "exec", "-o", "xml"], 2, 'invalid output "xml"', marks=AFTER_HOST_CHECK
        ),
        (["trace", "exec", "-t", "soon"], 2, "--timeout: 'soon' is not a duration"),
        (["trace", "exec", "-m", "-1"], 2, "--max-rows: '-1'"),
        (["trace", "exec", "--ignore-errors=maybe"], 2, "--ignore-errors: 'maybe' is not a"),
    ],
)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str
) -> None:
    got, out, err = run(capsys, *argv)
    assert got == code
    assert out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("igrun: error: ")
    assert message in lines[0]


def test_list_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["CATEGORY", "GADGET", "DESCRIPTION", "PACKAGE"]
    assert ["trace", "exec", "Trace", "new", "processes", "igrun", VERSION] in rows
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "trace exec" in out
    code, out, _ = run(capsys, "trace", "exec", "--help")
    assert code == 0
    assert "--ignore-errors" in out and "-F FILTER, --filter FILTER" in out
    assert "* pid" in out and "  truncated" in out  # fields, default columns marked
    code, out, _ = run(capsys, "--version")
    assert out == f"igrun {VERSION}\n"


@NEEDS_ROOT
def test_not_root_is_one_line() -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    proc = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *IGRUN, "trace", "exec"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr == "igrun: error: igrun needs root to load BPF programs (try sudo)\n"


@pytest.mark.bpf
def test_missing_bpffs_is_one_line() -> None:
    """In a mount namespace without bpffs, the run says how to mount it."""
    script = "umount /sys/fs/bpf && exec " + " ".join(IGRUN) + " trace exec -t 1s"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == (
        "igrun: error: bpffs is not mounted at /sys/fs/bpf: mount it with "
        "'mount -t bpf bpf /sys/fs/bpf'\n"
    )


REJECTED_GADGET = """
from igrun.core import Category, Field, Kind, Schema, hookimpl
from igrun.core.tracer import BpfTracer

class Rejected(BpfTracer):
    name = "rejected"
    category = Category.TRACE
    bpf_object = "rejected.bpf.o"
    schema = Schema([Field("pid", Kind.UINT)], struct="event")

@hookimpl
def igrun_register_gadgets(register):
    register(Rejected)
"""


@pytest.mark.bpf
def test_verifier_rejection_shows_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    package = tmp_path / "igrun_rejected"
    package.mkdir()
    (package / "__init__.py").write_text(REJECTED_GADGET)
    compile_bpf(
        HERE / "bpf" / "rejected.bpf.c", package / "rejected.bpf.o", build_dir=tmp_path / "build"
    )
    info = tmp_path / "igrun_rejected-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: igrun-rejected\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[igrun.gadgets]\ntrace_rejected = igrun_rejected\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    code, _, err = run(capsys, "trace", "rejected", "-t", "1s")
    assert code == 1
    assert err.startswith("igrun: error: ")
    assert "the kernel refused to load it: Permission denied (errno 13)" in err
    assert "invalid mem access 'map_value_or_null'" in err
    assert "Traceback" not in err
    assert not list(Path("/sys/fs/bpf/gadget").glob(f"{__import__('os').getpid()}-*"))


def test_no_btf_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from igrun.core.run import local as runtime

    monkeypatch.setattr(runtime, "VMLINUX_BTF", tmp_path / "vmlinux")
    if __import__("os").geteuid() != 0:
        pytest.skip("the root check comes first")
    code, out, err = run(capsys, "trace", "exec", "-t", "1s")
    assert code == 1 and out == ""
    assert err == (
        f"igrun: error: this kernel has no BTF ({tmp_path / 'vmlinux'} is missing): "
        "CO-RE gadgets cannot load\n"
    )


def test_help_lists_the_fields_operators_add(capsys: pytest.CaptureFixture[str]) -> None:
    """Every field -F, --sort and -o columns= accept, each operator's marked with its name."""
    from igrun.operators.containers import ENRICHED_NAMES

    code, out, _ = run(capsys, "trace", "exec", "--help")
    assert code == 0
    fields = out[out.index("fields (for -F") :].splitlines()[1:]
    origin = {line.lstrip(" *").split()[0]: line for line in fields}
    assert list(origin)[:3] == ["timestamp", "mntns", "pid"]
    for name in ENRICHED_NAMES:
        assert origin[name].endswith(" [operator containers]"), origin[name]
    assert origin["runtime.containerName"].startswith("  * ")  # shown by default
    assert origin["k8s.pod"].startswith("    ")
    assert not any("[operator" in origin[name] for name in ("pid", "comm", "args"))


def test_help_lists_a_third_party_operators_fields() -> None:
    """Where the operator applies (events with a uid), and only there."""
    from pluginlab import open_folder, plugin_site

    with open_folder() as folder:
        env = plugin_site(folder / "site")
        exec_help = subprocess.run(
            [*IGRUN, "trace", "exec", "--help"], capture_output=True, text=True, env=env
        ).stdout
        boom_help = subprocess.run(
            [*IGRUN, "trace", "boom", "--help"], capture_output=True, text=True, env=env
        ).stdout
    lines = exec_help.splitlines()
    assert [line.split() for line in lines if "[operator username]" in line] == [
        ["*", "user", "str", "user", "name", "[operator", "username]"]
    ]
    assert "--passwd-file PASSWD-FILE" in exec_help
    boom_fields = boom_help[boom_help.index("fields (for -F") :].splitlines()[1:]
    assert [line.split() for line in boom_fields] == [["*", "pid", "uint", "process", "id"]]


def test_igruns_own_bug_is_an_internal_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_list", broken)
    code, out, err = run(capsys, "list")
    assert (code, out) == (1, "")
    assert err == "igrun: internal error: RuntimeError: a bug (-v for details)\n"


@pytest.mark.parametrize(
    ("name", "code"), [("ParamError", 2), ("EnvironmentProblem", 1), ("RunError", 1)]
)
def test_the_exceptions_of_the_plugin_contract(
    capsys: pytest.CaptureFixture[str], name: str, code: int
) -> None:
    """What docs/authoring.md promises a plugin that raises one of them: its message as one
    line, and the exit code of its kind (raised here from a check: before the host check)."""
    import igrun.core as api

    exc = getattr(api, name)(f"{name} from the plugin")

    class Raising(api.Operator):
        name = "raising"

        @classmethod
        def check(cls, plan: api.RunPlan, params: api.Params, schema: api.Schema) -> None:
            raise exc

    plugins.registry().add_operator(Raising, "igrun-operator-raising 1.0")
    got, out, err = run(capsys, "trace", "exec")
    assert (got, out) == (code, "")
    assert err == f"igrun: error: {name} from the plugin\n"
