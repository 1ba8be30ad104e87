"""Optional programs: what the running kernel has, asked before load, through public API.

``tracepoint_exists`` and ``kernel_type_exists`` answer from tracefs and the kernel's BTF;
a :class:`BpfTracer` names the programs it can do without (``optional_programs``) and sets
anything else on the opened object in ``configure``; ``object_path`` may be a plain path.
The tracer here is made from tests/bpf/run_display.bpf.c, which has a program on a
tracepoint no kernel has.
"""

from __future__ import annotations

import os
import platform
import struct
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest

from igrun.core import (
    BpfError,
    BpfObject,
    BpfTracer,
    Category,
    Field,
    GadgetContext,
    Kind,
    Schema,
    compile_bpf,
    kernel_type_exists,
    run_gadget,
    skip_missing,
    tracepoint_exists,
)
from igrun.core.bpf.attachpoints import missing_attach_point  # the parser behind skip_missing

SOURCE = Path(__file__).parent / "bpf" / "run_display.bpf.c"
MISSING = "igrt_display_missing"


@pytest.fixture(scope="module")
def display(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("attachpoints")
    return compile_bpf(SOURCE, out / "run_display.bpf.o", build_dir=out / "b")


def test_tracepoint_exists() -> None:
    assert tracepoint_exists("syscalls", "sys_enter_getppid")
    assert not tracepoint_exists("syscalls", "sys_enter_igrun_no_such_call")
    assert not tracepoint_exists("igrun_no_such_category", "sys_enter_getppid")
    with pytest.raises(ValueError, match="is not a tracepoint name"):
        tracepoint_exists("syscalls", "../syscalls/sys_enter_getppid")


def test_kernel_type_exists() -> None:
    assert kernel_type_exists("task_struct")
    assert kernel_type_exists("vfs_read", "func")
    assert not kernel_type_exists("igrun_no_such_type")
    assert not kernel_type_exists("task_struct", "union")
    with pytest.raises(ValueError, match="kind must be one of"):
        kernel_type_exists("task_struct", "class")


@pytest.mark.parametrize(
    ("section", "missing"),
    [
        ("tracepoint/syscalls/sys_enter_getppid", None),
        ("tp/syscalls/sys_enter_igrun_nope", "tracepoint syscalls/sys_enter_igrun_nope"),
        ("raw_tp/sched_switch", None),
        ("tp_btf/igrun_nope", "tracepoint igrun_nope"),
        ("fentry/vfs_read", None),
        ("fexit/igrun_no_such_function", "kernel function igrun_no_such_function"),
        ("lsm/file_open", None),
        ("kprobe/igrun_no_such_function", None),  # cannot be told before attaching
        ("iter/task", None),
    ],
)
def test_missing_attach_point(section: str, missing: str | None) -> None:
    assert missing_attach_point(section) == missing


def test_skip_missing_sets_autoload_off_before_load(display: Path) -> None:
    with BpfObject.open(str(display)) as obj:
        assert skip_missing(obj) == [MISSING]
        assert not obj.programs[MISSING].autoload
        assert obj.programs["igrt_display_a"].autoload
        with pytest.raises(BpfError, match="no program igrt_nope"):
            skip_missing(obj, ["igrt_nope"])


@pytest.mark.bpf
def test_a_tracer_with_an_optional_program_runs(display: Path) -> None:
    """Public API only (``igrun.core``): an object path as a ``str``, an optional program on
    a tracepoint the kernel lacks, ``configure`` turning one more program off, a
    struct-valued constant, and the run through ``run_gadget``. One event per getppid() of
    this process, from igrt_display_a alone, with the struct's values."""

    class Display(BpfTracer):
        name = "display"
        category = Category.TRACE
        schema = Schema(
            [Field(name, Kind.UINT) for name in ("pid", "which", "uid", "secret")], "event"
        )
        buffer_map = "events"
        optional_programs: ClassVar[tuple[str, ...]] = (MISSING,)

        def object_path(self) -> Any:
            return str(display)

        def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
            # igrt_config is a struct: bytes of exactly its size, laid out as clang lays it out.
            return {"target_pid": os.getpid(), "igrt_config": struct.pack("<IIQ", 77, 0, 99)}

        def configure(self, ctx: GadgetContext, obj: BpfObject) -> None:
            obj.programs["igrt_display_b"].autoload = False

    with run_gadget(Display, {"runtime.timeout": "20s"}, []) as run:
        run.wait_ready()
        obj = run.bpf_object
        assert obj is not None
        assert [p.name for p in obj.programs.values() if p.autoload] == [
            "igrt_display_a",
            "igrt_display_other",
        ]
        os.getppid()
        os.getppid()
        run.cancel()
        rows = [tuple(e[n] for n in ("pid", "which", "uid", "secret")) for e in run.events()]
    assert rows == [(os.getpid(), 1, 77, 99), (os.getpid(), 1, 77, 99)]
    assert run.lost is None  # run_display's ring buffers have no lost counter


@pytest.mark.bpf
def test_object_path_may_be_a_path(display: Path) -> None:
    """``object_path`` returning a :class:`Path` loads that file too."""

    class Plain(BpfTracer):
        name = "plain"
        category = Category.TRACE
        schema = Schema([Field("pid", Kind.UINT)], "event")
        optional_programs: ClassVar[tuple[str, ...]] = (MISSING,)

        def object_path(self) -> Any:
            return display

    with run_gadget(Plain, {"runtime.timeout": "20s"}, [], collect=False) as run:
        run.wait_ready()
        assert run.bpf_object is not None and run.bpf_object.loaded
        assert run.bpf_object.source == str(display)
        assert not run.bpf_object.programs[MISSING].autoload


UNLINK_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "igrun-gadget-unlink"


def test_the_unlink_examples_optional_programs(tmp_path: Path) -> None:
    """The example names real programs of its object as optional (skip_missing refuses any
    other name), and exactly those of unlink(2) and rmdir(2) are skipped where the kernel has
    no such calls: none on x86_64, all four on arm64."""
    sys.path.insert(0, str(UNLINK_EXAMPLE))
    try:
        from igrun_gadget_unlink import TraceUnlink
    finally:
        sys.path.remove(str(UNLINK_EXAMPLE))
        sys.modules.pop("igrun_gadget_unlink", None)  # other tests import the installed one
    source = UNLINK_EXAMPLE / "igrun_gadget_unlink" / "unlink.bpf.c"
    path = compile_bpf(source, tmp_path / "unlink.bpf.o", build_dir=tmp_path / "b")
    optional = TraceUnlink.optional_programs
    assert optional == ("ig_unlink_e", "ig_unlink_x", "ig_rmdir_e", "ig_rmdir_x")
    expected = {"x86_64": [], "aarch64": list(optional)}[platform.machine()]
    with BpfObject.open(str(path)) as obj:
        assert skip_missing(obj, optional) == expected
        assert [n for n, p in obj.programs.items() if p.autoload] == [
            n for n in obj.programs if n not in expected
        ]
