"""Params: typed validation, and the flat map with runtime./operator. prefixes."""

from __future__ import annotations

import pytest

from igrun.core.errors import ParamError
from igrun.core.params import ParamDesc, Params, TypeHint, params_from_map, params_to_map


def test_typed_values_and_defaults() -> None:
    params = Params(
        [
            ParamDesc("count", type_hint=TypeHint.UINT, default="3"),
            ParamDesc("verbose", type_hint=TypeHint.BOOL, default="false"),
            ParamDesc("ports", type_hint=TypeHint.UINT_LIST),
            ParamDesc("wait", type_hint=TypeHint.DURATION, default="1s"),
            ParamDesc("ratio", type_hint=TypeHint.FLOAT, default="0.5"),
        ]
    )
    assert params.get("count") == 3
    assert params.get("verbose") is False
    assert params.get("ports") == []
    assert params.get("wait") == 1.0
    params.set("ports", "80, 443")
    params.set("wait", "250ms")
    params.set("verbose", "true")
    assert params.get("ports") == [80, 443]
    assert params.get("wait") == 0.25
    assert params.get("verbose") is True
    assert params.is_set("ports") and not params.is_set("count")


@pytest.mark.parametrize(
    ("desc", "value", "message"),
    [
        (ParamDesc("count", type_hint=TypeHint.UINT), "-1", "--count: '-1'"),
        (ParamDesc("count", type_hint=TypeHint.INT), "ten", "--count: 'ten'"),
        (ParamDesc("flag", type_hint=TypeHint.BOOL), "maybe", "not a boolean"),
        (ParamDesc("wait", type_hint=TypeHint.DURATION), "soon", "not a duration"),
        (ParamDesc("size", type_hint=TypeHint.BYTES), "4X", "not a size"),
        (ParamDesc("mode", possible_values=("a", "b")), "c", "'c' is not one of a, b"),
        (ParamDesc("name", mandatory=True), "", "--name is required"),
    ],
)
def test_invalid_values_name_the_param(desc: ParamDesc, value: str, message: str) -> None:
    with pytest.raises(ParamError, match=message.replace("(", r"\(")):
        desc.validate(value)


@pytest.mark.parametrize(
    ("value", "size"),
    [("65536", 65536), ("64K", 65536), ("16M", 16 << 20), ("1g", 1 << 30), ("2MiB", 2 << 20)],
)
def test_sizes(value: str, size: int) -> None:
    assert ParamDesc("size", type_hint=TypeHint.BYTES).validate(value) == size


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ParamError, match="unknown parameter 'nope'"):
        Params([]).set("nope", "1")


def test_flat_map_round_trip() -> None:
    gadget = Params([ParamDesc("ignore-errors", type_hint=TypeHint.BOOL, default="false")])
    runtime = Params([ParamDesc("timeout", type_hint=TypeHint.DURATION, default="0")])
    operators = {"sort": Params([ParamDesc("sort")]), "limit": Params([ParamDesc("max-rows")])}
    params_from_map(
        {"ignore-errors": "true", "runtime.timeout": "5s", "operator.sort.sort": "-pid"},
        gadget,
        runtime,
        operators,
    )
    flat = params_to_map(gadget, runtime, operators)
    assert flat == {
        "ignore-errors": "true",
        "runtime.timeout": "5s",
        "operator.sort.sort": "-pid",
        "operator.limit.max-rows": "",
    }
    assert runtime.get("timeout") == 5.0
    with pytest.raises(ParamError, match="unknown operator 'nope'"):
        params_from_map({"operator.nope.x": "1"}, gadget, runtime, operators)


SCALARS = ["0", "007", "4294967296", "12345678901234567890123", "-5", " 3", "x"]
LISTS = ["1,2,3", "007", "", "1,-2", "a,b"]


@pytest.mark.parametrize(
    ("kind", "value"),
    [(k, v) for k in (TypeHint.INT, TypeHint.UINT, TypeHint.STRING) for v in SCALARS]
    + [
        (k, v) for k in (TypeHint.UINT_LIST, TypeHint.INT_LIST, TypeHint.STRING_LIST) for v in LISTS
    ],
)
def test_plain_values_parse_as_pydantic_parses_them(kind: TypeHint, value: str) -> None:
    """Plain text and decimal digits skip the validator: they must come out as it would
    give them, and anything else still goes through it."""
    from pydantic_core import ValidationError

    from igrun.core.params import _parse, _split, _validator

    raw = _split(value) if kind.value.startswith("[]") else value
    try:
        expected = _validator(kind).validate_python(raw, strict=False)
    except ValidationError:
        with pytest.raises(ValueError):
            _parse(kind, value)
        return
    assert _parse(kind, value) == expected
