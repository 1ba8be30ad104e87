"""The example packages in examples/, built and installed exactly as docs/authoring.md says.

A fresh venv (``python -m venv``) sees igrun as installed from this checkout (the tests'
own install, through a ``.pth`` file, with its ``igrun`` command); no index has igrun. The
commands of the doc's "Building and installing" section then run in a folder that holds copies of
the examples: igrun writes the ``igrun-build`` wheel, pip builds the gadget in build isolation
with setuptools and that wheel only, and installs both examples. The venv's ``igrun`` then lists
the gadget with its package, traces real removals with exact values, and takes the operator's
``--drop-root`` flag. The build leaves the copies as they were but for ``build/`` and
``*.egg-info``; the wheel is tagged for this architecture; the doc's sdist builds into a wheel
that works. The venv running the tests is never touched.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import tomllib
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

if TYPE_CHECKING:
    from conftest import IgrunCli

    from igrun.testing import CliRun

pytestmark = pytest.mark.bpf

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
DOC = REPO / "docs" / "authoring.md"
SECTION = "## Building and installing"
PACKAGES = (
    "igrun-gadget-unlink",
    "igrun-operator-droproot",
    "igrun-gadget-netnssyn",
    "igrun-gadget-topsignal",
    "igrun-gadget-openfiles",
)
GADGET = tomllib.loads((EXAMPLES / PACKAGES[0] / "pyproject.toml").read_text())["project"]
GADGET_VERSION = GADGET["version"]
PLATFORM_TAG = "py3-none-" + sysconfig.get_platform().replace("-", "_").replace(".", "_")
BUILD_OUTPUTS = ("*.bpf.o", "vmlinux.h")
AT_FDCWD = -100
NOBODY = 65534
UNLINK = (
    "import os, sys\n"
    "try:\n"
    "    os.unlink(sys.argv[1])\n"
    "except OSError as exc:\n"
    "    sys.exit(exc.errno)\n"
)
RMDIR = "import os, sys; os.rmdir(sys.argv[1])"
RMDIR_AT = (
    "import os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\n"
    "os.rmdir(sys.argv[2], dir_fd=fd)\n"
    "print(fd)\n"
)
# Plugin switches of the calling environment must not hide the examples.
ENV = {k: v for k, v in os.environ.items() if k not in ("IGRUN_PLUGINS", "IGRUN_NO_PLUGINS")}
CONSOLE_SCRIPT = "#!{python}\nimport sys\nfrom igrun.core.cli.main import main\nsys.exit(main())\n"


def documented_blocks() -> list[list[str]]:
    """The shell blocks of the doc's section on building, as lines."""
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start)
    section = text[start : end if end != -1 else len(text)]
    return [block.strip().splitlines() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def fresh_venv(path: Path, *args: str) -> Path:
    """A venv made by ``python -m venv`` that sees igrun as the tests' venv has it installed,
    with an ``igrun`` command as pip writes one; its python."""
    subprocess.run([sys.executable, "-m", "venv", *args, str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # addsitedir, not a bare path: igrun's own .pth (its editable install) must be read too.
    parent = sysconfig.get_paths()["purelib"]
    Path(purelib, "_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    script = path / "bin" / "igrun"
    script.write_text(CONSOLE_SCRIPT.format(python=python))
    script.chmod(0o755)
    return python


def shell(line: str, cwd: Path, env: dict[str, str]) -> None:
    """One documented command, as a user's shell runs it."""
    run = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"{line}\n{run.stdout}{run.stderr}"


def tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` but setuptools' ``build/`` and ``*.egg-info``, with a hash."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "build" or rel.parts[0].endswith(".egg-info") or path.is_dir():
            continue
        files[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@dataclass(frozen=True)
class Authored:
    """Where the documented commands ran and what they left."""

    venv: Path
    work: Path  # copies of the example packages: the folder the commands ran in
    env: dict[str, str]
    run: list[str]  # the documented command that runs the gadget
    before: dict[str, dict[str, str]]  # each copy's files before the build

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


@pytest.fixture(scope="module")
def authored(tmp_path_factory: pytest.TempPathFactory) -> Authored:
    """The examples built and installed by the commands of docs/authoring.md, in a fresh venv."""
    root = tmp_path_factory.mktemp("authoring")
    work, home, venv = root / "work", root / "home", root / "venv"
    home.mkdir()
    before = {}
    for name in PACKAGES:
        shutil.copytree(
            EXAMPLES / name,
            work / name,
            ignore=shutil.ignore_patterns("build", "*.egg-info", *BUILD_OUTPUTS, "__pycache__"),
        )
        before[name] = tree(work / name)
    fresh_venv(venv)
    env = {
        **ENV,
        "HOME": str(home),
        "PATH": f"{venv / 'bin'}{os.pathsep}{ENV.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
    }
    install, _publish = documented_blocks()
    runs = [line for line in install if line.startswith("igrun ")]
    assert len(runs) == 1, install
    for line in install:
        if line not in runs:
            shell(line, work, env)
    assert Path(home, "igrun-wheels").is_dir()
    # The attaching example, built the same way as the documented one.
    shell("pip install --find-links ~/igrun-wheels ./igrun-gadget-netnssyn", work, env)
    shell("pip install --find-links ~/igrun-wheels ./igrun-gadget-topsignal", work, env)
    # The snapshot example, likewise.
    shell("pip install --find-links ~/igrun-wheels ./igrun-gadget-openfiles", work, env)
    return Authored(venv, work, env, shlex.split(runs[0]), before)


@pytest.fixture(scope="module")
def venv_python(authored: Authored) -> Path:
    return authored.python


@pytest.fixture
def cli(igrun_cli: IgrunCli, venv_python: Path) -> IgrunCli:
    """``igrun`` as the fresh venv runs it."""
    return replace(igrun_cli, command=(str(venv_python.parent / "igrun"),))


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may write to (the test's own tmp_path is root's alone)."""
    with tempfile.TemporaryDirectory(prefix="igrun-examples-") as name:
        os.chmod(name, 0o777)
        yield Path(name)


def child(argv: list[str], expect: int = 0, **kwargs: Any) -> tuple[int, str]:
    """Run ``argv`` to its end; its pid and what it printed."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kwargs)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == expect, argv
    return proc.pid, out.strip()


def stop(cli: IgrunCli, proc: CliRun) -> list[dict[str, Any]]:
    """End igrun as a user would and return its events; it must leave nothing behind."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert cli.pin_dirs_of(proc.pid) == []
    proc.assert_released()
    return cli.events(out)


def of(events: list[dict[str, Any]], pid: int) -> list[dict[str, Any]]:
    return [e for e in events if e["pid"] == pid]


def without_enrichment(event: dict[str, Any]) -> dict[str, Any]:
    """The gadget's own fields: the containers operator's ones are tested elsewhere, and
    every event's ``"type":"normal"`` here."""
    assert event["type"] == "normal"
    return {k: v for k, v in event.items() if k not in ("runtime", "k8s", "timestamp", "type")}


def test_list_names_the_gadget_and_its_package(venv_python: Path) -> None:
    listed = subprocess.run(
        [venv_python, "-m", "igrun.core.cli", "list"],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    ).stdout
    rows = [line.split() for line in listed.splitlines()]
    unlink = [row for row in rows if row[:2] == ["trace", "unlink"]]
    assert len(unlink) == 1
    assert unlink[0][-2:] == ["igrun-gadget-unlink", GADGET_VERSION]
    assert " ".join(unlink[0][2:-2]) == "Trace files and directories removed"


def test_the_running_venv_is_untouched(venv_python: Path) -> None:
    assert importlib.util.find_spec("igrun_gadget_unlink") is None
    assert importlib.util.find_spec("igrun_operator_droproot") is None
    assert "trace_unlink" not in {ep.name for ep in entry_points(group="igrun.gadgets")}
    assert "droproot" not in {ep.name for ep in entry_points(group="igrun.operators")}
    assert not list(EXAMPLES.glob("*/build")) and not list(EXAMPLES.rglob("*.bpf.o"))


def test_trace_unlink_reports_each_removal_exactly(
    cli: IgrunCli, authored: Authored, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    victim = tmp_path / f"victim-{tag}"
    victim.write_text("x")
    missing = tmp_path / f"missing-{tag}"
    subdir, other = tmp_path / f"dir-{tag}", tmp_path / f"other-{tag}"
    subdir.mkdir()
    other.mkdir()
    mntns = os.stat("/proc/self/ns/mnt").st_ino
    comm = Path(sys.executable).name[:15]
    started = time.time_ns()

    assert authored.run[:3] == ["igrun", "trace", "unlink"]
    proc = cli.start(*authored.run[1:], env=ENV)  # the documented command
    removed, _ = child([sys.executable, "-c", UNLINK, str(victim)])
    failed, _ = child([sys.executable, "-c", UNLINK, str(missing)], expect=errno.ENOENT)
    rmdir, _ = child([sys.executable, "-c", RMDIR, str(other)])
    rmdir_at, fd = child([sys.executable, "-c", RMDIR_AT, str(tmp_path), subdir.name])
    events = stop(cli, proc)

    assert not victim.exists() and not subdir.exists() and not other.exists()
    common = {"mountnsid": mntns, "uid": 0, "comm": comm}
    assert [without_enrichment(e) for e in of(events, removed)] == [
        {
            **common,
            **{"pid": removed, "tid": removed, "dirfd": AT_FDCWD, "path": str(victim)},
            **{"flags": "", "ret": 0, "error": ""},
        }
    ]
    assert [without_enrichment(e) for e in of(events, failed)] == [
        {
            **common,
            **{"pid": failed, "tid": failed, "dirfd": AT_FDCWD, "path": str(missing)},
            **{"flags": "", "ret": -errno.ENOENT, "error": "ENOENT"},
        }
    ]
    assert [without_enrichment(e) for e in of(events, rmdir)] == [
        {
            **common,
            **{"pid": rmdir, "tid": rmdir, "dirfd": AT_FDCWD, "path": str(other)},
            **{"flags": "AT_REMOVEDIR", "ret": 0, "error": ""},
        }
    ]
    assert [without_enrichment(e) for e in of(events, rmdir_at)] == [
        {
            **common,
            **{"pid": rmdir_at, "tid": rmdir_at, "dirfd": int(fd), "path": subdir.name},
            **{"flags": "AT_REMOVEDIR", "ret": 0, "error": ""},
        }
    ]
    for pid in (removed, failed, rmdir, rmdir_at):
        (event,) = of(events, pid)
        assert started - 10**9 < event["timestamp"] < time.time_ns() + 10**9
        assert "containerName" not in event["runtime"]  # a host process


def test_failed_shows_only_the_removals_that_failed(cli: IgrunCli, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("x")
    proc = cli.start("trace", "unlink", "--host", "--failed", "-o", "json", env=ENV)
    removed, _ = child([sys.executable, "-c", UNLINK, str(victim)])
    failed, _ = child([sys.executable, "-c", UNLINK, str(victim)], expect=errno.ENOENT)
    events = stop(cli, proc)

    assert of(events, removed) == []
    assert [(e["path"], e["error"]) for e in of(events, failed)] == [(str(victim), "ENOENT")]


def test_drop_root_hides_the_events_of_root(cli: IgrunCli, shared_dir: Path) -> None:
    unlink = shutil.which("unlink")
    assert unlink is not None
    mine, theirs = shared_dir / "root", shared_dir / "nobody"
    mine.write_text("x")
    theirs.write_text("x")

    def as_nobody() -> None:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    proc = cli.start("trace", "unlink", "--host", "--drop-root", "-o", "json", env=ENV)
    by_root, _ = child([unlink, str(mine)])
    by_nobody, _ = child([unlink, str(theirs)], preexec_fn=as_nobody)
    events = stop(cli, proc)

    assert not mine.exists() and not theirs.exists()
    assert of(events, by_root) == []
    assert [(e["uid"], e["comm"], e["path"], e["ret"]) for e in of(events, by_nobody)] == [
        (NOBODY, "unlink", str(theirs), 0)
    ]
    assert all(e["uid"] != 0 for e in events)


def test_drop_root_is_offered_only_where_events_have_a_uid(venv_python: Path) -> None:
    """trace fsslower's events have no uid: the operator does not apply, so no such flag."""
    run = subprocess.run(
        [venv_python, "-m", "igrun.core.cli", "trace", "fsslower", "--drop-root"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert run.returncode == 2
    assert run.stderr.splitlines() == [
        "igrun: error: igrun trace fsslower: unrecognized arguments: --drop-root"
    ]
    helped = subprocess.run(
        [venv_python, "-m", "igrun.core.cli", "trace", "unlink", "--help"],
        check=True,
        capture_output=True,
        text=True,
        env=ENV,
    ).stdout
    assert "--drop-root" in helped


def test_trace_netnssyn_sees_a_syn_inside_a_selected_container(
    cli: IgrunCli,
    podman: Podman,  # noqa: F811
) -> None:
    """The attaching example, as users run it: one socket filter in the container's network
    namespace, gone with the run."""
    inside = podman.run(f"igrun-ex-{uuid.uuid4().hex[:6]}")
    netns = os.stat(f"/proc/{inside.pid}/ns/net").st_ino
    port = "47313"
    proc = cli.start("trace", "netnssyn", "--port", port, "-c", inside.name, "-o", "json", env=ENV)
    podman("exec", inside.name, "nc", "127.0.0.1", port, check=False)  # refused: one SYN
    subprocess.run(["busybox", "nc", "-w", "1", "127.0.0.1", port], capture_output=True)
    time.sleep(0.5)
    events = stop(cli, proc)
    assert [(e["netns"], e["src"], e["dst"], e["dport"]) for e in events] == [
        (netns, "127.0.0.1", "127.0.0.1", int(port))  # not the host's SYN: not attached there
    ]
    assert events[0]["runtime"]["containerName"] == inside.name


def test_top_signal_prints_one_array_per_interval_with_exact_counts(cli: IgrunCli) -> None:
    """The interval example, as users run it: signals counted in the kernel, one JSON array
    per interval, sorted by count."""
    waiter = subprocess.Popen(
        [sys.executable, "-c", "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {10})\n"
         "import time; time.sleep(60)"]
    )  # fmt: skip
    try:
        proc = cli.start("top", "signal", "--host", "--signal", "10", "--interval", "1s",
                         "-o", "json", env=ENV)  # fmt: skip
        for _ in range(6):
            os.kill(waiter.pid, signal.SIGUSR1)
        time.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        waiter.kill()
        waiter.wait()
    assert proc.returncode == 0, err
    arrays = [json.loads(line) for line in out.splitlines()]
    assert arrays and all(isinstance(a, list) for a in arrays)
    mine = [r for a in arrays for r in a if r["tpid"] == waiter.pid]
    assert [(r["pid"], r["signal"], r["count"]) for r in mine] == [(os.getpid(), "SIGUSR1", 6)]
    assert cli.pin_dirs_of(proc.pid) == []


def test_a_chain_without_the_containers_operator_still_selects_containers(
    cli: IgrunCli, tmp_path: Path
) -> None:
    """An attaching gadget needs the selected containers: a config chain that leaves the
    containers operator out gets it all the same (a run's selection holds), and runs."""
    config = tmp_path / "chain.toml"
    config.write_text(
        '[[run]]\ngadget = "trace netnssyn"\nruntime = {timeout = "1s"}\n'
        'operators = [{name = "output", with = {output = "json"}}]\n'
    )
    done = cli.run("--config", str(config))
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("igrun:")] == []
    view = cli.run("--config", str(config), "config", "view")
    assert view.returncode == 0, view.stderr
    assert 'name = "containers"' in view.stdout


def test_the_gadget_package_tests_itself_with_igrun_testing(
    venv_python: Path, tmp_path: Path
) -> None:
    """The example's own tests, as its author runs them in the venv it is installed in: the
    fixtures and the marker come from igrun's pytest plugin, with no conftest."""
    tests = EXAMPLES / "igrun-gadget-unlink" / "tests"
    done = subprocess.run(
        [venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", tests],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**ENV, "PYTHONDONTWRITEBYTECODE": "1", "IGRUN_REQUIRE_BPF": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_snapshot_example_tests_itself_with_igrun_testing(
    venv_python: Path, tmp_path: Path
) -> None:
    """``snapshot openfiles``, built on ``BpfSnapshot`` and installed with pip, passes its own
    tests in the venv it is installed in: an exact row, and one JSON array per interval."""
    tests = EXAMPLES / "igrun-gadget-openfiles" / "tests"
    done = subprocess.run(
        [venv_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers", tests],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**ENV, "PYTHONDONTWRITEBYTECODE": "1", "IGRUN_REQUIRE_BPF": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_build_writes_nothing_into_the_source_tree(authored: Authored) -> None:
    """Sources as they were; the object and vmlinux.h only in the build folder."""
    for name in PACKAGES:
        copy = authored.work / name
        assert tree(copy) == authored.before[name], name
        outside = [
            p for pattern in BUILD_OUTPUTS for p in copy.rglob(pattern) if "build" not in p.parts
        ]
        assert outside == [], name
    build = authored.work / PACKAGES[0] / "build" / "bpf"
    assert (build / "vmlinux.h").stat().st_size > 1 << 20
    assert (build / "igrun_gadget_unlink" / "unlink.bpf.o").is_file()


def test_the_wheel_is_tagged_for_this_architecture(authored: Authored) -> None:
    probe = (
        "from importlib.metadata import distribution\n"
        "d = distribution('igrun-gadget-unlink')\n"
        "print(d.read_text('WHEEL'))\n"
        "print(*sorted(str(f) for f in d.files if str(f).endswith('.bpf.o')))\n"
    )
    out = subprocess.run(
        [authored.python, "-c", probe], check=True, capture_output=True, text=True
    ).stdout
    assert f"Tag: {PLATFORM_TAG}\n" in out
    assert "Root-Is-Purelib: false\n" in out
    assert out.splitlines()[-1] == "igrun_gadget_unlink/unlink.bpf.o"
    # A build requirement only: the venv that runs the gadget does not get it.
    helper = subprocess.run(
        [
            authored.python,
            "-c",
            "import importlib.util; print(importlib.util.find_spec('igrun_build'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert helper == "None\n"


def test_the_sdist_builds_into_a_wheel_that_works(
    authored: Authored, igrun_cli: IgrunCli, tmp_path: Path
) -> None:
    """The doc's publishing commands: an sdist with sources only, a wheel built from it, and
    that wheel, installed alone into another fresh venv, traces a real removal."""
    _install, publish = documented_blocks()
    for line in publish:
        shell(line, authored.work, authored.env)
    dist = authored.work / "dist"
    sdist = dist / f"igrun_gadget_unlink-{GADGET_VERSION}.tar.gz"
    wheel = dist / f"igrun_gadget_unlink-{GADGET_VERSION}-{PLATFORM_TAG}.whl"
    assert sorted(p.name for p in dist.iterdir()) == sorted([sdist.name, wheel.name])
    with tarfile.open(sdist) as archive:
        members = {m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name}
    assert {"pyproject.toml", "igrun_gadget_unlink/unlink.bpf.c"} <= members
    assert "igrun_gadget_unlink/unlink.h" in members
    assert not [m for m in members if m.endswith((".bpf.o", "vmlinux.h"))]
    with zipfile.ZipFile(wheel) as archive:
        assert "igrun_gadget_unlink/unlink.bpf.o" in archive.namelist()

    python = fresh_venv(tmp_path / "venv", "--without-pip")
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "-q"),
            *("--no-deps", "--no-index", str(wheel)),
        ],
        check=True,
    )
    cli = replace(igrun_cli, command=(str(python.parent / "igrun"),))
    victim = tmp_path / f"victim-{uuid.uuid4().hex[:8]}"
    victim.write_text("x")
    proc = cli.start(*authored.run[1:], env=ENV)
    removed, _ = child([sys.executable, "-c", UNLINK, str(victim)])
    failed, _ = child([sys.executable, "-c", UNLINK, str(victim)], expect=errno.ENOENT)
    events = stop(cli, proc)

    assert [(e["tid"], e["path"], e["ret"], e["error"]) for e in of(events, removed)] == [
        (removed, str(victim), 0, "")
    ]
    assert [(e["tid"], e["path"], e["ret"], e["error"]) for e in of(events, failed)] == [
        (failed, str(victim), -errno.ENOENT, "ENOENT")
    ]
