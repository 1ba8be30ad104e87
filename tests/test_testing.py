"""igrun.testing, the pytest plugin igrun ships: its checks can fail, its deadlines hold, and
a package's tests get it with no conftest at all."""

from __future__ import annotations

import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from igrun.testing import IgrunCli, assert_released, bpf_ids_of


def test_the_plugin_is_registered_for_pytest() -> None:
    (plugin,) = [ep for ep in entry_points(group="pytest11") if ep.name == "igrun"]
    assert plugin.value == "igrun.testing"


def test_start_keeps_its_deadline_when_igrun_prints_nothing() -> None:
    """The deadline holds although the process writes no line at all (reading stderr line
    by line would block past it)."""
    silent = IgrunCli(command=(sys.executable, "-c", "import time; time.sleep(60)"))
    started = time.monotonic()
    with pytest.raises(AssertionError, match="did not get ready within 1"):
        silent.start(timeout=1)
    assert time.monotonic() - started < 10


def test_start_fails_as_soon_as_igrun_exits() -> None:
    failing = IgrunCli(command=(sys.executable, "-c", "import sys; sys.exit('no gadget')"))
    started = time.monotonic()
    with pytest.raises(AssertionError, match="exit 1"):
        failing.start(timeout=60)
    assert time.monotonic() - started < 10


@pytest.mark.bpf
def test_the_leak_check_sees_a_run_that_is_still_going() -> None:
    """While igrun runs, what it held at ready is still there: the check fails (it cannot
    pass by looking at the wrong thing); once igrun ended, it passes."""
    run = IgrunCli().start("trace", "exec", "--host", "-o", "json")
    try:
        assert run.ids.programs and run.ids.links
        with pytest.raises(AssertionError, match="left behind"):
            assert_released(run.ids, wait=0.2)
    finally:
        run.stop()
    assert run.returncode == 0
    run.assert_released()


@pytest.mark.bpf
def test_ids_are_those_of_one_process() -> None:
    """Another process's runs are not this one's: a check of one run is not disturbed by
    others going on beside it."""
    run = IgrunCli().start("trace", "exec", "--host")
    try:
        mine = bpf_ids_of()
        assert not (run.ids.programs & mine.programs)
    finally:
        run.stop()


PACKAGE_TEST = """
import subprocess

import pytest

pytestmark = pytest.mark.bpf


def test_exec_seen(igrun_trace):
    child = {}

    def action():
        proc = subprocess.Popen(["/bin/true", "from-a-package"])
        child["pid"] = proc.pid
        proc.wait()

    events = igrun_trace("trace exec", action, {"operator.containers.host": True})
    (event,) = [e for e in events if e["args"] == ["/bin/true", "from-a-package"]]
    assert event["pid"] == child["pid"]


def test_cli_seen(igrun_cli):
    run = igrun_cli.start("trace", "exec", "--host", "-o", "json")
    proc = subprocess.Popen(["/bin/true", "from-the-cli"])
    proc.wait()
    out, err = run.stop()
    assert run.returncode == 0, err
    events = [e for e in igrun_cli.events(out) if e["args"] == ["/bin/true", "from-the-cli"]]
    assert [e["pid"] for e in events] == [proc.pid]
    run.assert_released()
"""


@pytest.mark.bpf
def test_a_package_gets_the_fixtures_without_a_conftest(tmp_path: Path) -> None:
    """What a gadget package's tests look like: fixtures and the bpf marker from the plugin,
    in a folder with no conftest, run by a pytest of its own."""
    (tmp_path / "test_package.py").write_text(PACKAGE_TEST)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
