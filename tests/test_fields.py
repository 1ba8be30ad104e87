"""The shared event fields: ``struct gadget_process`` and ``struct gadget_connection`` filled
in the kernel and shown by their Python field groups, and the helpers for flags, errnos,
modes and durations.

The BPF test runs a small object (tests/bpf/fields_process.bpf.c) that sends one event for
each getppid() of a child whose comm, ids and parent are known, so every value is exact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gadgetlab import trace

from igrun.core import (
    Category,
    Field,
    GadgetContext,
    Kind,
    Schema,
    connection_fields,
    duration_field,
    errno_field,
    fields,
    flag_fields,
    mode_fields,
    process_fields,
)
from igrun.core.bpf.build import compile_bpf
from igrun.core.bpf.objects import BpfObject
from igrun.core.tracer import BpfTracer

SOURCE = Path(__file__).parent / "bpf" / "fields_process.bpf.c"
CHILD_COMM = "igrt-fields"
NOBODY = 65534
CHILD = f"""
import os, sys
with open("/proc/self/comm", "w") as f:
    f.write({CHILD_COMM!r})
os.setgid({NOBODY})
os.setuid({NOBODY})
print(os.getpid(), flush=True)
sys.stdin.readline()
os.getppid()
"""


# ---- the Python groups, over records made by hand -------------------------------------------


def test_process_fields_follow_the_order_given_and_read_the_nested_members() -> None:
    group = process_fields("comm pid", "mntns", about="of the sender")
    assert [f.name for f in group] == ["comm", "pid", "mntns"]
    assert [f.source for f in group] == ["proc.comm", "proc.pid", "proc.mntns_id"]
    assert group[1].description == "process id of the sender"
    assert group[2].json_key == "mountnsid" and "mntns" in group[2].tags
    assert group[2].column.hidden


def test_process_fields_take_a_prefix_another_member_and_changes() -> None:
    group = process_fields(
        "mntns pid comm", member="trigger", prefix="t", pid={"description": "who"}
    )
    assert [(f.name, f.source) for f in group] == [
        ("mntns", "trigger.mntns_id"),
        ("tpid", "trigger.pid"),
        ("tcomm", "trigger.comm"),
    ]
    assert group[1].description == "who"
    assert [f.name for f in process_fields()] == list(fields.PROCESS_NAMES)


def test_process_fields_name_a_member_the_struct_lacks() -> None:
    with pytest.raises(ValueError, match="no member pdi"):
        process_fields("pid pdi")
    with pytest.raises(ValueError, match="no member euid"):
        process_fields("pid", euid={"description": "x"})


def _batch(schema: Schema, dtype: list[tuple[str, Any]], rows: list[tuple[Any, ...]]) -> Any:
    records = np.array(rows, dtype=np.dtype(dtype))
    return schema.bind(records.dtype).decode(records.tobytes())


def _names(value: int) -> list[str]:
    return [name for bit, name in ((1, "A"), (2, "B"), (4, "C")) if value & bit]


def test_flag_fields_show_names_a_list_and_the_number() -> None:
    schema = Schema(flag_fields("flags", "flag names", _names, separator=" | "))
    batch = _batch(schema, [("flags", "<i4")], [(3,), (0,), (3,), (4,)])
    assert batch.to_dicts() == [
        {"flags": ["A", "B"], "flagsRaw": 3},
        {"flags": [], "flagsRaw": 0},
        {"flags": ["A", "B"], "flagsRaw": 3},
        {"flags": ["C"], "flagsRaw": 4},
    ]
    assert list(batch["flags"]) == ["A | B", "", "A | B", "C"]
    assert [f.json_key for f in schema] == ["-", "flags", "flagsRaw"]


def test_flag_fields_take_a_batch_decoder_instead() -> None:
    def decode(batch: Any) -> Any:
        out = np.empty(len(batch), dtype=object)
        out[:] = [
            [f"{op}:{v}"] for op, v in zip(batch.member("op"), batch.member("fl"), strict=True)
        ]
        return out

    schema = Schema(
        [*flag_fields("fl", "names", decode=decode, raw_name="fl_raw", raw_kind=Kind.UINT)]
    )
    batch = _batch(schema, [("fl", "<u8"), ("op", "<u4")], [(1, 7)])
    assert batch.to_dicts() == [{"flags": ["7:1"], "flagsRaw": 1}]
    assert list(batch["flags"]) == ["7:1"]
    with pytest.raises(ValueError, match="names or decode"):
        flag_fields("fl", "names")


def test_errno_field_reads_returned_values_and_plain_errnos() -> None:
    schema = Schema([errno_field("why"), errno_field("why", "err", "err", returned=False)])
    batch = _batch(schema, [("ret", "<i4"), ("err", "<u2")], [(-98, 111), (3, 0), (0, 13)])
    assert batch.to_dicts() == [
        {"error": "EADDRINUSE", "err": "ECONNREFUSED"},
        {"error": "", "err": ""},
        {"error": "", "err": "EACCES"},
    ]


def test_mode_fields_print_permissions_as_ig_does() -> None:
    schema = Schema(mode_fields("permissions"))
    batch = _batch(schema, [("mode", "<u4")], [(0o644,), (0o4755,), (0,)])
    assert batch.to_dicts() == [
        {"mode": "-rw-r--r--", "modeRaw": 0o644},
        {"mode": "-rwxr-xr-x", "modeRaw": 0o4755},
        {"mode": "----------", "modeRaw": 0},
    ]


def test_duration_field_names_its_unit() -> None:
    field = duration_field("lat", "latency of the call", "us", "delta_us", "latency")
    assert (field.description, field.source, field.json_key) == (
        "latency of the call, in microseconds",
        "delta_us",
        "latency",
    )
    with pytest.raises(ValueError, match="unit 'min'"):
        duration_field("lat", "latency", "min")


# ---- in the kernel ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fields_object(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fields")
    return compile_bpf(SOURCE, out / "fields_process.bpf.o", build_dir=out / "b")


@pytest.mark.bpf
def test_nested_structs_flatten_to_dotted_members(fields_object: Path) -> None:
    with BpfObject.open(fields_object) as obj:
        flat = obj.struct_dtype("event", nested=True)
        opaque = obj.struct_dtype("event")
    assert opaque.names == ("timestamp", "proc", "conn", "marker")
    assert opaque.fields["proc"][0].kind == "V"  # type: ignore[index]
    assert flat.itemsize == opaque.itemsize
    proc_at = opaque.fields["proc"][1]  # type: ignore[index]
    assert flat.fields["proc.mntns_id"][1] == proc_at  # type: ignore[index]
    assert flat.fields["proc.comm"][0] == np.dtype("S16")  # type: ignore[index]
    assert [n for n in flat.names or () if n.startswith("conn.")] == [
        "conn.saddr",
        "conn.daddr",
        "conn.sport",
        "conn.dport",
        "conn.ipversion",
    ]


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.bpf
def test_populate_fills_every_member_the_group_shows(
    fields_object: Path, child: subprocess.Popen[str]
) -> None:
    assert child.stdout is not None and child.stdin is not None
    pid = int(child.stdout.readline())
    stdin = child.stdin

    class FieldsTracer(BpfTracer):
        name = "fields"
        category = Category.TRACE
        description = "the shared fields, from getppid()"
        schema = Schema(
            [
                fields.timestamp(),
                *process_fields(),
                *connection_fields(member="conn"),
                Field("marker", Kind.UINT),
            ],
            struct="event",
        )

        def object_path(self) -> Any:
            return fields_object

        def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
            return {"target_pid": pid}

    def action() -> None:
        stdin.write("go\n")
        stdin.flush()
        child.wait(timeout=10)

    (event,) = trace(FieldsTracer, action)
    assert event["timestamp"] > 0
    del event["timestamp"]
    no_pod = {"namespace": "", "podname": "", "kind": ""}  # an address of no known pod
    assert event == {
        "mountnsid": os.stat(f"/proc/{os.getpid()}/ns/mnt").st_ino,
        "pid": pid,
        "tid": pid,
        "ppid": os.getpid(),
        "uid": NOBODY,
        "gid": NOBODY,
        "comm": CHILD_COMM,
        "ipversion": 4,
        "src": {"addr": "127.0.0.1", "version": 4, "port": 1234, **no_pod},
        "dst": {"addr": "10.0.0.2", "version": 4, "port": 443, **no_pod},
        "marker": 0x1EE7,
    }
