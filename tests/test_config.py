"""Config files: runs with their params and operator chains, checked before anything loads,
several gadgets at once, and the precedence flags > environment > file > defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import igrun.testing as testing

if TYPE_CHECKING:
    from conftest import IgrunCli

IGRUN = [sys.executable, "-m", "igrun.core.cli"]


def igrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IGRUN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[run]]\ngadget = "trace exec"\noperators = [{name = "filter"}, '
            '{name = "sort", with = {limit = 3}}]\n',
            "run[0].operators[1].with.limit: Extra inputs are not permitted",
        ),
        ('[[run]]\ngadget = "trace exce"\n', 'run[0].gadget: unknown gadget "trace exce"'),
        (
            '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "soon"}\n',
            "'soon' is not a duration",
        ),
        ('[[run]]\ngadgets = "trace exec"\n', "run[0].gadget: Field required"),
        ('[[run]]\ngadget = "trace exec"\noperators = [{name = "nope"}]\n', "no operator 'nope'"),
        ('[[run]]\ngadget = "trace exec"\nparams = {ignore-errors = "maybe"}\n', "not a boolean"),
        ("x = [", "not TOML"),
    ],
)
def test_a_bad_config_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    result = igrun("--config", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"igrun: error: config {path}: ")
    assert message in result.stderr and result.stderr.count("\n") == 1


def test_default_config_is_complete_and_valid(tmp_path: Path) -> None:
    result = igrun("config", "default", "trace", "exec")
    assert result.returncode == 0, result.stderr
    (run,) = tomllib.loads(result.stdout)["run"]
    assert run["gadget"] == "trace exec"
    assert run["params"] == {"ignore-errors": False}
    names = [op["name"] for op in run["operators"]]
    known = [n for n in names if n in ("containers", "filter", "sort", "limit", "output")]
    assert known == ["containers", "filter", "sort", "limit", "output"]  # in chain order
    assert names[-1] == "output"
    path = tmp_path / "config.toml"
    path.write_text(result.stdout)
    assert igrun("config", "view", "--config", str(path)).stdout == result.stdout


def test_view_shows_environment_over_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "5s", interval = "2s"}\n'
        'operators = [{name = "output", with = {output = "yaml"}}]\n'
    )
    result = igrun("config", "view", "--config", str(path), env={"IGRUN_TIMEOUT": "1s"})
    (run,) = tomllib.loads(result.stdout)["run"]
    assert run["runtime"]["timeout"] == "1s"  # environment beats the file
    assert run["runtime"]["interval"] == "2s"  # the file beats the default
    assert run["operators"] == [{"name": "output", "with": {"output": "yaml"}}]


def unique_true(tmp_path: Path) -> Path:
    """A copy of /bin/true with a name (so a comm) no other process has."""
    path = tmp_path / f"cfg{uuid.uuid4().hex[:10]}"
    shutil.copy("/bin/true", path)
    return path


@pytest.mark.bpf
def test_precedence_flags_environment_file(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """The file asks for JSON, a filter on our program and a 30 s timeout; the environment
    shortens the timeout; a flag replaces the filter."""
    ours, other = unique_true(tmp_path), unique_true(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[[run]]\ngadget = "trace exec"\nruntime = {{timeout = "30s"}}\n'
        f'operators = [{{name = "containers", with = {{host = true}}}}, '
        f'{{name = "filter", with = {{filter = "comm:{other.name[:15]}"}}}}, '
        f'{{name = "output", with = {{output = "json"}}}}]\n'
    )
    proc = igrun_cli.start(
        "--config", str(path), "trace", "exec", "-F", f"comm:{ours.name[:15]}",
        env={**os.environ, "IGRUN_TIMEOUT": "4s"},
    )  # fmt: skip
    started = time.monotonic()
    child = subprocess.run([str(ours)])
    subprocess.run([str(other)])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - started < 10  # 4 s from the environment, not 30 s from the file
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["args"] == [str(ours)] and event["retval"] == child.returncode == 0
    assert "runtime" in event  # containers is in the chain


@pytest.mark.bpf
def test_several_gadgets_at_once(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    program = unique_true(tmp_path)
    target = tmp_path / f"opened-{uuid.uuid4().hex[:8]}"
    target.write_text("x")
    opener = tmp_path / f"op{uuid.uuid4().hex[:10]}"
    shutil.copy(sys.executable, opener)
    comm_filter = f'{{name = "filter", with = {{filter = ["comm:{program.name[:15]}"]}}}}'
    path = tmp_path / "config.toml"
    path.write_text(
        f'[[run]]\ngadget = "trace exec"\n'
        f'operators = [{{name = "containers", with = {{host = true}}}}, {comm_filter}, '
        f'{{name = "output", with = {{output = "json"}}}}]\n'
        f'[[run]]\ngadget = "trace open"\n'
        f'operators = [{{name = "containers", with = {{host = true}}}}, '
        f'{{name = "filter", with = {{filter = ["comm:{opener.name[:15]}", "path:{target}"]}}}}, '
        f'{{name = "output", with = {{output = "json"}}}}]\n'
    )
    proc = igrun_cli.start("--config", str(path), runs=2)
    pins = igrun_cli.pin_dirs_of(proc.pid)
    assert len(pins) == 1 and sorted(p.name for p in pins[0].iterdir()) == ["run0", "run1"]
    subprocess.run([str(program)], check=True)
    reader = subprocess.run([str(opener), "-c", f"open({str(target)!r}).read()"], check=True)
    time.sleep(0.3)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    by_gadget = {e["gadget"] for e in events}
    assert by_gadget == {"trace exec", "trace open"}
    (exec_event,) = [e for e in events if e["gadget"] == "trace exec"]
    assert exec_event["args"] == [str(program)]
    (open_event,) = [e for e in events if e["gadget"] == "trace open"]
    assert open_event["path"] == str(target) and open_event["err"] == 0
    assert reader.returncode == 0
    assert igrun_cli.pin_dirs_of(proc.pid) == []


@pytest.mark.bpf
def test_a_chain_from_the_file_is_exactly_that_chain(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """Without the containers operator in the chain, events carry no container fields."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "1s"}\n'
        'operators = [{name = "output", with = {output = "json"}}]\n'
    )
    proc = igrun_cli.start("--config", str(path))
    subprocess.run(["/bin/true"], check=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events and all("runtime" not in e for e in events)
    assert any(e["args"] == ["/bin/true"] for e in events)  # host processes: no selection


@pytest.mark.bpf
def test_a_run_that_fails_leaves_the_others_going(tmp_path: Path) -> None:
    program = unique_true(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[[run]]\ngadget = "trace exec"\nruntime = {{timeout = "3s"}}\n'
        f'operators = [{{name = "containers", with = {{host = true}}}}, '
        f'{{name = "filter", with = {{filter = ["comm:{program.name[:15]}"]}}}}, '
        f'{{name = "output", with = {{output = "json"}}}}]\n'
        f'[[run]]\ngadget = "trace open"\n'
        f'operators = [{{name = "filter", with = {{filter = ["nope:1"]}}}}]\n'
    )
    proc = testing.IgrunCli().start("--config", str(path))  # without -v: stderr is exact
    subprocess.run([str(program)], check=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert testing.without_ready(err) == (
        'igrun: error: trace open: invalid filter "nope:1": no column "nope"\n'
    )
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["gadget"] == "trace exec" and event["args"] == [str(program)]


@pytest.mark.bpf
def test_the_user_default_file_gives_a_gadget_its_defaults(tmp_path: Path) -> None:
    folder = tmp_path / "igrun"
    folder.mkdir()
    (folder / "config.toml").write_text(
        '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "1s"}\n'
        'operators = [{name = "output", with = {output = "json"}}]\n'
    )
    result = igrun("trace", "exec", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert all(line.startswith("{") for line in result.stdout.splitlines())
