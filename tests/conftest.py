"""Shared fixtures; the ``bpf`` marker skips where BPF cannot run, unless it is required.

With ``IGRUN_REQUIRE_BPF=1`` (as in CI) a BPF test that cannot run fails instead of skipping, so
a green run always means the gadgets really ran in the kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

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
