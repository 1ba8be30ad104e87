"""Shared fixtures. The ``bpf`` marker, its skip (or, with ``IGRUN_REQUIRE_BPF=1`` as in CI,
its failure) where BPF cannot run, and the runners of gadgets come from ``igrun.testing``,
the plugin igrun ships for every gadget's tests."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import igrun.testing as testing

ROOT = Path(__file__).resolve().parent.parent


# ---- running the real igrun command ------------------------------------------------------

IGRUN = list(testing.IGRUN)
PIN_ROOT = testing.PIN_ROOT


@dataclass
class IgrunCli(testing.IgrunCli):
    """igrun.testing's runner, with ``-v`` on: a failing test shows igrun's debug lines."""

    verbose: bool = True

    @staticmethod
    def pin_dirs_of(pid: int) -> list[Path]:
        return testing.pins_of(pid)


@pytest.fixture
def igrun_cli() -> IgrunCli:
    return IgrunCli()


# ---- real containers -----------------------------------------------------------------------

BUSYBOX = Path("/bin/busybox")


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root file system: enough for sh, sleep, echo."""
    root = tmp_path_factory.mktemp("rootfs")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "run"):
        (root / d).mkdir()
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    return root


@pytest.fixture(scope="session")
def rootfs_tar(rootfs: Path) -> Path:
    """The busybox root file system as a tar archive, for ``podman import``/``docker import``."""
    archive = rootfs.parent / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    return archive


# ---- network namespaces ----------------------------------------------------------------------


@dataclass
class NetnsPair:
    """Two network namespaces joined by a veth pair: ``a`` at 10.231.0.1, ``b`` at .2."""

    a: str
    b: str
    addr_a: str = "10.231.0.1"
    addr_b: str = "10.231.0.2"

    def run(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


@pytest.fixture
def netns_pair() -> Any:
    suffix = uuid.uuid4().hex[:8]  # unique across processes: parallel runs never share one
    a, b = f"igrun-a{suffix}", f"igrun-b{suffix}"
    va, vb = f"igva{suffix}", f"igvb{suffix}"
    pair = NetnsPair(a, b)
    commands = [
        ["ip", "netns", "add", a],
        ["ip", "netns", "add", b],
        ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
        ["ip", "link", "set", va, "netns", a],
        ["ip", "link", "set", vb, "netns", b],
        ["ip", "-n", a, "addr", "add", f"{pair.addr_a}/24", "dev", va],
        ["ip", "-n", b, "addr", "add", f"{pair.addr_b}/24", "dev", vb],
        ["ip", "-n", a, "link", "set", "lo", "up"],
        ["ip", "-n", b, "link", "set", "lo", "up"],
        ["ip", "-n", a, "link", "set", va, "up"],
        ["ip", "-n", b, "link", "set", vb, "up"],
    ]
    try:
        for cmd in commands:
            subprocess.run(cmd, check=True, capture_output=True)
        yield pair
    finally:
        for ns in (a, b):  # the veth pair goes with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
