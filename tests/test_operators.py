"""The built-in operators on synthetic batches: exact rows in, exact rows (or text) out."""

from __future__ import annotations

import errno
import io
import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import structlog
import yaml

from igrun.core import Category, Column, Field, Gadget, GadgetContext, GadgetType, Kind, Schema
from igrun.core.errors import OutputClosed, OutputError, ParamError
from igrun.core.events.schema import Batch
from igrun.core.operator import Chain, Operator
from igrun.core.params import Params
from igrun.core.run.local import RUNTIME_PARAMS
from igrun.operators.filter import FilterOperator, parse_filter, split_filters
from igrun.operators.limit import LimitOperator
from igrun.operators.output import OutputOperator, parse_output, scale_widths, window_line
from igrun.operators.sort import SortOperator, parse_sort, sort_batch

LAYOUT = np.dtype([("pid", "<u4"), ("ret", "<i4"), ("comm", "S16"), ("ts", "<u8")])
SCHEMA = Schema(
    [
        Field("pid", Kind.UINT, column=Column(align="right")),
        Field("ret", Kind.INT, json="retval", column=Column(width=4, align="right")),
        Field("comm", Kind.STR, column=Column(width=8)),
        Field("ts", Kind.TIME, column=Column(hidden=True)),
        Field("args", Kind.LIST, decode=lambda b: _args(b), column=Column(width=10)),
    ],
    struct="event",
).bind(LAYOUT)


def _args(batch: Batch) -> Any:
    out = np.empty(len(batch), dtype=object)
    out[:] = [[c.decode(), "-x"] for c in batch.member("comm").tolist()]
    return out


def batch(*rows: tuple[int, int, str]) -> Batch:
    raw = np.array([(p, r, c.encode(), 1_700_000_000_123_456_789) for p, r, c in rows], LAYOUT)
    return Batch(SCHEMA, raw)


ROWS = batch((10, 0, "bash"), (20, -2, "ls"), (30, 0, "git"), (40, -13, "bash"))


class Tracer(Gadget):
    name = "t"
    category = Category.TRACE
    schema = SCHEMA


class Top(Tracer):
    name = "top"
    category = Category.TOP
    type = GadgetType.TRACE_INTERVALS


class Snap(Tracer):
    name = "snap"
    category = Category.SNAPSHOT
    type = GadgetType.ONE_SHOT


def context(gadget: type[Gadget] = Tracer, interval: str = "0") -> GadgetContext:
    runtime = Params(RUNTIME_PARAMS, {"interval": interval})
    ctx = GadgetContext("t", gadget, Params(()), runtime, {}, structlog.get_logger())
    ctx.schema = SCHEMA
    return ctx


def make(cls: type[Operator], ctx: GadgetContext, **values: str) -> Any:
    op = cls.instantiate(ctx, Params(cls.params, values))
    if op is not None:
        op.pre_run(SCHEMA)
    return op


def pids(b: Batch) -> list[int]:
    return b["pid"].tolist()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("pid:20", [20]),
        ("pid:!20", [10, 30, 40]),
        ("pid:>20", [30, 40]),
        ("pid:>=20", [20, 30, 40]),
        ("pid:<20", [10]),
        ("pid:<=20", [10, 20]),
        ("ret:-2", [20]),
        ("ret:<0", [20, 40]),
        ("comm:bash", [10, 40]),
        ("comm:!bash", [20, 30]),
        ("comm:>c", [20, 30]),
        ("comm:~^g", [30]),
        ("comm:!~sh$", [20, 30]),
        ("args:git -x", [30]),
        ("args:~l. -x", [20]),
        ("retval:0", [10, 30]),
        ("PID:10", [10]),
    ],
)
def test_filter_expressions(expr: str, expected: list[int]) -> None:
    op = make(FilterOperator, context(), filter=expr)
    assert pids(op.process(ROWS)) == expected


def test_string_filters_decide_once_per_distinct_value() -> None:
    """C strings are made distinct in numpy and decoded as every other reader decodes them
    (cut at the first NUL, invalid UTF-8 replaced); coded columns are tested on their table."""
    raw = np.zeros(5, LAYOUT)
    raw["pid"] = [1, 2, 3, 4, 5]
    raw["comm"] = [b"bash\0junk", b"bash", b"caf\xc3\xa9", b"\xff", b"bash"]
    b = Batch(SCHEMA.extend([Field("runtime.containerName", Kind.STR)]), raw)
    b.set_coded(
        "runtime.containerName",
        np.array(["web", "db", ""], dtype=object),
        np.array([0, 1, -1, 0, 2]),
    )
    for expr, expected in [
        ("comm:bash", [1, 2, 5]),
        ("comm:café", [3]),
        ("comm:\ufffd", [4]),
        ("comm:~^b", [1, 2, 5]),
        ("runtime.containerName:web", [1, 4]),
        ("runtime.containerName:!web", [2, 3, 5]),
        ("runtime.containerName:~^$", [3, 5]),
    ]:
        ctx = context()
        ctx.schema = b.schema
        op = FilterOperator.instantiate(ctx, Params(FilterOperator.params, {"filter": expr}))
        assert op is not None
        op.pre_run(b.schema)
        assert pids(op.process(b)) == expected, expr


def test_filters_are_anded_and_split_only_between_filters() -> None:
    assert split_filters("comm:bash,ret:<0") == ["comm:bash", "ret:<0"]
    assert split_filters("comm:~a,b,pid:1") == ["comm:~a,b", "pid:1"]
    op = make(FilterOperator, context(), filter="comm:bash,ret:<0")
    assert pids(op.process(ROWS)) == [40]


def test_no_filter_costs_nothing() -> None:
    assert make(FilterOperator, context()) is None


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("pidd:1", 'invalid filter "pidd:1": no column "pidd" (did you mean "pid"?)'),
        ("pid:abc", 'invalid filter "pid:abc": pid is a number, not "abc"'),
        ("comm:~(", 'invalid filter "comm:~(": bad regular expression'),
        ("comm", 'invalid filter "comm": expected column:value'),
        (":x", 'invalid filter ":x": expected column:value'),
    ],
)
def test_bad_filters_say_what_is_wrong(expr: str, message: str) -> None:
    with pytest.raises(ParamError) as info:
        parse_filter(expr, SCHEMA)
    assert str(info.value).startswith(message)


def test_sort_keys_directions_and_stability() -> None:
    assert pids(sort_batch(ROWS, parse_sort("-pid", SCHEMA))) == [40, 30, 20, 10]
    assert pids(sort_batch(ROWS, parse_sort("comm", SCHEMA))) == [10, 40, 30, 20]
    assert pids(sort_batch(ROWS, parse_sort("comm,-pid", SCHEMA))) == [40, 10, 30, 20]
    assert pids(sort_batch(ROWS, parse_sort("-ret", SCHEMA))) == [10, 30, 20, 40]
    with pytest.raises(ParamError, match='invalid sort "-pdi": no column "pdi"'):
        parse_sort("-pdi", SCHEMA)


def test_sort_holds_windows_and_refuses_a_stream() -> None:
    """A stream has no end to sort up to: sorting each batch as it came looked sorted and
    was not (``ig`` has no --sort for trace gadgets)."""
    values = Params(SortOperator.params, {"sort": "-pid"})
    with pytest.raises(ParamError) as info:
        SortOperator.check(context(), values, SCHEMA)  # type: ignore[arg-type]
    assert str(info.value) == (
        "--sort needs --interval: a stream has no end to sort up to "
        "(e.g. --interval 1s sorts each second's events)"
    )
    with pytest.raises(ParamError, match='invalid sort "-nope": no column "nope"'):
        SortOperator.check(context(), Params(SortOperator.params, {"sort": "-nope"}), SCHEMA)  # type: ignore[arg-type]
    SortOperator.check(context(interval="1s"), values, SCHEMA)  # type: ignore[arg-type]
    SortOperator.check(context(Top), values, SCHEMA)  # type: ignore[arg-type]
    window = make(SortOperator, context(interval="1s"), sort="-pid")
    assert len(window.process(ROWS.take(np.array([0, 1])))) == 0
    assert len(window.process(ROWS.take(np.array([2, 3])))) == 0
    assert pids(window.flush()) == [40, 30, 20, 10]
    assert window.flush() is None
    assert make(SortOperator, context()) is None


def test_sortable_gadget_uses_its_default_sort() -> None:
    class Sorted(Top):
        @classmethod
        def sort_by_default(cls) -> list[str]:
            return ["comm", "-pid"]

    op = make(SortOperator, context(Sorted))
    op.process(ROWS)
    assert pids(op.flush()) == [40, 10, 30, 20]


class Sink(Operator):
    name = "sink"
    priority = 2000

    def __init__(self) -> None:
        self.seen: list[list[int]] = []

    def process(self, b: Batch) -> Batch:
        self.seen.append(pids(b))
        return b


def test_limit_ends_a_stream() -> None:
    ctx = context()
    op = make(LimitOperator, ctx, **{"max-rows": "3"})
    assert pids(op.process(ROWS.take(np.array([0, 1])))) == [10, 20]
    assert not ctx.done
    assert pids(op.process(ROWS.take(np.array([2, 3])))) == [30]
    assert ctx.done
    assert len(op.process(ROWS)) == 0
    assert make(LimitOperator, ctx) is None


def test_sort_then_limit_per_window_through_the_chain() -> None:
    ctx = context(interval="1s")
    sink = Sink()
    chain = Chain(
        [make(SortOperator, ctx, sort="-pid"), make(LimitOperator, ctx, **{"max-rows": "2"}), sink]
    )
    chain.process(ROWS)
    assert sink.seen == []
    chain.flush()
    chain.process(ROWS.take(np.array([0, 1, 2])))
    chain.flush()
    assert sink.seen == [[40, 30], [30, 20]]
    assert not ctx.done


def output(fmt: str, *batches: Batch, ctx: GadgetContext | None = None) -> str:
    stream = io.StringIO()
    op = OutputOperator(ctx or context(), Params(OutputOperator.params, {"output": fmt}), stream)
    op.pre_run(SCHEMA)
    for b in batches:
        op.process(b)
        op.flush()
    op.warn("lost 3 events")
    op.post_run()
    return stream.getvalue()


def test_columns_output_is_exact() -> None:
    text = output("columns", ROWS.take(np.array([0, 1])))
    assert text == (
        "    PID  RET COMM     ARGS\n     10    0 bash     bash -x\n     20   -2 ls       ls -x\n"
    )


def test_columns_selection_cut_and_time() -> None:
    long = batch((1, 0, "averyveryverylong"))
    assert output("columns=comm,pid", long) == "COMM         PID\naveryve…       1\n"
    text = output("columns=+ts,-args,-ret", long)
    header, row = text.splitlines()
    assert header.split() == ["PID", "COMM", "TS"]
    assert row.split()[2].startswith("2023-11-14T") and ".123456789" in row
    with pytest.raises(ParamError, match='invalid output "columns=pid,nope": no column "nope"'):
        parse_output("columns=pid,nope", SCHEMA)
    with pytest.raises(ParamError, match="use one of columns, json, jsonpretty, yaml"):
        parse_output("xml", SCHEMA)


WINDOW_LINE = re.compile(r"--- \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ---")


def test_columns_print_each_window_as_a_timestamped_block() -> None:
    """A delimiter line with the window's end time (UTC), the header, the rows; a window
    without events is a block too, so the time goes on."""
    before = time.time()
    text = output(
        "columns=pid",
        ROWS.take(np.array([0, 1])),
        ROWS.head(0),
        ROWS.take(np.array([2])),
        ctx=context(interval="1s"),
    )
    blocks = text.split("\n\n")
    assert [b.splitlines()[1:] for b in blocks] == [
        ["    PID", "     10", "     20"],
        ["    PID"],
        ["    PID", "     30"],
    ]
    for b in blocks:
        line = b.splitlines()[0]
        assert WINDOW_LINE.fullmatch(line), line
        stamp = datetime.strptime(line[4:-5], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
        assert before - 1 < stamp.timestamp() <= time.time()
    assert window_line(1_700_000_000_123_456_789, "trace exec") == (
        "--- 2023-11-14T22:13:20.123Z trace exec ---\n"
    )


def test_snapshot_windows_keep_repeating_the_header() -> None:
    text = output(
        "columns=pid", ROWS.take(np.array([0])), ROWS.take(np.array([1])), ctx=context(Snap)
    )
    assert text == "    PID\n     10\n\n    PID\n     20\n"


def test_json_prints_one_array_per_window() -> None:
    """As ``ig``'s interval gadgets: one JSON array per window, on one line (``[]`` when the
    window had no events); ``jq`` reads each line as one array. A lost-events warning is no
    line between them (the runtime logs it on stderr)."""
    text = output(
        "json",
        ROWS.take(np.array([0, 1])),
        ROWS.head(0),
        ROWS.take(np.array([3])),
        ctx=context(interval="1s"),
    )
    lines = text.splitlines()
    windows = [json.loads(line) for line in lines]
    assert [[e["pid"] for e in w] for w in windows[:3]] == [[10, 20], [], [40]]
    assert windows[0][1] == {
        "type": "normal",
        "pid": 20,
        "retval": -2,
        "comm": "ls",
        "ts": 1_700_000_000_123_456_789,
        "args": ["ls", "-x"],
    }
    assert len(windows) == 3 and all(isinstance(w, list) for w in windows)
    jq = shutil.which("jq")
    if jq is not None:
        program = 'if type == "array" then [.[].pid] else .type end'
        done = subprocess.run([jq, "-c", program], input=text, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["[10,20]", "[]", "[40]"]


def test_jsonpretty_and_yaml_windows_are_lists() -> None:
    ctx = context(interval="1s")
    pretty = output("jsonpretty", ROWS.take(np.array([0, 2])), ctx=ctx)
    first = json.loads(pretty[: pretty.index("\n]\n") + 2])
    assert [e["pid"] for e in first] == [10, 30]
    docs = list(yaml.safe_load_all(output("yaml", ROWS.take(np.array([1])), ctx=ctx)))
    assert [e["pid"] for e in docs[0]] == [20]


def test_json_lines_and_warn_record() -> None:
    lines = output("json", ROWS.take(np.array([1]))).splitlines()
    assert json.loads(lines[0]) == {
        "type": "normal",
        "pid": 20,
        "retval": -2,
        "comm": "ls",
        "ts": 1_700_000_000_123_456_789,
        "args": ["ls", "-x"],
    }
    assert json.loads(lines[1]) == {"type": "warn", "message": "lost 3 events"}


def test_jsonpretty_and_yaml() -> None:
    pretty = output("jsonpretty", ROWS.take(np.array([0])))
    assert json.loads(pretty.split("\n}\n")[0] + "}")["comm"] == "bash"
    docs = list(yaml.safe_load_all(output("yaml", ROWS.take(np.array([0])))))
    assert docs[0]["pid"] == 10 and docs[0]["args"] == ["bash", "-x"]
    assert docs[1] == {"type": "warn", "message": "lost 3 events"}


def test_broken_pipe_ends_the_run_quietly() -> None:
    class Closed(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    op = OutputOperator(context(), Params(OutputOperator.params), Closed())
    op.pre_run(SCHEMA)
    with pytest.raises(OutputClosed):
        op.process(ROWS)
    op.post_run()  # nothing more is written (it would fail again)


def test_a_full_disk_is_an_output_error() -> None:
    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    op = OutputOperator(context(), Params(OutputOperator.params), Full())
    op.pre_run(SCHEMA)
    with pytest.raises(OutputError, match=r"^writing output: No space left on device$"):
        op.process(ROWS)
    op.warn("lost 1 events")  # the run ends with one error, not one per write
    op.post_run()


def test_widths_shrink_to_the_terminal() -> None:
    fields = [
        Field("a", Kind.STR, column=Column(width=20, min_width=5)),
        Field("b", Kind.STR, column=Column(width=20, fixed=True)),
    ]
    assert scale_widths(fields, 100) == [20, 20]
    assert scale_widths(fields, 31) == [10, 20]
    assert scale_widths(fields, 10) == [5, 20]
    named = [
        Field("operation", Kind.STR, column=Column(width=6, min_width=3)),
        Field("b", Kind.STR, column=Column(width=20)),
    ]
    assert scale_widths(named, 100) == [9, 20]  # the header is never cut while there is room
    assert scale_widths(named, 25) == [9, 15]
    assert scale_widths(named, 12) == [9, 2]
    assert scale_widths(named, 8) == [3, 4]  # no room: below the header, down to min_width
