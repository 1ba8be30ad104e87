"""What the container tests share: checks for the tools, markers, and reading igrun's events."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import IgrunCli

IMAGE = "localhost/igrun-test-busybox:latest"


def needs(*tools: str) -> None:
    """Skip without the tools, or fail when BPF tests are required (CI installs them)."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing and os.environ.get("IGRUN_REQUIRE_BPF") != "1":
        pytest.skip(f"needs {', '.join(missing)}")
    assert not missing, f"{missing} must be installed (scripts/install.sh does it)"


@dataclass
class Running:
    name: str
    id: str
    pid: int
    runtime: str

    @property
    def mntns(self) -> int:
        return os.stat(f"/proc/{self.pid}/ns/mnt").st_ino


def marker() -> str:
    return f"igrun-{uuid.uuid4().hex[:8]}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def stop_and_read(cli: IgrunCli, proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """Let the last events drain, end the run with Ctrl-C, and return its JSON events."""
    time.sleep(0.5)
    proc.send_signal(2)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    return cli.events(out)


def with_arg(events: list[dict[str, Any]], arg: str) -> list[dict[str, Any]]:
    """The echo of ``arg`` itself (not the command that asked for it)."""
    return [e for e in events if e["args"] == ["/bin/echo", arg]]


def oci_bundle(
    runtime: str,
    folder: Path,
    rootfs: Path,
    args: list[str],
    annotations: dict[str, str] | None = None,
    cgroups_path: str = "",
) -> Path:
    """An OCI bundle made in ``folder`` from ``runtime spec`` (runc or crun): ``args`` run in
    ``rootfs`` (read-only, so several containers may share it), without a terminal."""
    folder.mkdir()
    subprocess.run([runtime, "spec"], cwd=folder, check=True)
    spec = json.loads((folder / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": str(rootfs), "readonly": True}
    if cgroups_path:
        spec["linux"]["cgroupsPath"] = cgroups_path
    if annotations is not None:
        spec["annotations"] = annotations
    (folder / "config.json").write_text(json.dumps(spec))
    return folder


@contextlib.contextmanager
def runc_container(
    rootfs: Path, bundle: Path, annotations: dict[str, str], name: str = ""
) -> Iterator[Running]:
    """A plain runc container (no manager above it) from an OCI bundle made in ``bundle``,
    looping on ``sleep``, with ``annotations``; named ``name`` (else its id) in the
    :class:`Running` it gives. Deleted afterwards, with its cgroups."""
    needs("runc")
    id = f"igrun-test-{uuid.uuid4().hex[:8]}"
    loop = ["sh", "-c", "while true; do sleep 1; done"]
    oci_bundle("runc", bundle, rootfs, loop, annotations, cgroups_path=f"/igrun-test/{id}")
    # The container inherits runc's stdio: a captured pipe would never reach EOF.
    subprocess.run(
        ["runc", "run", "-d", "--bundle", str(bundle), id],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
    )
    state = json.loads(
        subprocess.run(["runc", "state", id], check=True, capture_output=True, text=True).stdout
    )
    try:
        yield Running(name or id, id, int(state["pid"]), "runc")
    finally:
        subprocess.run(["runc", "delete", "-f", id], capture_output=True)
        for cgroup in Path("/sys/fs/cgroup").glob("*/igrun-test"):
            with contextlib.suppress(OSError):
                (cgroup / id).rmdir()
            with contextlib.suppress(OSError):
                cgroup.rmdir()  # when no other test container is left in it


@pytest.fixture(scope="session")
def crun() -> None:
    """crun, able to run here. crun 1.8 refuses a hybrid cgroup layout whose v2 hierarchy
    has a controller (this machine's has hugetlb): hugetlb is given a v1 hierarchy of its
    own, mounted where hybrid hosts mount their v1 controllers. That lasts for the boot (the
    kernel keeps the hierarchy once a cgroup was made in it), as on a host set up for crun."""
    needs("crun")
    unified = Path("/sys/fs/cgroup/unified")
    controllers = unified / "cgroup.controllers"
    if not controllers.exists() or "hugetlb" not in controllers.read_text().split():
        return
    subtree = unified / "cgroup.subtree_control"
    if "hugetlb" in subtree.read_text().split():
        subtree.write_text("-hugetlb")
    moved = Path("/sys/fs/cgroup/hugetlb")
    moved.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(moved)], check=True)
