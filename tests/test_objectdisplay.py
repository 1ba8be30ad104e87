"""How ``igrun/display.h`` typedefs and annotations show: the texts, exactly, and the
mistakes an object can make in its annotations (one line each, before anything loads)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from igrun.core.bpf.build import compile_bpf
from igrun.core.errors import UsageError
from igrun.core.events.schema import Column, Field, Kind
from igrun.core.objectrun.display import (
    Annotations,
    duration,
    file_mode,
    flag_names,
    group_name,
    signal_name,
    user_name,
)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0ns"), (999, "999ns"), (1000, "1µs"), (1_500, "1.5µs"), (1_500_000, "1.5ms"),
        (2_000_000_000, "2s"), (1_234_567_891, "1.234567891s"), (90_000_000_000, "90s"),
    ],
)  # fmt: skip
def test_duration(ns: int, text: str) -> None:
    assert duration(ns) == text


def test_file_mode_signal_and_flags() -> None:
    assert file_mode(0o640) == "0640"
    assert file_mode(0o100644) == "0100644"
    assert file_mode(0o7) == "0007"
    assert signal_name(9) == "SIGKILL"
    assert signal_name(0) == ""
    assert signal_name(200) == "200"
    bits = {0: "NONE", 1: "READ", 2: "WRITE", 4: "EXEC"}
    assert flag_names(bits, 0) == "NONE"
    assert flag_names(bits, 5) == "READ|EXEC"
    assert flag_names(bits, 1 | 0x40) == "READ|0x40"
    assert flag_names({1: "A"}, 0) == ""


def test_user_and_group_names_from_this_host() -> None:
    assert user_name(0) == "root"
    assert group_name(0) == "root"
    assert user_name(4_000_000_123) == "4000000123"  # no such user: the number
    assert group_name(4_000_000_123) == "4000000123"


def test_annotations_apply_to_the_column() -> None:
    notes = Annotations.parse(["igrun:width=40", "igrun:hidden", "other:tool"], "x")
    assert notes == Annotations(width=40, hidden=True)
    f = notes.apply(Field("path", Kind.STR))
    assert f.column == Column(width=40, hidden=True)
    for bad in ("igrun:width=0", "igrun:width=x", "igrun:colour=red", "igrun:hidden=1"):
        with pytest.raises(UsageError, match=f"x: unknown annotation '{bad}'"):
            Annotations.parse([bad], "x")


BAD_SOURCE = r"""
#include <vmlinux.h>
#include <bpf/bpf_helpers.h>
#include <igrun/buffer.h>
#include <igrun/display.h>
#include <igrun/macros.h>

struct event {
	__u32 pid MEMBER_TAG;
};

GADGET_RINGBUF(events);
GADGET_TRACER(bad, events, event);

SEC("tracepoint/syscalls/sys_enter_getppid")
int igrt_bad(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ('__attribute__((btf_decl_tag("igrun:colour=red")))',
         "struct event: pid: unknown annotation 'igrun:colour=red' (igrun/display.h)"),
        ("GADGET_FLAGS", "pid (__u32): GADGET_FLAGS needs a member of an enum type"),
    ],
)  # fmt: skip
def test_a_bad_annotation_is_one_line(tmp_path: Path, tag: str, message: str) -> None:
    source = tmp_path / "bad.bpf.c"
    source.write_text(BAD_SOURCE.replace("MEMBER_TAG", tag))
    obj = compile_bpf(source, tmp_path / "bad.bpf.o", build_dir=tmp_path / "b")
    done = subprocess.run(
        [sys.executable, "-m", "igrun.core.cli", "run", str(obj), "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("igrun: error: ") and line.endswith(message)
