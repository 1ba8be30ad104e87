"""Shared fixtures; the ``bpf`` marker skips where BPF cannot run, unless it is required.

With ``IGRUN_REQUIRE_BPF=1`` (as in CI) a BPF test that cannot run fails instead of skipping, so
a green run always means the gadgets really ran in the kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bpf_unavailable() -> str | None:
    """Why BPF tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/kernel/btf/vmlinux").exists():
        return "kernel has no BTF"
    from igrun.core.pins import BPFFS, fs_type

    if fs_type(BPFFS) != "bpf":
        return f"bpffs is not mounted at {BPFFS}"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("bpf") is None:
        return
    reason = bpf_unavailable()
    if reason is None:
        return
    if os.environ.get("IGRUN_REQUIRE_BPF") == "1":
        pytest.fail(f"BPF is required (IGRUN_REQUIRE_BPF=1) but {reason}", pytrace=False)
    pytest.skip(reason)


# ---- running the real igrun command ------------------------------------------------------

IGRUN = [sys.executable, "-m", "igrun.core.cli"]
PIN_ROOT = Path("/sys/fs/bpf/gadget")


@dataclass
class IgrunCli:
    """Starts ``igrun`` as users do and reads what it prints."""

    command: tuple[str, ...] = tuple(IGRUN)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start igrun with -v and return once its programs are attached."""
        proc = subprocess.Popen(
            [*self.command, *args, "-v"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "gadget_started" in line:
                return proc
            if time.monotonic() > deadline:
                break
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"igrun did not start: {out}\n{''.join(seen)}{err}")

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout
        )

    @staticmethod
    def events(stdout: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in stdout.split("\n") if line.startswith("{")]

    @staticmethod
    def pin_dirs_of(pid: int) -> list[Path]:
        if not PIN_ROOT.is_dir():
            return []
        return [d for d in PIN_ROOT.iterdir() if d.name.startswith(f"{pid}-")]

    @staticmethod
    def loaded_programs() -> set[str]:
        out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, check=True)
        return {p.get("name", "") for p in json.loads(out.stdout)}


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
    suffix = f"{os.getpid() % 100000}"
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
