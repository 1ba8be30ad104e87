"""Hostile and mistaken input, through the real ``igrun`` command: each case is one line on
stderr and the right exit code (2 for usage, 1 for runtime, 0 for a closed pipe or Ctrl-C),
never a traceback, never a hang, never the host's memory, and nothing left pinned."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pluginlab import AS_NOBODY, open_folder

from igrun.testing import without_ready

if TYPE_CHECKING:
    from conftest import IgrunCli

MIB = 1 << 20
ADDRESS_SPACE = 1 << 30
"""The children's memory limit: igrun needs well under it, /dev/zero read whole needs more."""


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def igrun(
    cli: IgrunCli,
    *args: str,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli.command, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        preexec_fn=limit_memory,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The single stderr line of a run that ended with ``code`` (besides the ``ready`` line
    of each run that got that far)."""
    assert result.returncode == code, result.stderr
    err = without_ready(result.stderr)
    assert err.endswith("\n") and err.count("\n") == 1, result.stderr
    assert err.startswith("igrun: error: "), result.stderr
    return err.removeprefix("igrun: error: ").rstrip("\n")


AFTER_HOST_CHECK = pytest.mark.bpf
"""Operators read their params after the host check: without root these say "needs root"."""
NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to drop it, or to list)")

# ---- files a user names --------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    ("name", "kind"),
    [("/dev/zero", "a character device"), ("fifo", "a FIFO"), ("folder", "a folder")],
)
def test_config_must_be_a_regular_file(
    igrun_cli: IgrunCli, tmp_path: Path, fifo: Path, name: str, kind: str
) -> None:
    path = {"fifo": str(fifo), "folder": str(tmp_path)}.get(name, name)
    line = one_line(igrun(igrun_cli, "--config", path, timeout=20), 2)
    assert line == f"config {path}: not a regular file ({kind})"


@AFTER_HOST_CHECK
@pytest.mark.parametrize("name", ["/dev/zero", "fifo"])
def test_metrics_config_must_be_a_regular_file(igrun_cli: IgrunCli, fifo: Path, name: str) -> None:
    path = str(fifo) if name == "fifo" else name
    result = igrun(igrun_cli, "trace", "exec", "--metrics-config", path, "-t", "1s", timeout=20)
    kind = "a FIFO" if name == "fifo" else "a character device"
    assert one_line(result, 2) == f"metrics config: cannot read {path}: not a regular file ({kind})"


def test_bpf_object_must_be_a_regular_file(igrun_cli: IgrunCli, fifo: Path) -> None:
    assert one_line(igrun(igrun_cli, "run", "/dev/zero"), 2) == (
        "/dev/zero: cannot read it: not a regular file (a character device)"
    )
    assert one_line(igrun(igrun_cli, "run", str(fifo), timeout=20), 2) == (
        f"{fifo}: cannot read it: not a regular file (a FIFO)"
    )


@AFTER_HOST_CHECK
def test_config_size_limit_is_one_mib(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """A file of exactly the limit is read (and found to hold no run); one byte more is not."""
    at_limit = tmp_path / "at.toml"
    at_limit.write_text("#" * (MIB - 1) + "\n")
    assert one_line(igrun(igrun_cli, "--config", str(at_limit)), 2) == (
        f"config {at_limit}: no [[run]] to start"
    )
    over = tmp_path / "over.toml"
    over.write_text("#" * MIB + "\n")
    assert one_line(igrun(igrun_cli, "--config", str(over)), 2) == (
        f"config {over}: larger than 1 MiB, the limit for this file"
    )
    metrics = igrun(igrun_cli, "trace", "exec", "--metrics-config", str(over), "-t", "1s")
    assert one_line(metrics, 2) == (
        f"metrics config: cannot read {over}: larger than 1 MiB, the limit for this file"
    )


# ---- values on the command line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--buffer-size", "3G"], "--buffer-size: 3G is out of range: from 4K to 1G (or 0: "),
        (["--buffer-size", "3"], "--buffer-size: 3 is out of range: from 4K to 1G (or 0: "),
        (
            ["--buffer-size", "3M"],
            "--buffer-size: 3M is not a power of two (the kernel's rule for ring and perf "
            "buffers): use 2M or 4M",
        ),
        (["-F", ""], "--filter: empty value (leave the flag out for the default)"),
        (["-F", "comm:sh", "-F", " "], "--filter: empty value"),
        (["-c", ""], "--containername: empty value"),
        (["-c", "web,"], "--containername: empty item in 'web,'"),
        (["-r", ""], "--runtimes: empty value"),
        (["--sort", ""], "--sort: empty value"),
        (["-m", ""], "--max-rows: empty value"),
        (["-m", "-1"], "--max-rows: '-1'"),
        (["-t", ""], "--timeout: empty value"),
        (["-t", "-1s"], "--timeout: '-1s' is not a duration"),
        (["--interval", ""], "--interval: empty value"),
        (["--host="], "--host: empty value"),
        pytest.param(
            ["-o", "columns="],
            'invalid output "columns=": an empty column name',
            marks=AFTER_HOST_CHECK,
        ),
        pytest.param(
            ["-o", "columns=pid,,comm"],
            'invalid output "columns=pid,,comm": an empty column',
            marks=AFTER_HOST_CHECK,
        ),
        pytest.param(
            ["-o", "columns=+"],
            'invalid output "columns=+": an empty column name',
            marks=AFTER_HOST_CHECK,
        ),
        pytest.param(
            ["-o", "json="],
            'invalid output "json=": only columns takes a column list',
            marks=AFTER_HOST_CHECK,
        ),
    ],
)
def test_bad_value_is_a_usage_error(igrun_cli: IgrunCli, args: list[str], message: str) -> None:
    assert one_line(igrun(igrun_cli, "trace", "exec", "-t", "1s", *args), 2).startswith(message)


# ---- typos are reported before anything needs root ----------------------------------------


def as_nobody(
    cli: IgrunCli, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``igrun`` run by an unprivileged user: it cannot pass the host check (root), so a
    line about the input shows that the input was checked first."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    return subprocess.run(
        [*AS_NOBODY, *cli.command, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env=env,
    )


@pytest.fixture(scope="module")
def readable() -> Iterator[Path]:
    """Files an unprivileged user may read: a metrics config naming a field of trace exec."""
    with open_folder() as folder:
        (folder / "metrics.toml").write_text('[[counters]]\nname = "n"\nlabels = ["comm"]\n')
        (folder / "metrics.toml").chmod(0o644)
        (folder / "typo.toml").write_text('[[counters]]\nname = "n"\nlabels = ["comn"]\n')
        (folder / "typo.toml").chmod(0o644)
        yield folder


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["-F", "pidd:1"],
            'invalid filter "pidd:1": no column "pidd" (did you mean "pid" or "ppid"?)',
        ),
        (["-F", "comm:sh", "-F", "ret:x"], 'invalid filter "ret:x": ret is a number, not "x"'),
        (["-F", "comm:~("], 'invalid filter "comm:~(": bad regular expression: '),
        (["--sort", "bogus"], 'invalid sort "bogus": no column "bogus"'),
        (["--sort", "-pid,"], 'invalid sort "-pid,": empty column name'),
        (["--sort", "-pid"], "--sort needs --interval: a stream has no end to sort up to"),
        (["-o", "columns=pid,nope"], 'invalid output "columns=pid,nope": no column "nope"'),
        (["-o", "xml"], 'invalid output "xml": use one of columns, json, jsonpretty, yaml, none'),
        (
            ["-F", "runtime.containerNam:web"],
            'invalid filter "runtime.containerNam:web": no column "runtime.containerNam" '
            '(did you mean "runtime.containerName" or "runtime.containerId" or '
            '"runtime.containerImageName"?)',
        ),
        (
            ["-r", "dockr"],
            "--runtimes: unknown runtime 'dockr' (one of: docker, containerd, cri-o, podman, "
            "runc, crun)",
        ),
        (
            ["--metrics-config", "{folder}/typo.toml"],
            'metrics config: counters[0].labels: no column "comn" (did you mean "comm"?)',
        ),
        (
            ["--metrics-config", "{folder}/metrics.toml", "--metrics-path", "m"],
            '--metrics-path: "m" must start with /',
        ),
        (
            ["--metrics-config", "{folder}/metrics.toml", "--metrics-listen-address", "x"],
            '--metrics-listen-address: "x" is not host:port (e.g. 127.0.0.1:2223)',
        ),
        (["-t", "soon"], "--timeout: 'soon' is not a duration (e.g. 500ms, 10s, 2m)"),
    ],
)
def test_a_typo_needs_no_root(
    igrun_cli: IgrunCli, readable: Path, args: list[str], line: str
) -> None:
    args = [a.replace("{folder}", str(readable)) for a in args]
    result = as_nobody(igrun_cli, "trace", "exec", *args)
    assert one_line(result, 2).startswith(line)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["trace", "bind", "--ports", "80,0"], "--ports: 0 is not a port (1-65535)"),
        (["trace", "signal", "--signal", "FOO"], "--signal: no signal found for 'FOO'"),
        (
            ["trace", "fsslower", "-f", "a/b"],
            "--filesystem: 'a/b' is not a file system type name (as in /proc/filesystems, "
            "at most 31 characters)",
        ),
        (
            ["trace", "open", "--prefixes", "/" + "x" * 300],
            "--prefixes: '/xxxxxxxxxxxxxxxxxxx'… is longer than 255 bytes",
        ),
    ],
)
def test_a_gadget_param_out_of_range_needs_no_root(
    igrun_cli: IgrunCli, args: list[str], line: str
) -> None:
    assert one_line(as_nobody(igrun_cli, *args), 2) == line


def test_right_input_goes_on_to_the_host_check(igrun_cli: IgrunCli, readable: Path) -> None:
    """The same flags without the typos pass the checks and meet the host check: the lines
    above came from checks that ran before it."""
    result = as_nobody(
        igrun_cli, "trace", "exec", "-F", "pid:1", "--sort", "-pid", "--interval", "1s",
        "-o", "columns=pid,comm",
        "-r", "docker", "--metrics-config", f"{readable}/metrics.toml",
    )  # fmt: skip
    assert one_line(result, 1) == "igrun needs root to load BPF programs (try sudo)"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        *[("0", True), ("4K", True), ("4096", True), ("64K", True), ("1G", True)],
        *[("2K", False), ("1025M", False), ("2G", False), ("12K", False), ("4097", False)],
    ],
)
def test_buffer_size_bounds(value: str, ok: bool) -> None:
    from igrun.core.errors import ParamError
    from igrun.core.params import Params
    from igrun.core.run.local import RUNTIME_PARAMS

    if ok:
        Params(RUNTIME_PARAMS, {"buffer-size": value})
        return
    with pytest.raises(ParamError, match=r"^--buffer-size: "):
        Params(RUNTIME_PARAMS, {"buffer-size": value})


def test_buffer_size_in_a_config_is_checked_too(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[run]]\ngadget = "trace exec"\nruntime = { buffer-size = "3G" }\n')
    assert one_line(igrun(igrun_cli, "--config", str(path)), 2) == (
        f"config {path}: run[0].runtime.buffer-size: --buffer-size: 3G is out of range: "
        "from 4K to 1G (or 0: the gadget's own)"
    )


def test_zero_values_say_what_they_mean(igrun_cli: IgrunCli) -> None:
    """0 is a value with a meaning for these, stated in the help, not a silent default."""
    help = " ".join(igrun(igrun_cli, "trace", "exec", "--help").stdout.split())
    assert "0 runs until Ctrl-C" in help  # -t
    assert "0 prints each batch as it comes" in help  # --interval
    assert "0 for no limit" in help  # -m
    assert "0 keeps the gadget's own size" in help  # --buffer-size


@NEEDS_ROOT
def test_list_containers_needs_root(igrun_cli: IgrunCli) -> None:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("needs setpriv")
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, *igrun_cli.command, "list-containers"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.stdout == ""
    assert one_line(result, 1) == "igrun list-containers needs root to see containers (try sudo)"


# ---- output that cannot be written ---------------------------------------------------------


def exec_storm(stop: threading.Event) -> threading.Thread:
    """Execs until ``stop``: events for a run to write."""

    def storm() -> None:
        while not stop.is_set():
            subprocess.run(["/bin/true"], check=True)
            time.sleep(0.02)

    thread = threading.Thread(target=storm, daemon=True)
    thread.start()
    return thread


def but_losses(err: str) -> list[str]:
    """stderr's lines but the loss reports and the ``ready`` lines: the storm may overflow the
    buffer of a run that is ending, and that is said (never lost silently), on a line of its
    own."""
    return [line for line in without_ready(err).splitlines() if "[warning] lost " not in line]


@pytest.mark.bpf
@pytest.mark.parametrize("fmt", ["json", "columns"])
def test_a_full_disk_is_one_line_and_ends_the_run(igrun_cli: IgrunCli, fmt: str) -> None:
    stop = threading.Event()
    exec_storm(stop)
    started = time.monotonic()
    try:
        with open("/dev/full", "w") as full:
            proc = subprocess.Popen(
                [*igrun_cli.command, "trace", "exec", "--host", "-o", fmt, "-t", "30s"],
                stdout=full,
                stderr=subprocess.PIPE,
                text=True,
            )
            _, err = proc.communicate(timeout=60)
    finally:
        stop.set()
    assert proc.returncode == 1, err
    assert but_losses(err) == ["igrun: error: writing output: No space left on device"]
    assert time.monotonic() - started < 25  # ended by the error, not by its timeout
    assert igrun_cli.pin_dirs_of(proc.pid) == []


@pytest.mark.bpf
def test_an_io_error_is_one_line(igrun_cli: IgrunCli) -> None:
    """A terminal whose other end is gone: writes fail with EIO."""
    master, slave = os.openpty()
    os.close(master)
    stop = threading.Event()
    exec_storm(stop)
    try:
        proc = subprocess.Popen(
            [*igrun_cli.command, "trace", "exec", "--host", "-t", "30s"],
            stdout=slave,
            stderr=subprocess.PIPE,
            text=True,
        )
        _, err = proc.communicate(timeout=60)
    finally:
        stop.set()
        os.close(slave)
    assert proc.returncode == 1, err
    assert but_losses(err) == ["igrun: error: writing output: Input/output error"]
    assert igrun_cli.pin_dirs_of(proc.pid) == []


@pytest.mark.parametrize("command", [["list"], ["config", "default"], ["--help"], ["--version"]])
def test_commands_on_a_full_disk(igrun_cli: IgrunCli, command: list[str]) -> None:
    with open("/dev/full", "w") as full:
        result = igrun(igrun_cli, *command, stdout=full.fileno())
    assert one_line(result, 1) == "writing output: No space left on device"


def test_gadget_help_on_a_full_disk(igrun_cli: IgrunCli) -> None:
    """argparse would drop a failed write of the help in silence, and exit 0."""
    with open("/dev/full", "w") as full:
        result = igrun(igrun_cli, "trace", "exec", "--help", stdout=full.fileno())
    assert one_line(result, 1) == "writing output: No space left on device"


TWO_RUNS = """
[[run]]
gadget = "trace exec"
operators = [
  { name = "containers", with = { host = true } },
  { name = "output", with = { output = "json" } },
]

[[run]]
gadget = "trace open"
operators = [
  { name = "containers", with = { host = true } },
  { name = "output", with = { output = "json" } },
]
"""


@pytest.mark.bpf
def test_a_closed_stdout_ends_every_run_of_a_config(igrun_cli: IgrunCli, tmp_path: Path) -> None:
    """``igrun --config two-runs.toml | head -1``: both runs end, quietly, exit code 0."""
    config = tmp_path / "two.toml"
    config.write_text(TWO_RUNS)
    proc = subprocess.Popen(
        [*igrun_cli.command, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    exec_storm(stop)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # what `head -1` does, then it exits
        proc.stdout.close()
        _, err = proc.communicate(timeout=30)  # no run goes on writing into nothing
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    assert first.startswith('{"gadget":"trace ')
    assert proc.returncode == 0, err
    assert without_ready(err) == ""
    assert igrun_cli.pin_dirs_of(proc.pid) == []


@pytest.mark.bpf
def test_a_full_disk_ends_every_run_of_a_config_in_one_line(
    igrun_cli: IgrunCli, tmp_path: Path
) -> None:
    config = tmp_path / "two.toml"
    config.write_text(TWO_RUNS)
    stop = threading.Event()
    exec_storm(stop)
    try:
        with open("/dev/full", "w") as full:
            result = igrun(igrun_cli, "--config", str(config), stdout=full.fileno(), timeout=30)
    finally:
        stop.set()
    assert one_line(result, 1) == "writing output: No space left on device"


# ---- a Docker socket that does not answer --------------------------------------------------


@dataclass
class FakeDocker:
    """A Unix socket that accepts and then answers nothing, or one byte at a time."""

    path: Path
    trickle: bool = False
    accepted: threading.Event = field(default_factory=threading.Event)
    conns: list[socket.socket] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": f"unix://{self.path}"}

    def serve(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()
            if self.trickle:
                threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    @staticmethod
    def drip(conn: socket.socket) -> None:
        """A valid answer, far too slowly: every read gets a byte before its timeout."""
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]"
        for byte in answer:
            try:
                conn.sendall(bytes([byte]))
            except OSError:
                return
            time.sleep(0.25)


@pytest.fixture(params=[False, True], ids=["silent", "trickling"])
def fake_docker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FakeDocker]:
    fake = FakeDocker(tmp_path / "docker.sock", trickle=request.param)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(fake.path))
    server.listen(16)
    threading.Thread(target=fake.serve, args=(server,), daemon=True).start()
    yield fake
    server.close()
    for conn in fake.conns:
        conn.close()


@NEEDS_ROOT
def test_a_slow_docker_delays_list_containers_two_seconds_at_most(
    igrun_cli: IgrunCli, fake_docker: FakeDocker
) -> None:
    started = time.monotonic()
    result = igrun(igrun_cli, "list-containers", "-r", "docker", env=fake_docker.env)
    took = time.monotonic() - started
    line = one_line(result, 1)
    assert line.startswith("container runtime docker: ")
    assert line.endswith("no answer within 2 s")
    assert took < 10  # start-up, 2 s for docker, exit (the trickle alone takes 20 s)


@pytest.mark.bpf
def test_a_slow_docker_is_given_up_on_and_logged(
    igrun_cli: IgrunCli, fake_docker: FakeDocker
) -> None:
    result = igrun(
        igrun_cli, "trace", "exec", "--host", "-t", "1s", "-v", env=fake_docker.env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    (gave_up,) = [line for line in lines if "runtime_gave_up" in line and "runtime=docker" in line]
    assert "no answer within 2 s" in gave_up
    seconds = float(gave_up.split("seconds=")[1].split()[0])
    assert 1.9 <= seconds < 3
    assert "Traceback" not in result.stderr


@pytest.mark.bpf
def test_ctrl_c_during_start_up_ends_the_run(igrun_cli: IgrunCli, fake_docker: FakeDocker) -> None:
    """Ctrl-C while igrun waits for Docker's first answer: out at once, quietly, exit 0."""
    proc = subprocess.Popen(
        [*igrun_cli.command, "trace", "exec"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **fake_docker.env},
    )
    try:
        assert fake_docker.accepted.wait(20), "igrun never asked docker"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - sent < 1.5  # not after the 2 s wait, nor after a load
    assert proc.returncode == 0, err
    assert (out, err) == ("", "")
    assert igrun_cli.pin_dirs_of(proc.pid) == []
