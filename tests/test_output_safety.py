"""Hostile text stays harmless: what an unprivileged user puts in exec args, or a container's
creator in its annotations, is shown escaped by the columns output, ``list-containers`` and
the log lines; never as a control character a terminal would act on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from containerlab import Running, runc_container
from test_columnlines import unsafe as controls

from igrun.core.output.columns import fit
from igrun.core.output.printable import printable
from igrun.operators.containers import ENRICHED

if TYPE_CHECKING:
    from conftest import IgrunCli

pytestmark = pytest.mark.bpf

USER = 1001


def test_unprivileged_exec_args_cannot_forge_rows(igrun_cli: IgrunCli) -> None:
    """The measured attack: args that erase the real row and forge rows with uid 0. Escaped,
    the one row is the real one, with uid 1001, and its args show the escapes."""
    mark = f"igrun-{uuid.uuid4().hex[:8]}"
    forged = f"\n  4242      0 {mark}-forged\x1b]0;title\x07\u202e"
    evil = f"x\r\x1b[2K{mark}{forged}"
    proc = igrun_cli.start(
        "trace", "exec", "--host", "-o", "columns=uid,comm,args", "-F", f"uid:{USER}"
    )
    child = subprocess.run(
        ["/bin/echo", evil], user=USER, group=USER, extra_groups=[], capture_output=True
    )
    assert child.returncode == 0
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert controls(out) == []
    header, *rows = out.splitlines()
    assert header.split() == ["UID", "COMM", "ARGS"]
    mine = [r for r in rows if mark in r]
    assert len(mine) == 1, rows  # no forged row
    uid, comm, args = mine[0].split(maxsplit=2)
    assert (uid, comm) == (str(USER), "echo")
    assert args == "/bin/echo " + (
        f"x\\r\\x1b[2K{mark}\\n  4242      0 {mark}-forged\\x1b]0;title\\x07\\u202e"
    )


def test_log_lines_escape_what_they_show(igrun_cli: IgrunCli) -> None:
    """A name echoed in a log line (here the -c name, as a container's would be) is escaped:
    the line steers nothing."""
    name = "db\x1b[2J\x1b[H\u202ex"
    done = igrun_cli.run("trace", "exec", "-c", name, "-t", "1s")
    assert done.returncode == 0, done.stderr
    assert controls(done.stderr) == []
    (line,) = [x for x in done.stderr.splitlines() if "container_not_found_yet" in x]
    assert r" name=db\x1b[2J\x1b[H\u202ex " in line


HOSTILE_NAME = "web\x1b[2J\x1b[H\r\nrunc     root-forged"
HOSTILE_POD = "pod\x9b31m\u2028x"


@pytest.fixture
def hostile_runc(rootfs: Path, tmp_path: Path) -> Iterator[Running]:
    """A plain runc container whose creator chose its annotations: a name that clears the
    screen and starts a forged row, a pod name with a C1 CSI and a line separator."""
    annotations = {
        "io.kubernetes.container.name": HOSTILE_NAME,
        "io.kubernetes.pod.name": HOSTILE_POD,
    }
    with runc_container(rootfs, tmp_path / "bundle", annotations, HOSTILE_NAME) as running:
        yield running


def test_hostile_container_metadata_is_escaped(igrun_cli: IgrunCli, hostile_runc: Running) -> None:
    """list-containers columns (JSON keeps the text as it is) and a gadget's columns."""
    listed = igrun_cli.run("list-containers", "-r", "runc")
    assert listed.returncode == 0, listed.stderr
    assert controls(listed.stdout) == []
    (row,) = [r for r in listed.stdout.splitlines() if hostile_runc.id[:12] in r]
    assert row.split()[:2] == ["runc", r"web\x1b[2J\x1b[H\r\nrunc"]
    as_json = igrun_cli.run("list-containers", "-r", "runc", "-o", "json")
    (record,) = [
        c for c in map(json.loads, as_json.stdout.splitlines()) if c["id"] == hostile_runc.id
    ]
    assert record["name"] == HOSTILE_NAME

    proc = igrun_cli.start(
        "trace", "exec", "-r", "runc", "-o", "columns=k8s.pod,runtime.containerName,args"
    )
    mark = f"igrun-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["runc", "exec", hostile_runc.id, "/bin/echo", mark], check=True, capture_output=True
    )
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert controls(out) == []
    (row,) = [r for r in out.splitlines() if mark in r]
    fields = {f.name: f for f, _ in ENRICHED}
    pod, name = fields["k8s.pod"], fields["runtime.containerName"]
    assert printable(HOSTILE_POD) == r"pod\u009b31m\u2028x"
    cells = [
        fit(printable(HOSTILE_POD), pod.width, pod),
        fit(printable(HOSTILE_NAME), name.width, name),
    ]
    assert row.startswith(" ".join(cells) + " ")
    assert "…" in row  # the escaped text is what is fitted, and it is too long
    assert row.endswith(f"/bin/echo {mark}")
    assert os.path.exists(f"/proc/{hostile_runc.pid}")  # it was the live container
