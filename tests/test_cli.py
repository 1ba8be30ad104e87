"""The launcher: one clear line and the right exit code for every kind of bad input."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from igrun.core import cli, plugins
from igrun.core.bpfbuild import compile_bpf

# The version is defined once, in pyproject.toml; igrun reads it from its installed metadata.
PYPROJECT = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]

HERE = Path(__file__).parent
IGRUN = [sys.executable, "-m", "igrun.core.cli"]


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "_default", None)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["trace", "exce"], 2, 'unknown gadget "trace exce" (did you mean "trace exec"?)'),
        (["trace_exce"], 2, 'unknown gadget "trace exce" (did you mean "trace exec"?)'),
        (["nope"], 2, "unknown command 'nope'"),
        (["trace"], 2, "igrun trace: name a gadget"),
        (["trace", "exec", "--bogus"], 2, "unrecognized arguments: --bogus"),
        (["trace", "exec", "-F", "pidd:1"], 2, 'invalid filter "pidd:1": no column "pidd"'),
        (["trace", "exec", "-F", "pid:x"], 2, 'invalid filter "pid:x": pid is a number'),
        (["trace", "exec", "--sort", "-nope"], 2, 'invalid sort "-nope": no column "nope"'),
        (["trace", "exec", "-o", "columns=+nope"], 2, 'no column "nope"'),
        (["trace", "exec", "-o", "xml"], 2, 'invalid output "xml"'),
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
    from igrun.core import runtime

    monkeypatch.setattr(runtime, "VMLINUX_BTF", tmp_path / "vmlinux")
    if __import__("os").geteuid() != 0:
        pytest.skip("the root check comes first")
    code, out, err = run(capsys, "trace", "exec", "-t", "1s")
    assert code == 1 and out == ""
    assert err == (
        f"igrun: error: this kernel has no BTF ({tmp_path / 'vmlinux'} is missing): "
        "CO-RE gadgets cannot load\n"
    )
