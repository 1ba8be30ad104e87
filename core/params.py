"""Parameters of gadgets, the runtime and operators.

A :class:`ParamDesc` describes one parameter once; the launcher turns it into a flag, config
files and the flat map (:func:`params_to_map`) carry its value as a string, and
:class:`Params` validates that string against the declared type with pydantic. The prefixes of
the flat map follow Inspektor Gadget: gadget params bare, ``runtime.<key>`` and
``operator.<name>.<key>``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from igrun.core.errors import ParamError


class TypeHint(enum.StrEnum):
    """The type a parameter's string value must parse as."""

    STRING = "string"
    BOOL = "bool"
    INT = "int"
    UINT = "uint"
    FLOAT = "float"
    DURATION = "duration"
    BYTES = "bytes"
    """A size: 65536, 64K, 16M, 1G (powers of 1024)."""
    STRING_LIST = "[]string"
    INT_LIST = "[]int"
    UINT_LIST = "[]uint"


class ValueHint(enum.StrEnum):
    """What a value names, so frontends can complete it (Inspektor Gadget's value hints)."""

    NONE = ""
    LOCAL_CONTAINER = "local:container"
    K8S_NODE_NAME = "k8s:node"
    K8S_NODE_LIST = "k8s:node-list"
    K8S_POD_NAME = "k8s:pod"
    K8S_NAMESPACE = "k8s:namespace"
    K8S_CONTAINER_NAME = "k8s:container"
    K8S_LABELS = "k8s:labels"


@dataclass(frozen=True)
class ParamDesc:
    """One parameter: its flag, default, help and the type its value must have."""

    key: str
    description: str = ""
    default: str = ""
    alias: str = ""
    type_hint: TypeHint = TypeHint.STRING
    mandatory: bool = False
    possible_values: tuple[str, ...] = ()
    value_hint: ValueHint = ValueHint.NONE
    repeatable: bool = False
    """A flag given several times collects its values into a comma list."""
    check: Callable[[Any], object] | None = None
    """Rules beyond the type (a range, a power of two): called with the parsed value, it
    raises ``ValueError`` saying what is allowed."""

    def validate(self, value: str) -> Any:
        """Parse ``value`` as this parameter's type, or raise :class:`ParamError`."""
        if self.mandatory and value == "":
            raise ParamError(f"--{self.key} is required")
        if self.possible_values and value != "":
            items = _split(value) if self.type_hint.value.startswith("[]") else [value]
            for item in items:
                if item not in self.possible_values:
                    allowed = ", ".join(self.possible_values)
                    raise ParamError(f"--{self.key}: {item!r} is not one of {allowed}")
        try:
            parsed = _parse(self.type_hint, value)
            if self.check is not None:
                self.check(parsed)
        except ValueError as exc:
            raise ParamError(f"--{self.key}: {exc}") from None
        return parsed

    def flag_value(self, value: str) -> str:
        """A value given on the command line, which must say something: ``-F ''`` or
        ``-c web,`` would otherwise mean the default (or one name fewer) in silence. A file
        or the environment may hold an empty value (``igrun config default`` writes one for
        every unset param); a flag given empty is a mistake."""
        if not value.strip():
            raise ParamError(f"--{self.key}: empty value (leave the flag out for the default)")
        if self.type_hint.value.startswith("[]") and any(
            not item.strip() for item in value.split(",")
        ):
            raise ParamError(f"--{self.key}: empty item in {value!r}")
        return value


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)?$")
_BYTES = re.compile(r"^(\d+)\s*([kmg]?)(?:i?b)?$", re.IGNORECASE)
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@cache
def _validator(kind: TypeHint) -> Any:
    """pydantic's validator for ``kind``, built from its core schema: pydantic-core alone
    loads in a fraction of the time of the whole of pydantic, which every run would pay."""
    from pydantic_core import SchemaValidator
    from pydantic_core import core_schema as cs

    uint = cs.int_schema(ge=0)
    schemas: dict[TypeHint, Any] = {
        TypeHint.STRING: cs.str_schema(),
        TypeHint.INT: cs.int_schema(),
        TypeHint.UINT: uint,
        TypeHint.FLOAT: cs.float_schema(),
        TypeHint.STRING_LIST: cs.list_schema(cs.str_schema()),
        TypeHint.INT_LIST: cs.list_schema(cs.int_schema()),
        TypeHint.UINT_LIST: cs.list_schema(uint),
    }
    return SchemaValidator(schemas[kind])


_PLAIN = {TypeHint.STRING, TypeHint.STRING_LIST}
_WHOLE = {TypeHint.INT, TypeHint.UINT, TypeHint.INT_LIST, TypeHint.UINT_LIST}


def _plain(kind: TypeHint, raw: str | list[str]) -> bool:
    """Whether ``raw`` is valid as it stands (text, or plain decimal digits for an integer):
    what most runs hold, parsed without waking the validator."""
    if kind in _PLAIN:
        return True
    if kind in _WHOLE:
        return (
            all(item.isascii() and item.isdigit() for item in raw)
            if isinstance(raw, list)
            else raw.isascii() and raw.isdigit()
        )
    return False


def _parse(kind: TypeHint, value: str) -> Any:
    """Strings in, typed values out; pydantic does the checking of anything but the plain
    cases (text, non-negative decimal integers), and words the errors."""
    if kind is TypeHint.DURATION:
        match = _DURATION.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a duration (e.g. 500ms, 10s, 2m)")
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if kind is TypeHint.BYTES:
        size = _BYTES.match(value.strip())
        if not size:
            raise ValueError(f"{value!r} is not a size (e.g. 65536, 256K, 16M)")
        return int(size.group(1)) * 1024 ** " kmg".index(size.group(2).lower() or " ")
    if kind is TypeHint.BOOL:
        lowered = value.strip().lower()
        if lowered in ("", "false", "0", "no"):
            return False
        if lowered in ("true", "1", "yes"):
            return True
        raise ValueError(f"{value!r} is not a boolean (true or false)")
    raw: Any = _split(value) if kind.value.startswith("[]") else value
    if kind in (TypeHint.INT, TypeHint.UINT, TypeHint.FLOAT) and value.strip() == "":
        raw = "0"
    if _plain(kind, raw):
        if kind in _PLAIN:
            return raw
        return [int(item) for item in raw] if isinstance(raw, list) else int(raw)
    from pydantic_core import ValidationError

    try:
        return _validator(kind).validate_python(raw, strict=False)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{value!r}: {first['msg']}") from None


class Params:
    """The values of one set of parameters (a gadget's, the runtime's, or one operator's)."""

    def __init__(self, descs: Iterable[ParamDesc], values: Mapping[str, str] | None = None):
        self.descs: dict[str, ParamDesc] = {d.key: d for d in descs}
        self._raw: dict[str, str] = {k: d.default for k, d in self.descs.items()}
        self._typed: dict[str, Any] = {}
        for key, value in (values or {}).items():
            self.set(key, value)

    def __iter__(self) -> Iterator[ParamDesc]:
        return iter(self.descs.values())

    def __contains__(self, key: object) -> bool:
        return key in self.descs

    def set(self, key: str, value: str) -> None:
        """Validate and store ``value`` for ``key``."""
        desc = self.descs.get(key)
        if desc is None:
            raise ParamError(f"unknown parameter {key!r}")
        self._typed[key] = desc.validate(value)
        self._raw[key] = value

    def raw(self, key: str) -> str:
        """The value as the user wrote it (or the default)."""
        return self._raw[key]

    def get(self, key: str) -> Any:
        """The typed value: bool, int, float (durations in seconds), str or a list."""
        if key not in self._typed:
            self._typed[key] = self.descs[key].validate(self._raw[key])
        return self._typed[key]

    def validate(self) -> None:
        """Check every value, mandatory ones included; raise the first :class:`ParamError`."""
        for key in self.descs:
            self._typed[key] = self.descs[key].validate(self._raw[key])

    def is_set(self, key: str) -> bool:
        """Whether the value differs from the default."""
        return self._raw[key] != self.descs[key].default

    def as_dict(self) -> dict[str, str]:
        return dict(self._raw)


def params_to_map(
    gadget: Params | None,
    runtime: Params | None = None,
    operators: Mapping[str, Params] | None = None,
) -> dict[str, str]:
    """Flatten all parameter sets into one map with unique, prefixed keys."""
    out: dict[str, str] = {}
    if gadget:
        out.update(gadget.as_dict())
    if runtime:
        out.update({f"runtime.{k}": v for k, v in runtime.as_dict().items()})
    for name, params in (operators or {}).items():
        out.update({f"operator.{name}.{k}": v for k, v in params.as_dict().items()})
    return out


def with_defaults(descs: Iterable[ParamDesc], defaults: Mapping[str, str]) -> tuple[ParamDesc, ...]:
    """``descs`` with the defaults a gadget gives them (its ``param_defaults``, by key)."""
    return tuple(replace(d, default=defaults[d.key]) if d.key in defaults else d for d in descs)


def params_from_map(
    values: Mapping[str, str],
    gadget: Params | None,
    runtime: Params | None = None,
    operators: Mapping[str, Params] | None = None,
) -> None:
    """Fill parameter sets from a flat map made by :func:`params_to_map`, validating each."""
    for key, value in values.items():
        if key.startswith("runtime."):
            target, name = runtime, key.removeprefix("runtime.")
        elif key.startswith("operator."):
            op, _, name = key.removeprefix("operator.").partition(".")
            target = (operators or {}).get(op)
            if target is None:
                raise ParamError(f"unknown operator {op!r} in {key!r}")
        else:
            target, name = gadget, key
        if target is None:
            raise ParamError(f"unknown parameter {key!r}")
        target.set(name, value)
