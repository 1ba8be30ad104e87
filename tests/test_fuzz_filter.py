"""Fuzzing ``-F``: any text either becomes filters or is refused with a ParamError (one clear
line, exit 2), never another exception; and every filter that parses can be applied to a
batch of its schema without raising."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from fuzzlab import fuzz_settings
from hypothesis import assume, given
from hypothesis import strategies as st

from igrun.core.errors import ParamError
from igrun.core.events.schema import Batch, Field, Kind, Schema
from igrun.operators.filter import _NEXT_FILTER, parse_filter, split_filters
from igrun.plugins.trace_exec import TraceExec
from igrun.plugins.trace_open import TraceOpen
from igrun.plugins.trace_tcp import TraceTcp

FUZZ = fuzz_settings(300)

DTYPE = np.dtype(
    [("i", "<i8"), ("u", "<u4"), ("b", "u1"), ("t", "<u8"), ("f", "<f8"), ("s", "S8"), ("y", "V4")]
)
EVERY_KIND = Schema(
    [
        Field("i", Kind.INT),
        Field("u", Kind.UINT),
        Field("b", Kind.BOOL),
        Field("t", Kind.TIME),
        Field("f", Kind.FLOAT),
        Field("s", Kind.STR),
        Field("y", Kind.BYTES),
        Field("l", Kind.LIST, decode=lambda b: _lists(len(b))),
        Field("runtime.containerName", Kind.STR, json="k8s.name"),
    ],
    "event",
    DTYPE,
)
SCHEMAS = [EVERY_KIND, TraceExec.schema, TraceOpen.schema, TraceTcp.schema]
NAMES = sorted({n for s in SCHEMAS for f in s for n in (f.name, f.json_key, f.name.upper())})
OPERATORS = ["", "!", ">", ">=", "<", "<=", "~", "!~", "=", "!=", "<>", "~~"]
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=0, max_value=2**64).map(hex),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["true", "false", "TRUE", " 1", "0b101", "0o17", "1_000", "-0", "1e3"]),
)
REGEXES = st.one_of(
    st.sampled_from(
        ["(", "[", "a{99999999999}", "(?P<a>)(?P=b)", "\\", "(?<=a+)b", "*", "a**", ".*"]
    ),
    st.integers(min_value=1, max_value=3000).map(lambda n: "(" * n + ")" * n),
    st.from_regex(r"[\(\)\[\]\{\}\\.*+?|^$a-c0-9,?P<>=!:]{0,20}", fullmatch=True),
)
VALUES = st.one_of(st.text(), NUMBERS, REGEXES)


@st.composite
def expressions(draw: st.DrawFn, schema: Schema) -> str:
    """Mostly ``name:<op>value`` with a name of ``schema`` and a value that suits the
    operator (a pattern after ``~``, a number after ``>``), else anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text())
    names = [n for f in schema for n in (f.name, f.json_key)]
    name = draw(st.one_of(st.sampled_from(names), st.sampled_from(NAMES), st.text(max_size=12)))
    operator = draw(st.sampled_from(OPERATORS))
    if "~" in operator:
        value = draw(st.one_of(REGEXES, st.text()))
    else:
        value = draw(st.one_of(NUMBERS, st.text()))
    return f"{name}:{operator}{value}"


def _lists(n: int) -> Any:
    """Exec-style argument lists for ``n`` (4) events."""
    out = np.empty(n, dtype=object)
    out[:] = ([["a", "b c"], [], ["\x00é"], ["1"]] * n)[:n]
    return out


def _batch(schema: Schema) -> Batch:
    """Four events of ``schema``, zeros and extremes in the members, text in the rest."""
    if schema is EVERY_KIND:
        raw = np.zeros(4, DTYPE)
        raw["i"] = [0, -1, -(2**63), 2**63 - 1]
        raw["u"] = [0, 1, 2**32 - 1, 7]
        raw["b"] = [0, 1, 2, 255]
        raw["t"] = [0, 1, 2**64 - 1, 10**18]
        raw["f"] = [0.0, -1.5, float("inf"), float("nan")]
        raw["s"] = [b"", b"bash", b"\xff\xfe", b"12345678"]
        batch = Batch(schema, raw)
        batch.set_column("runtime.containerName", np.array(["", "web", "é", "1"], dtype=object))
        return batch
    assert schema.dtype is None  # a gadget's schema is unbound: every field gets a column
    columns: dict[str, Any] = {}
    for f in schema:
        if f.kind is Kind.LIST:
            columns[f.name] = _lists(4)
        elif f.kind is Kind.STR:
            columns[f.name] = np.array(["", "x", "é\x01", "42"], dtype=object)
        elif f.kind is Kind.BYTES:
            columns[f.name] = np.array([b"", b"x", b"\x00\xff", b"42"], dtype=object)
        elif f.kind is Kind.FLOAT:
            columns[f.name] = np.array([0.0, 1.5, -2.0, float("nan")])
        else:
            columns[f.name] = np.array([0, 1, 2**32 - 1, 2**63 - 1], dtype=np.uint64)
    return Batch(schema, np.zeros(4, np.dtype([])), columns)


BATCHES = {id(s): _batch(s) for s in SCHEMAS}


@FUZZ
@given(raw=st.text())
def test_any_text_splits_into_nonblank_pieces_of_itself(raw: str) -> None:
    parts = split_filters(raw)
    assert all(p.strip() and p in raw for p in parts)


@FUZZ
@given(
    exprs=st.lists(
        st.builds(
            lambda name, operator, value: f"{name}:{operator}{value}",
            st.sampled_from(NAMES),
            st.sampled_from(OPERATORS),
            VALUES,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_repeated_filters_split_back_into_what_was_given(exprs: list[str]) -> None:
    """``-F a -F b`` reaches the operator as ``a,b``; a comma inside a value (``args:~a,b``)
    stays in it unless what follows looks like another filter."""
    joined = ",".join(exprs)
    assume(len(_NEXT_FILTER.findall(joined)) == len(exprs) - 1)
    assert split_filters(joined) == exprs


@FUZZ
@given(data=st.data(), which=st.sampled_from(range(len(SCHEMAS))))
def test_any_expression_parses_or_is_a_param_error(data: st.DataObject, which: int) -> None:
    schema = SCHEMAS[which]
    expr = data.draw(expressions(schema))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing but the one error line reaches stderr
            parsed = parse_filter(expr, schema)
    except ParamError as exc:
        assert str(exc).startswith("invalid filter")
        return
    batch = BATCHES[id(schema)]
    mask = parsed.mask(batch)
    assert mask.dtype == np.bool_ and mask.shape == (len(batch),)


@pytest.mark.parametrize(
    "expr",
    ["comm:~a{99999999999}", "comm:~" + "(" * 3000 + ")" * 3000, "comm:!~[", "pid:>1e3"],
)
def test_known_hostile_expressions_are_param_errors(expr: str) -> None:
    with pytest.raises(ParamError, match=r"^invalid filter"):
        parse_filter(expr, TraceExec.schema)


@pytest.mark.parametrize(
    ("expr", "want"),
    [("y:0000ff01", [False, False, True, False]), ("y:>0", [True, True, True, True])],
)
def test_bytes_compare_as_the_hex_the_columns_show(expr: str, want: list[bool]) -> None:
    batch = _batch(EVERY_KIND)
    batch.raw["y"][2] = b"\x00\x00\xff\x01"
    assert parse_filter(expr, EVERY_KIND).mask(batch).tolist() == want
