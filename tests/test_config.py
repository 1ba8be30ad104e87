"""Config files: runs with their params and operator chains, checked before anything loads,
several gadgets at once, and the precedence flags > environment > file > defaults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import containerlab
import pytest
from clilab import IGRUN, igrun
from pluginlab import AS_NOBODY, NOBODY, open_folder, plugin_site

import igrun.testing as testing

if TYPE_CHECKING:
    from conftest import IgrunCli


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
    assert run["params"] == {"cwd": False, "ignore-errors": False}
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
    assert run["operators"][-1] == {"name": "output", "with": {"output": "yaml"}}
    assert [op["name"] for op in run["operators"]] == ["containers", "output"]  # always on


def unique_true(tmp_path: Path) -> Path:
    """A copy of /bin/true with a name (so a comm) no other process has."""
    path = tmp_path / f"cfg{uuid.uuid4().hex[:10]}"
    shutil.copy("/bin/true", path)
    return path


@pytest.mark.bpf
def test_precedence_flags_environment_file(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """The file asks for JSON, a filter on both programs and a 30 s timeout; the environment
    shortens the timeout; a flag adds a filter on ours to the file's."""
    ours, other = unique_true(tmp_path), unique_true(tmp_path)
    path = tmp_path / "config.toml"
    path.write_text(
        '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "30s"}\n'
        'operators = [{name = "containers", with = {host = true}}, '
        '{name = "filter", with = {filter = "comm:~^cfg"}}, '
        '{name = "output", with = {output = "json"}}]\n'
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
    assert event["args"] == [str(ours)] and "ret" not in event and child.returncode == 0
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
    assert open_event["path"] == str(target) and "err" not in open_event  # 0: omitempty
    assert reader.returncode == 0
    assert igrun_cli.pin_dirs_of(proc.pid) == []


@pytest.mark.bpf
def test_a_chain_without_containers_keeps_the_container_selection(
    igrun_cli: IgrunCli, tmp_path: Path, rootfs: Path
) -> None:
    """A chain that does not name ``containers`` still traces only containers, and its
    events still say which: host processes are not silently traced instead."""
    path = tmp_path / "config.toml"
    path.write_text(
        '[[run]]\ngadget = "trace exec"\n'
        'operators = [{name = "output", with = {output = "json"}}]\n'
    )
    ours = unique_true(tmp_path)
    with containerlab.runc_container(rootfs, tmp_path / "bundle", {}) as box:
        mntns = box.mntns
        proc = igrun_cli.start("--config", str(path))
        subprocess.run([str(ours)], check=True)
        time.sleep(2.5)  # the container runs sleep every second
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e for e in events if e["args"] == [str(ours)]] == []  # a host process
    in_box = [e for e in events if e["mountnsid"] == mntns]  # its sleeps
    assert in_box and {e["runtime"]["containerId"] for e in in_box} == {box.id}
    assert all(e["runtime"]["containerId"] for e in events)  # other containers may run


def test_config_view_shows_containers_in_a_chain_that_forgot_it(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[[run]]\ngadget = "trace exec"\noperators = [{name = "output"}]\n')
    view = igrun("--config", str(path), "config", "view")
    assert view.returncode == 0, view.stderr
    (run,) = tomllib.loads(view.stdout)["run"]
    assert [op["name"] for op in run["operators"]] == ["containers", "output"]


@pytest.mark.bpf
def test_a_run_that_fails_leaves_the_others_going(tmp_path: Path) -> None:
    """A failure only a running run can meet (its metrics port is taken) ends that run alone."""
    program = unique_true(tmp_path)
    metrics = tmp_path / "metrics.toml"
    metrics.write_text('[[counters]]\nname = "opens_total"\n')
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    path = tmp_path / "config.toml"
    path.write_text(
        f'[[run]]\ngadget = "trace exec"\nruntime = {{timeout = "3s"}}\n'
        f'operators = [{{name = "containers", with = {{host = true}}}}, '
        f'{{name = "filter", with = {{filter = ["comm:{program.name[:15]}"]}}}}, '
        f'{{name = "output", with = {{output = "json"}}}}]\n'
        f'[[run]]\ngadget = "trace open"\n'
        f'operators = [{{name = "prometheus", with = {{metrics-config = "{metrics}", '
        f'metrics-listen-address = "127.0.0.1:{port}"}}}}]\n'
    )
    proc = testing.IgrunCli().start("--config", str(path))  # without -v: stderr is exact
    subprocess.run([str(program)], check=True)
    out, err = proc.communicate(timeout=30)
    taken.close()
    assert proc.returncode == 1
    assert [line for line in err.splitlines() if line.startswith("igrun:")] == [
        f"igrun: error: trace open: cannot serve metrics on 127.0.0.1:{port}: "
        "Address already in use"
    ]
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


# ---- a chain is checked as a whole, before anything starts ---------------------------------


@pytest.fixture(scope="module")
def plugins() -> Iterator[tuple[Path, dict[str, str]]]:
    """A folder every user may read, with the username operator (adds ``user``) installed
    in it; the environment that finds it."""
    with open_folder() as folder:
        yield folder, plugin_site(folder / "site")


def config_as_nobody(
    folder: Path, env: dict[str, str], name: str, text: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Write a config an unprivileged user may read and run it as that user."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    path = folder / name
    path.write_text(text)
    path.chmod(0o644)
    result = subprocess.run(
        [*AS_NOBODY, *IGRUN, "--config", str(path)],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip
    return path, result


@pytest.mark.parametrize(
    ("chain", "where", "why"),
    [
        (
            '{name = "filter", with = {filter = "user:nobody"}}, {name = "username"}',
            "run[0].operators[0]",
            'invalid filter "user:nobody": column "user" is added by operator "username", '
            "which comes after filter in this chain",
        ),
        (
            '{name = "filter", with = {filter = "user:nobody"}}',
            "run[0].operators[0]",
            'invalid filter "user:nobody": column "user" is added by operator "username", '
            "which is not in this chain",
        ),
        (
            '{name = "sort", with = {sort = "-runtime.containerName"}}, {name = "containers"}',
            "run[0].operators[0]",
            'invalid sort "-runtime.containerName": column "runtime.containerName" is added '
            'by operator "containers", which comes after sort in this chain',
        ),
        (
            '{name = "username"}, {name = "output", with = {output = "columns=pid,usr"}}',
            "run[0].operators[1]",
            'invalid output "columns=pid,usr": no column "usr" (did you mean "user"?)',
        ),
    ],
)
def test_a_chain_that_cannot_work_is_refused_without_root(
    plugins: tuple[Path, dict[str, str]], chain: str, where: str, why: str
) -> None:
    folder, env = plugins
    name = f"{uuid.uuid4().hex[:8]}.toml"
    text = f'[[run]]\ngadget = "trace exec"\noperators = [{chain}]\n'
    path, result = config_as_nobody(folder, env, name, text)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"igrun: error: config {path}: {where}: {why}\n"
    assert result.stdout == ""


def test_every_run_of_a_config_is_checked_before_any_starts(
    plugins: tuple[Path, dict[str, str]],
) -> None:
    folder, env = plugins
    text = (
        '[[run]]\ngadget = "trace exec"\n'
        '[[run]]\ngadget = "trace open"\n'
        'operators = [{name = "containers"}, {name = "sort", with = {sort = "-fdd"}}]\n'
    )
    path, result = config_as_nobody(folder, env, "two.toml", text)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f'igrun: error: config {path}: run[1].operators[1]: invalid sort "-fdd": '
        'no column "fdd" (did you mean "fd"?)\n'
    )


def test_a_chain_in_the_right_order_passes_the_checks(
    plugins: tuple[Path, dict[str, str]],
) -> None:
    folder, env = plugins
    text = (
        '[[run]]\ngadget = "trace exec"\n'
        'operators = [{name = "username"}, {name = "filter", with = {filter = "user:nobody"}}]\n'
    )
    _, result = config_as_nobody(folder, env, "right.toml", text)
    assert result.stderr == "igrun: error: igrun needs root to load BPF programs (try sudo)\n"
    assert result.returncode == 1


@pytest.mark.bpf
def test_a_filter_on_an_operators_field_after_it(
    plugins: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The third-party field, filtered where the chain has it: exact events of a real exec."""
    _, env = plugins
    program = unique_true(tmp_path)
    program.chmod(0o755)
    tmp_path.chmod(0o755)
    passwd = tmp_path / "passwd"
    passwd.write_text(f"root:x:0:0::/root:/bin/sh\nalice:x:{NOBODY}:{NOBODY}::/:/bin/sh\n")
    path = tmp_path / "c.toml"
    path.write_text(
        '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "20s"}\n'
        'operators = [{name = "containers", with = {host = true}}, '
        f'{{name = "username", with = {{passwd-file = "{passwd}"}}}}, '
        '{name = "filter", with = {filter = "user:alice"}}, '
        '{name = "output", with = {output = "json"}}]\n'
    )
    proc = testing.IgrunCli().start("--config", str(path), env=env)
    subprocess.run([*AS_NOBODY, str(program)], check=True)
    subprocess.run([str(program)], check=True)  # root's: filtered out
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    mine = [e for e in map(json.loads, out.splitlines()) if e["args"] == [str(program)]]
    assert [(e["user"], e["uid"], e["gid"]) for e in mine] == [("alice", NOBODY, NOBODY)]


@pytest.mark.bpf
def test_a_plugins_failure_in_one_run_names_the_plugin_and_the_others_go_on(
    plugins: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _, env = plugins
    program = unique_true(tmp_path)
    path = tmp_path / "c.toml"
    path.write_text(
        '[[run]]\ngadget = "trace open"\n'
        'operators = [{name = "username", with = {passwd-file = "/nope"}}]\n'
        '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "20s"}\n'
        'operators = [{name = "containers", with = {host = true}}, '
        f'{{name = "filter", with = {{filter = "comm:{program.name[:15]}"}}}}, '
        '{name = "output", with = {output = "json"}}]\n'
    )
    proc = testing.IgrunCli().start("--config", str(path), env=env)  # trace exec is ready
    subprocess.run([str(program)], check=True)
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 1
    assert [line for line in err.splitlines() if line.startswith("igrun:")] == [
        "igrun: error: trace open: plugin username from igrun-operator-username 0.1.0: "
        "FileNotFoundError: [Errno 2] No such file or directory: '/nope' (-v for details)"
    ]
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert event["gadget"] == "trace exec" and event["args"] == [str(program)]
