"""The example packages in examples/, as their authors would ship them: pip-installed, then used.

One fresh venv per module sees igrun through a ``.pth`` file (nothing of igrun is rebuilt) and
gets both examples with a real ``pip install``: the gadget's own build compiles its BPF
program. The venv's ``igrun`` then lists the gadget with its package, traces real removals
with exact values, and takes the operator's ``--drop-root`` flag. The venv running the tests
is never touched.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_containers import Podman, podman, podman_env  # noqa: F401 (fixtures)

if TYPE_CHECKING:
    from conftest import IgrunCli

    from igrun.testing import CliRun

pytestmark = pytest.mark.bpf

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PACKAGES = ("igrun-gadget-unlink", "igrun-operator-droproot", "igrun-gadget-netnssyn")
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


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv that sees igrun and has both examples installed by pip."""
    root = tmp_path_factory.mktemp("examples")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # addsitedir, not a bare path: igrun's own .pth (its editable install) must be read too.
    parent = sysconfig.get_paths()["purelib"]
    Path(purelib, "_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    # A build writes build/, *.egg-info and unlink.bpf.o into the tree it builds: build copies.
    sources = []
    for name in PACKAGES:
        source = root / "src" / name
        shutil.copytree(
            EXAMPLES / name,
            source,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "*.bpf.o", "__pycache__"),
        )
        sources.append(str(source))
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "-q"),
            *("--no-build-isolation", "--no-deps", "--no-index", *sources),
        ],
        check=True,
        env=ENV,
    )
    assert Path(purelib, "igrun_gadget_unlink", "unlink.bpf.o").is_file()  # built, shipped
    assert Path(purelib, "igrun_gadget_netnssyn", "netnssyn.bpf.o").is_file()
    return python


@pytest.fixture
def cli(igrun_cli: IgrunCli, venv_python: Path) -> IgrunCli:
    """``igrun`` as the fresh venv runs it."""
    return replace(igrun_cli, command=(str(venv_python), "-m", "igrun.core.cli"))


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
    """The gadget's own fields: the containers operator's ones are tested elsewhere."""
    return {k: v for k, v in event.items() if k not in ("runtime", "k8s", "timestamp")}


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
    project = tomllib.loads((EXAMPLES / "igrun-gadget-unlink" / "pyproject.toml").read_text())
    assert unlink[0][-2:] == ["igrun-gadget-unlink", project["project"]["version"]]
    assert " ".join(unlink[0][2:-2]) == "Trace files and directories removed"


def test_the_running_venv_is_untouched(venv_python: Path) -> None:
    assert importlib.util.find_spec("igrun_gadget_unlink") is None
    assert importlib.util.find_spec("igrun_operator_droproot") is None
    assert "trace_unlink" not in {ep.name for ep in entry_points(group="igrun.gadgets")}
    assert "droproot" not in {ep.name for ep in entry_points(group="igrun.operators")}
    assert not list(EXAMPLES.glob("*/build")) and not list(EXAMPLES.rglob("*.bpf.o"))


def test_trace_unlink_reports_each_removal_exactly(cli: IgrunCli, tmp_path: Path) -> None:
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

    proc = cli.start("trace", "unlink", "--host", "-o", "json", env=ENV)
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
        assert event["runtime"]["containerName"] == ""  # a host process


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


def test_a_chain_without_the_containers_operator_is_one_line_naming_both(
    cli: IgrunCli, tmp_path: Path
) -> None:
    """An attaching gadget needs the selected containers: a config chain without the
    operator that provides them is refused before anything loads, in one line."""
    config = tmp_path / "chain.toml"
    config.write_text(
        '[[run]]\ngadget = "trace netnssyn"\n'
        'operators = [{name = "output", with = {output = "json"}}]\n'
    )
    done = cli.run("--config", str(config))
    assert done.returncode == 2
    assert done.stderr == (
        "igrun: error: gadget 'trace netnssyn' needs SelectedContainers, provided by operator "
        "'containers', which is not in this run's chain\n"
    )
    assert done.stdout == ""


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
