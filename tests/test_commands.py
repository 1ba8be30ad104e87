"""The command line around the gadgets: list, version, man, completion scripts, config view
without a file, runtime flags after --config, filters added to a file's, SIGTERM, and -v."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import containerlab
import pytest
from clilab import IGRUN, fresh_registry, igrun, run  # noqa: F401 (fresh_registry: autouse)

from igrun import testing
from igrun.core import plugins
from igrun.core.cli.flags import version_text

if TYPE_CHECKING:
    from conftest import IgrunCli

BIN = str(Path(sys.executable).parent)
"""Where the ``igrun`` script is installed next to this interpreter (the scripts call it)."""


def unique_program(tmp_path: Path, source: str = "/bin/true") -> Path:
    path = tmp_path / f"p{uuid.uuid4().hex[:12]}"
    shutil.copy(source, path)
    return path


# ---- list, a category, version, man ----------------------------------------------------------


def test_list_of_a_category_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "list", "trace", "-o", "json")
    assert (code, err) == (0, "")
    records = json.loads(out)
    assert {r["category"] for r in records} == {"trace"}
    exec_record = next(r for r in records if r["name"] == "exec")
    assert exec_record["description"] == "Trace new processes"
    assert exec_record["package"] == f"igrun {version_text()}"
    names = {g.name for g in plugins.registry().gadgets().values() if g.category.value == "trace"}
    assert {r["name"] for r in records} == names


def test_list_help_is_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list", "--help")
    assert code == 0
    assert out.startswith("usage: igrun list [-h] [-o {columns,json}]")
    assert "CATEGORY" not in out.splitlines()[0]  # not the table


@pytest.mark.parametrize("argv", [["trace"], ["trace", "--help"]])
def test_a_category_alone_lists_its_gadgets(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    assert out.startswith("usage: igrun trace <gadget> [flags]\n")
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    names = {g.name for g in plugins.registry().gadgets().values() if g.category.value == "trace"}
    assert listed == sorted(names)


def test_version_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "version") == (0, f"igrun {version_text()}\n", "")
    assert run(capsys, "--version") == (0, f"igrun {version_text()}\n", "")


def test_man_page_from_the_parsers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "man")
    assert code == 0 and out.startswith(f'.TH IGRUN 1 "" "igrun {version_text()}"')
    for gadget in plugins.registry().gadgets().values():
        shown = gadget.full_name().replace("-", "\\-")  # roff's minus: top block\-io
        assert f".SS igrun {shown}\n" in out
    exec_section = out[out.index(".SS igrun trace exec") : out.index(".SS igrun trace fsslower")]
    assert "\\fB\\-F\\fR, \\fB\\-\\-filter\\fR \\fIFILTER\\fR" in exec_section
    assert "\\fB\\-\\-ignore\\-errors\\fR" in exec_section
    if shutil.which("man") is None:
        return
    shown = subprocess.run(
        ["man", "-l", "-"],
        input=out,
        capture_output=True,
        text=True,
        env={**os.environ, "MANWIDTH": "100"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "igrun trace exec" in shown.stdout and "-F, --filter FILTER" in shown.stdout


# ---- completion ------------------------------------------------------------------------------


def bash_complete(words: list[str], line: str) -> list[str]:
    """Source ``igrun completion bash`` in bash and complete ``line``: ``words`` are
    COMP_WORDS as bash splits them (``:`` and ``=`` are words of their own)."""
    quoted = " ".join(f"'{w}'" for w in words)
    script = f"""
source <(igrun completion bash)
COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({quoted}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_igrun
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_script_registers_the_completion() -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(
        ["bash", "-c", "source <(igrun completion bash) && complete -p igrun"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "complete -o default -F _igrun igrun\n")


@pytest.mark.parametrize(
    ("words", "line", "expected"),
    [
        (["igrun", "tr"], "igrun tr", ["trace", "traceloop"]),
        (["igrun", "trace", "ex"], "igrun trace ex", ["exec"]),
        (["igrun", "trace", "exec", "--so"], "igrun trace exec --so", ["--sort"]),
        (["igrun", "trace", "exec", "-F", "co"], "igrun trace exec -F co", ["comm:"]),
        (
            ["igrun", "trace", "exec", "--sort", "-pp"],
            "igrun trace exec --sort -pp",
            ["-ppid"],
        ),
        (
            ["igrun", "trace", "exec", "--sort", "pid,-pp"],
            "igrun trace exec --sort pid,-pp",
            ["pid,-ppid"],
        ),
        (
            ["igrun", "trace", "exec", "-o", "columns", "=", "pid,pp"],
            "igrun trace exec -o columns=pid,pp",
            ["pid,ppid"],
        ),
        (
            ["igrun", "trace", "exec", "-o", "columns", "=", "runtime.containerN"],
            "igrun trace exec -o columns=runtime.containerN",
            ["runtime.containerName"],
        ),
        (["igrun", "trace", "exec", "-o", "j"], "igrun trace exec -o j", ["json", "jsonpretty"]),
        (["igrun", "list", "-o", ""], "igrun list -o ", ["columns", "json"]),
        (["igrun", "completion", "z"], "igrun completion z", ["zsh"]),
        (["igrun", "config", "view", "trace", "ex"], "igrun config view trace ex", ["exec"]),
    ],
)
def test_bash_completes(words: list[str], line: str, expected: list[str]) -> None:
    assert bash_complete(words, line) == expected


def test_bash_completes_after_a_colon_and_an_equals_sign() -> None:
    """bash replaces its word ``=`` (or ``:``) with the answer: the answer keeps it."""
    words = ["igrun", "trace", "exec", "-o", "columns", "="]
    got = bash_complete(words, "igrun trace exec -o columns=")
    assert "=pid" in got and "=+runtime.containerName" in got and "=-comm" in got
    assert all(c.startswith("=") for c in got)


def test_completion_loads_no_bpf(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Completing a gadget's flags opens no BPF object, and takes well under a second."""
    from igrun.core.bpf import objects

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("completion opened a BPF object")

    monkeypatch.setattr(objects.BpfObject, "open", refuse)
    code, out, _ = run(capsys, "__complete", "words", "--", "trace", "exec", "-F", "pi")
    assert (code, out) == (0, "pid:\n")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    started = time.monotonic()
    proc = subprocess.run(
        ["igrun", "__complete", "words", "--", "trace", "exec", "--sort", "-p"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    took = time.monotonic() - started
    assert proc.stdout.splitlines() == ["-pid", "-ppid"]
    assert took < 3.0, took  # about 0.5 s on a loaded 2-CPU machine


def test_completion_offers_running_containers(tmp_path: Path, rootfs: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("container state needs root")
    with containerlab.runc_container(rootfs, tmp_path / "bundle", {}) as box:
        words = ["igrun", "trace", "exec", "-c", box.name[:-1]]
        assert bash_complete(words, " ".join(words)) == [box.name]


ZSH_CALL = """
autoload -U compinit; compinit -u; source <(igrun completion zsh)
compadd() { while [[ $1 != -- ]]; do shift; done; shift; (( $# )) && print -rl -- "$@"; true }
_files() { print FILES }
words=(%s); CURRENT=${#words}; _igrun
"""
"""``_igrun`` called as zsh's completion system would, with ``compadd`` printing what it
is given (a real completion needs a terminal)."""


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["igrun", "trace", "ex"], ["exec"]),
        (["igrun", "trace", "exec", "-F", "co"], ["comm:"]),
        (["igrun", "trace", "exec", "-o", "columns=pid,pp"], ["columns=pid,ppid"]),
    ],
)
@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_complete(shell: str, words: list[str], expected: list[str]) -> None:
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    if shell == "fish":
        line = " ".join(words)
        check = ["fish", "-c", f"igrun completion fish | source; complete -C '{line}'"]
    else:
        quoted = " ".join(f"'{w}'" for w in words)
        check = ["zsh", "-c", ZSH_CALL % quoted]
    proc = subprocess.run(check, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_a_config_file_completes_as_a_file(shell: str, tmp_path: Path) -> None:
    """After ``--config`` igrun offers nothing, and each shell offers files."""
    (tmp_path / "c.toml").write_text("")
    assert igrun("__complete", "words", "--", "--config", "").stdout == ""
    if shell == "bash":
        assert bash_complete(["igrun", "--config", ""], "igrun --config ") == []  # -o default
        return
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    if shell == "fish":
        line = f"igrun --config {tmp_path}/"
        check = ["fish", "-c", f"igrun completion fish | source; complete -C '{line}'"]
        expected = [f"{tmp_path}/c.toml"]
    else:
        check = ["zsh", "-c", ZSH_CALL % "igrun --config ''"]
        expected = ["FILES"]
    proc = subprocess.run(check, capture_output=True, text=True, env=env)
    assert proc.stdout.split() == expected, proc.stderr


def test_config_flags_complete(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "__complete", "words", "--", "--config", "f.toml", "-t", "1s", "--")
    assert (code, out.split()) == (0, ["--buffer-size", "--interval", "--timeout"])
    code, out, _ = run(capsys, "__complete", "words", "--", "--config", "f.toml", "trace", "e")
    assert out.split() == ["exec"]


# ---- config ----------------------------------------------------------------------------------


def test_config_view_without_a_file_shows_defaults_and_environment(tmp_path: Path) -> None:
    got = igrun("config", "view", env={"XDG_CONFIG_HOME": str(tmp_path), "IGRUN_TIMEOUT": "7s"})
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith(f"# no config file at {tmp_path / 'igrun' / 'config.toml'}")
    (run_,) = tomllib.loads(got.stdout)["run"]
    assert run_["gadget"] == "trace exec"
    assert run_["runtime"]["timeout"] == "7s"  # the environment
    assert run_["runtime"]["interval"] == "0"  # a default


def test_config_flags_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[run]]\ngadget = "trace exec"\n')
    got = igrun("--config", str(path), "-t", "soon")
    assert (got.returncode, got.stdout) == (2, "")
    assert got.stderr == "igrun: error: --timeout: 'soon' is not a duration (e.g. 500ms, 10s, 2m)\n"
    got = igrun("--config", str(path), "--bogus")
    assert got.returncode == 2
    assert got.stderr == "igrun: error: igrun --config FILE: unrecognized arguments: --bogus\n"


@pytest.mark.bpf
def test_runtime_flags_after_config(tmp_path: Path) -> None:
    """``-t 1s`` after ``--config FILE`` ends a run whose file says 60 s."""
    path = tmp_path / "c.toml"
    path.write_text(
        '[[run]]\ngadget = "trace exec"\nruntime = {timeout = "60s"}\n'
        'operators = [{name = "filter", with = {filter = "comm:nothing-zz"}}, {name = "output"}]\n'
    )
    started = time.monotonic()
    got = igrun("--config", str(path), "-t", "1s")
    assert got.returncode == 0, got.stderr
    assert time.monotonic() - started < 20


@pytest.mark.bpf
def test_a_flags_filter_adds_to_the_files(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """The file keeps only program A; the command line only args with "second": A's second
    run is all that shows (not B's, which the file's filter leaves out)."""
    a, b = unique_program(tmp_path), unique_program(tmp_path)
    path = tmp_path / "c.toml"
    path.write_text(
        '[[run]]\ngadget = "trace exec"\n'
        f'operators = [{{name = "containers", with = {{host = true}}}}, '
        f'{{name = "filter", with = {{filter = "comm:{a.name[:15]}"}}}}, '
        f'{{name = "output", with = {{output = "json"}}}}]\n'
    )
    proc = igrun_cli.start("--config", str(path), "trace", "exec", "-F", "args:~second")
    for program, arg in ((a, "first"), (a, "second"), (b, "second")):
        subprocess.run([str(program), arg], check=True)
    time.sleep(0.5)
    out, err = proc.stop()
    assert proc.returncode == 0, err
    events = igrun_cli.events(out)
    assert [e["args"] for e in events] == [[str(a), "second"]]


# ---- SIGTERM -----------------------------------------------------------------------------------


def test_sigterm_ends_list_containers_watch_with_0() -> None:
    if os.geteuid() != 0:
        pytest.skip("list-containers needs root")
    proc = subprocess.Popen(
        [*IGRUN, "list-containers", "-w"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("EVENT    RUNTIME")  # running, and watching next
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert (proc.returncode, err) == (0, "")


@pytest.mark.bpf
def test_sigterm_ends_a_config_run_with_0(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[run]]\ngadget = "trace exec"\n')
    proc = igrun_cli.start("--config", str(path))
    proc.stop(signal.SIGTERM)
    assert proc.returncode == 0
    proc.assert_released()


def signal_mask(pid: int, kind: str) -> int:
    """A signal mask of process ``pid`` from its status (``SigCgt``: those it has a handler
    for, ``SigBlk``: those it blocks), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    (line,) = [ln for ln in status.splitlines() if ln.startswith(f"{kind}:")]
    return int(line.split()[1], 16)


def caught_signals(pid: int) -> int:
    """The mask of signals process ``pid`` has a handler for, 0 once it is gone."""
    return signal_mask(pid, "SigCgt")


@pytest.mark.bpf
@pytest.mark.parametrize(
    ("sig", "delay"),
    [
        (signal.SIGTERM, 0.0),
        (signal.SIGTERM, 0.05),
        (signal.SIGTERM, 0.1),
        (signal.SIGTERM, 0.2),
        (signal.SIGINT, 0.0),
        (signal.SIGINT, 0.1),
    ],
)
def test_a_stop_signal_while_starting_exits_0_and_leaves_nothing(
    sig: signal.Signals, delay: float
) -> None:
    """The installed ``igrun`` command, stopped while it imports, loads or attaches: exit 0,
    no traceback, no pin folder of its own left. Timed from the moment the interpreter ran
    igrun's first module (it takes the stop signals there; before, they are blocked: see
    :func:`test_a_stop_signal_at_launch_exits_0`)."""
    proc = subprocess.Popen(
        [os.path.join(BIN, "igrun"), "trace", "exec", "--host", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    taken = 1 << (signal.SIGTERM - 1)  # python handles SIGINT from the start: igrun, SIGTERM
    deadline = time.monotonic() + 20
    while not caught_signals(proc.pid) & taken:
        assert proc.poll() is None and time.monotonic() < deadline, "igrun never took the signal"
        time.sleep(0.001)
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "error" not in err, err
    assert testing.pins_of(proc.pid) == []


def launch(*args: str, **how: object) -> subprocess.Popen[str]:
    """The installed ``igrun`` command, started with ``args``."""
    return subprocess.Popen(
        [os.path.join(BIN, "igrun"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **how,  # type: ignore[call-overload]
    )


def wait_blocked(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    """Until ``proc`` blocks ``sig``: the ``igrun`` command's first step, before it starts
    the interpreter."""
    deadline = time.monotonic() + 20
    while not signal_mask(proc.pid, "SigBlk") & (1 << (sig - 1)):
        assert proc.poll() is None and time.monotonic() < deadline, "igrun never blocked it"
        time.sleep(0.0002)


def test_the_igrun_command_is_the_launcher_that_holds_stop_signals() -> None:
    """The installed command is a program that blocks the stop signals and runs the
    interpreter (``csrc/launcher.c``); igrun unblocks them and hides the note from its
    children; the working folder is not searched for igrun's modules (it runs as root)."""
    with open(os.path.join(BIN, "igrun"), "rb") as command:
        assert command.read(4) == b"\x7fELF"
    done = subprocess.run([os.path.join(BIN, "igrun"), "version"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("igrun "), done
    code = (
        "import os, signal; from igrun.core.cli import BLOCKED_ENV; "
        "print(sorted(signal.pthread_sigmask(signal.SIG_BLOCK, [])), BLOCKED_ENV in os.environ)"
    )
    env = {**os.environ, "IGRUN_BLOCKED_SIGNALS": "2,15,1"}
    out = subprocess.run([sys.executable, "-c", f"import signal; signal.pthread_sigmask("
                          f"signal.SIG_BLOCK, [1, 2, 15]); {code}"], env=env, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    assert out.split() == ["[]", "False"], out


def test_the_working_folder_is_not_searched_for_igruns_modules(tmp_path: Path) -> None:
    fake = tmp_path / "igrun"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise SystemExit('the working folder was searched')\n")
    done = subprocess.run([os.path.join(BIN, "igrun"), "version"], capture_output=True,
                          text=True, check=False, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0 and "searched" not in done.stderr, done


def test_a_stop_signal_that_python_wraps_in_another_error_still_exits_0(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop signal's KeyboardInterrupt that comes while an imported module creates a class
    reaches igrun as ``RuntimeError: Error calling __set_name__`` (the signal tests above
    met it once in a few hundred runs): still a stop, exit 0 and not a word."""
    from igrun.core.cli import main as cli

    class Stopped:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt  # as a signal handler raises it, between two bytecodes

    def importing(*args: object) -> int:
        type("RunSpec", (), {"values": Stopped()})
        return 1

    monkeypatch.setattr(cli, "run_gadget", importing)
    assert run(capsys, "trace", "exec", "--host") == (0, "", "")


@pytest.mark.bpf
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_stop_signal_at_launch_exits_0(sig: signal.Signals) -> None:
    """A stop signal sent as soon as the ``igrun`` command has blocked it, while the
    interpreter starts and before any of igrun's code runs, is taken once igrun handles
    the signals: exit 0, as later, where a Python script would die of it."""
    for _ in range(3):
        proc = launch("trace", "exec", "--host", "-o", "json")
        wait_blocked(proc, sig)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
        assert testing.pins_of(proc.pid) == []


def test_a_sighup_nohup_ignores_stays_ignored_and_the_process_is_named_igrun() -> None:
    proc = launch(
        "list-containers", "-w", preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)
    )
    try:
        wait_blocked(proc, signal.SIGHUP)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None, proc.communicate()
        # The interpreter the command started is named igrun (pkill igrun, top).
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "igrun\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err


# ---- -v and -vv ------------------------------------------------------------------------------


@pytest.mark.bpf
def test_verbose_says_what_igrun_did(tmp_path: Path, rootfs: Path) -> None:
    """-v: the runtimes asked and what they answered, the containers selected, the events
    buffer, each program attached; libbpf's own lines only with -vv."""
    with containerlab.runc_container(rootfs, tmp_path / "bundle", {}) as box:
        got = igrun("-v", "trace", "exec", "-c", box.name, "-t", "1s", "--buffer-size", "1M")
        very = igrun("-vv", "trace", "exec", "-t", "1s")
    assert got.returncode == 0, got.stderr
    lines = got.stderr.splitlines()

    def line(event: str) -> str:
        found = [ln for ln in lines if f"[debug] {event} " in ln]
        assert found, got.stderr
        return found[0]

    assert "runc" in line("runtimes_asked").split("asked=")[1].split()[0]
    assert any("runtime_answered" in ln and "runtime=runc" in ln for ln in lines)
    selected = line("containers_selected")
    assert "count=1 " in selected and f"names={box.name} " in selected
    assert f"by={box.name} " in selected
    buffer = line("event_buffer")
    assert "kind=ring" in buffer and f"bytes={1 << 20} " in buffer
    attached = [ln for ln in lines if "[debug] attached " in ln]
    assert any("to=tracepoint/syscalls/sys_enter_execve" in ln for ln in attached), attached
    assert not any("libbpf" in ln for ln in lines)
    assert very.returncode == 0, very.stderr
    assert sum("libbpf" in ln for ln in very.stderr.splitlines()) > 10
