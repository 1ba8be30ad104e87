"""Syscall names of ``gadget_syscall`` members: the tables igrun ships, exactly.

The x86_64 table must say what this machine's kernel headers say (when they are installed),
so a table that drifts from the generator fails here; aarch64's numbers are checked against
the kernel's generic table by hand-picked calls whose numbers differ from x86_64's.
"""

from __future__ import annotations

import importlib.util
import platform
from pathlib import Path

import pytest

from igrun.core.events.syscalls import syscall_name, syscall_table

GENERATOR = Path(__file__).resolve().parent.parent / "scripts" / "gen_syscalls.py"
INCLUDE = Path("/usr/include")


@pytest.mark.parametrize(
    ("machine", "number", "name"),
    [
        ("x86_64", 0, "read"), ("x86_64", 59, "execve"), ("x86_64", 110, "getppid"),
        ("x86_64", 257, "openat"), ("x86_64", 435, "clone3"), ("x86_64", 452, "fchmodat2"),
        ("aarch64", 63, "read"), ("aarch64", 221, "execve"), ("aarch64", 173, "getppid"),
        ("aarch64", 56, "openat"), ("aarch64", 25, "fcntl"), ("aarch64", 79, "newfstatat"),
        ("aarch64", 38, "renameat"), ("aarch64", 435, "clone3"), ("aarch64", 452, "fchmodat2"),
        ("arm64", 56, "openat"),
    ],
)  # fmt: skip
def test_names_by_machine(machine: str, number: int, name: str) -> None:
    assert syscall_name(number, machine) == name


def test_unknown_numbers_and_machines_show_the_number() -> None:
    assert syscall_name(0xFFFFF, "x86_64") == "1048575"
    assert syscall_name(59, "riscv128") == "59"
    assert syscall_table("riscv128") == {}
    assert "unlink" not in syscall_table("aarch64").values()  # only unlinkat there
    assert syscall_name(87, "x86_64") == "unlink"


def test_this_machine_has_a_table() -> None:
    assert syscall_table() is syscall_table(platform.machine())
    assert len(syscall_table()) > 300


def test_the_x86_64_table_is_what_the_headers_say() -> None:
    if not next(INCLUDE.glob("*/asm/unistd_64.h"), None):
        pytest.skip("no kernel headers (linux-libc-dev) on this machine")
    spec = importlib.util.spec_from_file_location("gen_syscalls", GENERATOR)
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    from_headers = {nr: name for name, nr in generator.x86_64(INCLUDE).items()}
    shipped = syscall_table("x86_64")
    assert {nr: shipped[nr] for nr in from_headers} == from_headers
    assert {nr: name for name, nr in generator.aarch64(INCLUDE).items()}.items() <= (
        syscall_table("aarch64").items()
    )
