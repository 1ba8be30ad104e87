"""Checking a config file (see ``core/config/runs.py``): its shape with pydantic models, then every
key and value against the params of the gadget and operators a run names. Errors name the
key: ``run[0].operators[1].with.limit: Extra inputs are not permitted``."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from igrun.core.config.runs import RunSpec, Value, as_text
from igrun.core.errors import ParamError, UsageError
from igrun.core.files import FileRefused, read_text
from igrun.core.gadget import Gadget
from igrun.core.operator import Operator
from igrun.core.params import ParamDesc


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class OperatorEntry(_Strict):
    name: str
    with_: dict[str, Value] = Field(default_factory=dict, alias="with")


class RunEntry(_Strict):
    gadget: str
    params: dict[str, Value] = Field(default_factory=dict)
    runtime: dict[str, Value] = Field(default_factory=dict)
    operators: list[OperatorEntry] | None = None
    """The chain in order; absent: every operator that applies, in the usual order."""


class ConfigFile(_Strict):
    run: list[RunEntry] = Field(default_factory=list)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _location(loc: Sequence[int | str]) -> str:
    """``run[0].params.limit``; a key that is not a bare TOML key is quoted as TOML would
    write it (``params."a\\nb"``), so the message stays one line whatever the file's keys."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = "with" if part == "with_" else str(part)
            if not _BARE_KEY.fullmatch(key):
                key = json.dumps(key)
            out += ("." if out else "") + key
    return out


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    error = exc.errors()[0]
    where = _location(error["loc"])
    if prefix:  # already a location (``run[0].params``): joined, not quoted
        where = prefix + ("." if where and not where.startswith("[") else "") + where
    return f"{where}: {error['msg']}"


def load(path: Path) -> ConfigFile:
    """Read and check the file's shape; params are checked by :func:`resolve`."""
    if not path.exists():
        raise UsageError(f"config {path}: no such file")
    try:
        data = tomllib.loads(read_text(path))
    except FileRefused as exc:
        raise UsageError(f"config {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise UsageError(f"config {path}: not TOML: arrays or tables nested too deeply") from None
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"config {path}: {_first_error(exc)}") from None


def _check(values: Mapping[str, Value], descs: Sequence[ParamDesc], where: str) -> None:
    """The keys must be params of this gadget/operator, with values of the right type."""
    model = create_model(  # type: ignore[call-overload]
        "Params", __config__=ConfigDict(extra="forbid"), **{d.key: (Value, None) for d in descs}
    )
    try:
        model.model_validate(dict(values))
    except ValidationError as exc:
        raise UsageError(_first_error(exc, where)) from None
    by_key = {d.key: d for d in descs}
    for key, value in values.items():
        try:
            by_key[key].validate(as_text(value))
        except ParamError as exc:
            raise UsageError(f"{where}.{key}: {exc}") from None


def resolve(
    entry: RunEntry,
    where: str,
    gadget: type[Gadget],
    operators: Sequence[type[Operator]],
    runtime_params: Sequence[ParamDesc],
) -> RunSpec:
    """A file's run as a :class:`RunSpec`, every key and value checked."""
    spec = RunSpec(gadget)
    _check(entry.params, gadget.params, f"{where}.params")
    spec.values.update({k: as_text(v) for k, v in entry.params.items()})
    _check(entry.runtime, runtime_params, f"{where}.runtime")
    spec.values.update({f"runtime.{k}": as_text(v) for k, v in entry.runtime.items()})
    by_name = {op.name: op for op in operators}
    if entry.operators is not None:
        spec.chain = []
        for i, op_entry in enumerate(entry.operators):
            at = f"{where}.operators[{i}]"
            op = by_name.get(op_entry.name)
            if op is None:
                known = ", ".join(sorted(by_name))
                raise UsageError(f"{at}.name: no operator {op_entry.name!r} (known: {known})")
            if not op.can_operate_on(gadget):
                raise UsageError(f"{at}.name: {op.name} does not apply to {gadget.full_name()}")
            _check(op_entry.with_, op.params, f"{at}.with")
            spec.chain.append(op.name)
            prefix = f"operator.{op.name}."
            spec.values.update({prefix + k: as_text(v) for k, v in op_entry.with_.items()})
    return spec
