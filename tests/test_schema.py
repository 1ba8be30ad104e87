"""Schema and Batch: decoding whole batches of C records, columns added by operators."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from igrun.core.events.schema import Batch, Column, Field, Kind, Schema, decode_cstrings

LAYOUT = np.dtype(
    {
        "names": ["pid", "retval", "comm"],
        "formats": ["<u4", "<i4", "S16"],
        "offsets": [0, 4, 8],
        "itemsize": 24,
    }
)

SCHEMA = Schema(
    [
        Field("pid", Kind.UINT, "process id"),
        Field("ret", Kind.INT, "return value", member="retval", json="retval"),
        Field("comm", Kind.STR, "command", column=Column(width=16)),
        Field(
            "double",
            Kind.UINT,
            "pid times two",
            decode=lambda b: b["pid"] * 2,
            column=Column(hidden=True),
        ),
    ],
    struct="event",
)


def records(*rows: tuple[int, int, bytes]) -> bytes:
    return b"".join(struct.pack("<Ii16s", *row) for row in rows)


def test_decode_a_batch_of_c_records() -> None:
    schema = SCHEMA.bind(LAYOUT)
    batch = schema.decode(records((10, 0, b"bash"), (11, -2, b"ls\0junk")))
    assert len(batch) == 2
    assert batch["pid"].tolist() == [10, 11]
    assert batch["ret"].tolist() == [0, -2]
    assert list(batch["comm"]) == ["bash", "ls"]  # stops at the first NUL
    assert batch["double"].tolist() == [20, 22]
    assert batch.to_dicts()[1] == {"pid": 11, "retval": -2, "comm": "ls", "double": 22}
    event = next(batch.events())
    assert event["pid"] == 10 and event["comm"] == "bash"


def test_bind_checks_members() -> None:
    with pytest.raises(ValueError, match="has no member retval"):
        SCHEMA.bind(np.dtype([("pid", "<u4"), ("comm", "S16")]))


def test_take_select_and_concat_keep_added_columns() -> None:
    schema = SCHEMA.bind(LAYOUT).extend([Field("runtime.containerName", Kind.STR)])
    batch = schema.decode(records((1, 0, b"a"), (2, 0, b"b"), (3, 0, b"c")))
    names = np.array(["x", "y", "z"], dtype=object)
    batch.set_column("runtime.containerName", names)
    kept = batch.take(batch["pid"] != 2)
    assert kept["pid"].tolist() == [1, 3]
    assert list(kept["runtime.containerName"]) == ["x", "z"]
    ordered = batch.take(np.array([2, 0]))
    assert list(ordered["comm"]) == ["c", "a"]
    both = Batch.concat([kept, ordered])
    assert both["pid"].tolist() == [1, 3, 3, 1]
    assert list(both["runtime.containerName"]) == ["x", "z", "z", "x"]
    with pytest.raises(KeyError):
        batch.set_column("nope", names)
    with pytest.raises(ValueError, match="3 events"):
        batch.set_column("runtime.containerName", names[:2])


def test_default_columns_skip_hidden_and_follow_order() -> None:
    schema = Schema(
        [
            Field("b", Kind.INT, column=Column(order=2)),
            Field("a", Kind.INT, column=Column(order=1)),
            Field("h", Kind.INT, column=Column(hidden=True)),
        ]
    )
    assert [f.name for f in schema.default_columns()] == ["a", "b"]
    assert schema["a"].width == 7


def test_decode_cstrings_handles_invalid_utf8() -> None:
    out = decode_cstrings(np.array([b"ok", b"\xff\xfe"], dtype="S4"))
    assert list(out) == ["ok", "\ufffd\ufffd"]


def test_l4_endpoints_look_like_igs() -> None:
    from igrun.core.events.endpoints import l4_endpoint
    from igrun.core.events.helpers import ip_string_to_bytes

    layout = np.dtype([("daddr", "V16"), ("dport", "<u2"), ("ipversion", "u1")])
    schema = Schema(
        l4_endpoint("dst", "daddr", "dport", "ipversion", "destination"), struct="e"
    ).bind(layout)
    raw = np.zeros(3, dtype=layout)
    raw["daddr"] = [
        ip_string_to_bytes("10.1.2.3").ljust(16, b"\0"),
        ip_string_to_bytes("::1"),
        ip_string_to_bytes("10.1.2.3").ljust(16, b"\0"),
    ]
    raw["dport"] = [443, 8080, 53]
    raw["ipversion"] = [4, 6, 4]
    batch = Batch(schema, raw)
    assert batch["dst"].tolist() == ["10.1.2.3:443", "[::1]:8080", "10.1.2.3:53"]
    assert batch.to_dicts(omit_empty=True)[1] == {
        "dst": {"addr": "::1", "version": 6, "port": 8080}
    }
    # ig's L3Endpoint's pod keys, empty (left out of JSON) until an address is a known pod's
    no_pod = {"namespace": "", "podname": "", "kind": ""}
    assert batch.to_dicts()[1] == {"dst": {"addr": "::1", "version": 6, "port": 8080, **no_pod}}
