"""The profile type in the runtime: a gadget collects until its run ends, and the output
writes its result once, in the gadget's own format when ``-o`` (or the gadget's default)
names one: a ``ResultRunner``'s bytes, or a ``Runner``'s rows combined into one batch. No
header or empty window is written around the result."""

from __future__ import annotations

import io
import time
from typing import ClassVar

import numpy as np
import pytest

from igrun.core import (
    Batch,
    Category,
    Field,
    Gadget,
    GadgetContext,
    GadgetType,
    Kind,
    OutputFormat,
    ParamError,
    Schema,
)
from igrun.core.run.local import Runtime
from igrun.operators.output import OutputOperator

pytestmark = pytest.mark.bpf  # the runtime's host check wants root and BTF

ROW = np.dtype([("n", "<u8")])
SCHEMA = Schema([Field("n", Kind.UINT, "a number")], struct="row").bind(ROW)


def wait(ctx: GadgetContext) -> None:
    while not ctx.done:
        time.sleep(ctx.remaining(0.01))


class Result(Gadget):
    """Returns its result as bytes (``ig``'s ``RunWithResult``)."""

    name = "result"
    category = Category.PROFILE
    type = GadgetType.PROFILE
    schema = SCHEMA

    def run_with_result(self, ctx: GadgetContext) -> bytes:
        wait(ctx)
        return b'{"n":3}'


class ShoutedResult(Result):
    name = "shouted"

    @classmethod
    def output_formats(cls) -> tuple[dict[str, OutputFormat], str]:
        return {"shout": OutputFormat("shout", "upper case", lambda data: data.upper())}, ""


def _summary(batch: Batch) -> bytes:
    values = batch["n"].tolist()
    return f"{len(values)} rows, total {sum(values)}\n".encode()


class Rows(Gadget):
    """Emits its rows in two batches at the end, then ends the window."""

    name = "rows"
    category = Category.PROFILE
    type = GadgetType.PROFILE
    schema = SCHEMA
    formats: ClassVar[dict[str, OutputFormat]] = {
        "summary": OutputFormat("summary", "rows and their total", _summary, True),
    }

    @classmethod
    def output_formats(cls) -> tuple[dict[str, OutputFormat], str]:
        return cls.formats, "summary"

    def run(self, ctx: GadgetContext) -> None:
        wait(ctx)
        ctx.emit(Batch(SCHEMA, np.array([(1,), (2,)], ROW)))
        ctx.emit(Batch(SCHEMA, np.array([(3,)], ROW)))
        ctx.end_window()


def run(gadget: type[Gadget], output: str | None = None, interval: str = "") -> str:
    """The gadget run for 300 ms (or with ``--interval``), and what it printed."""
    runtime = Runtime([OutputOperator])
    values = {"runtime.timeout": "300ms"}
    if output is not None:
        values["operator.output.output"] = output
    if interval:
        values["runtime.interval"] = interval
    params = runtime.params_for(gadget, values)
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")

    def prepare(ctx: GadgetContext, ops: list[object]) -> None:
        for op in ops:
            if isinstance(op, OutputOperator):
                op.stream = stream

    runtime.run(gadget, *params, prepare=prepare)
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode()


def test_a_result_is_written_once_without_a_header() -> None:
    """Before, ``-o columns`` (the default) printed an empty ``N`` header after the result."""
    assert run(Result) == '{"n":3}\n'
    assert run(Result, "json") == '{"n":3}\n'
    assert run(Result, "jsonpretty") == '{\n  "n": 3\n}\n'
    assert run(Result, "none") == ""


def test_a_results_gadget_format_transforms_it() -> None:
    assert run(ShoutedResult, "shout") == '{"N":3}\n'
    assert run(ShoutedResult) == '{"n":3}\n'  # no default: as it came


def test_rows_are_combined_once_in_the_default_format() -> None:
    assert run(Rows) == "3 rows, total 6\n"
    lines = [f'{{"type":"normal","n":{n}}}' for n in (1, 2, 3)]
    assert run(Rows, "json").splitlines() == lines  # the built-in: its rows


def test_an_unknown_format_is_refused_before_the_run() -> None:
    runtime = Runtime([OutputOperator])
    params = runtime.params_for(Rows, {"operator.output.output": "flame"})
    with pytest.raises(ParamError) as caught:
        runtime.check(Rows, *params)
    assert str(caught.value) == (
        'invalid output "flame": use one of columns, json, jsonpretty, yaml, none, summary'
    )
    params = runtime.params_for(Rows, {"operator.output.output": "summary=n"})
    with pytest.raises(ParamError, match="only columns takes a column list"):
        runtime.check(Rows, *params)


class Stream(Gadget):
    """A trace gadget with a format of its own that takes each batch as it comes."""

    name = "stream"
    category = Category.TRACE
    type = GadgetType.TRACE
    schema = SCHEMA

    @classmethod
    def output_formats(cls) -> tuple[dict[str, OutputFormat], str]:
        each = OutputFormat("sizes", "rows per batch", lambda b: f"{len(b)}\n".encode())
        return {"sizes": each}, ""

    def run(self, ctx: GadgetContext) -> None:
        ctx.emit(Batch(SCHEMA, np.array([(1,), (2,)], ROW)))
        ctx.emit(Batch(SCHEMA, np.array([(3,)], ROW)))
        wait(ctx)


def test_any_gadget_may_declare_formats() -> None:
    """A trace gadget's format without requires_combined_result: one transform per batch; its
    default stays columns (the header as soon as it is ready, one row per line)."""
    assert run(Stream, "sizes") == "2\n1\n"
    assert run(Stream).split() == ["N", "1", "2", "3"]
