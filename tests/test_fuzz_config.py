"""Fuzzing config files: whatever the file holds (any bytes, TOML that is almost right, any
structure of tables and values), ``igrun --config FILE config view`` either shows the runs it
makes of it, as a config that reads back to the same runs, or says what is wrong in one line
with exit code 2. Never a traceback, an internal error or a second line."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from fuzzlab import fuzz_settings
from hypothesis import example, given
from hypothesis import strategies as st

from igrun.core.cli.main import main
from igrun.core.plugins import registry
from igrun.core.run.local import RUNTIME_PARAMS

FUZZ = fuzz_settings(100)

REGISTRY = registry()
GADGETS = {g.full_name(): g for g in REGISTRY.gadgets().values()}
OPERATORS = {op.name: op for op in REGISTRY.operators()}
RUNTIME_KEYS = [d.key for d in RUNTIME_PARAMS]


def view(text: str | bytes) -> tuple[int, str, str]:
    """``igrun --config FILE config view`` on a file holding ``text``: exit code, stdout,
    stderr (the file's path shown as FILE)."""
    path = Path(tempfile.gettempdir()) / f"igrun-fuzz-{os.getpid()}.toml"
    try:
        path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(path), "config", "view"])
    finally:
        path.unlink(missing_ok=True)
    return code, out.getvalue(), err.getvalue().replace(str(path), "FILE")


def assert_shown_or_one_line(text: str | bytes) -> str | None:
    """The view when the file is good; None when it was refused as it should be."""
    code, out, err = view(text)
    if code == 0:
        assert err == ""
        tomllib.loads(out)  # what view shows is a config file itself
        return out
    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(("igrun: error: config FILE: ", "igrun: error: no config file at")), err
    return None


# ---- values and structures ---------------------------------------------------------------

NASTY = st.sampled_from(["", " ", "a\nb", "\x1b[2J", "a.b", "[0]", "é", "\u202e", "\\", '"'])
TEXTS = st.one_of(
    st.text(max_size=20),
    NASTY,
    st.sampled_from(["true", "false", "5s", "1m", "-1", "0", "10", "json", "columns", "all"]),
)
SCALARS = st.one_of(
    TEXTS,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(TEXTS, inner, max_size=3),
    ),
    max_leaves=8,
)


def keys_of(descs: Any) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([d.key for d in descs] or ["x"]), NASTY, st.text(max_size=10))


@st.composite
def runs(draw: st.DrawFn) -> dict[str, Any]:
    """One ``[[run]]``: mostly the keys and names igrun knows, with values of any type."""
    run: dict[str, Any] = {}
    name = draw(st.one_of(st.sampled_from(sorted(GADGETS)), st.text(max_size=16)))
    gadget = GADGETS.get(name)
    if draw(st.integers(0, 9)):
        run["gadget"] = name
    if draw(st.booleans()):
        params = gadget.params if gadget else ()
        run["params"] = draw(st.dictionaries(keys_of(params), VALUES, max_size=4))
    if draw(st.booleans()):
        run["runtime"] = draw(st.dictionaries(keys_of(RUNTIME_PARAMS), VALUES, max_size=3))
    if draw(st.booleans()):
        ops = []
        for _ in range(draw(st.integers(0, 3))):
            op_name = draw(st.one_of(st.sampled_from(sorted(OPERATORS)), st.text(max_size=8)))
            op: dict[str, Any] = {"name": op_name}
            if draw(st.booleans()):
                descs = OPERATORS[op_name].params if op_name in OPERATORS else ()
                op["with"] = draw(st.dictionaries(keys_of(descs), VALUES, max_size=3))
            ops.append(op)
        run["operators"] = ops
    if not draw(st.integers(0, 9)):
        run[draw(st.text(max_size=8))] = draw(VALUES)
    return run


CONFIGS = st.one_of(
    st.builds(lambda rs: {"run": rs}, st.lists(runs(), max_size=3)),
    st.dictionaries(TEXTS, VALUES, max_size=3),
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid-looking file with a few characters cut out, swapped or put in."""
    text = tomli_w.dumps(draw(CONFIGS))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        put = draw(
            st.one_of(st.sampled_from([*"[]{}=\"',.\n\\#", "[[run]]\n"]), st.text(max_size=3))
        )
        text = text[:at] + put + text[at + cut :]
    return text


# ---- the tests ---------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    assert_shown_or_one_line(data)


@FUZZ
@given(config=CONFIGS)
@example({"run": [{"gadget": "trace exec", "params": {"a\nb": 1}}]})  # a key was a line break
@example({"\x1b[2J": 1})
def test_any_structure_and_what_is_shown_reads_back_the_same(config: dict[str, Any]) -> None:
    shown = assert_shown_or_one_line(tomli_w.dumps(config))
    if shown is not None:
        assert view(shown) == (0, shown, "")


@FUZZ
@given(text=mutated())
def test_almost_toml(text: str) -> None:
    assert_shown_or_one_line(text)


@FUZZ
@given(depth=st.integers(min_value=1, max_value=4000), kind=st.sampled_from("[{"))
@example(depth=4000, kind="[")  # was a RecursionError: an internal error, exit 1
@example(depth=4000, kind="{")
def test_deep_nesting(depth: int, kind: str) -> None:
    """Nested arrays or inline tables, deeper than the TOML parser recurses."""
    if kind == "[":
        text = "x = " + "[" * depth + "]" * depth + "\n"
    else:
        text = "x = " + "{a = " * depth + "1" + "}" * depth + "\n"
    assert_shown_or_one_line(text)
