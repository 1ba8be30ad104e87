"""Runs described in a TOML file: the gadget, its params, and its operator chain.

A config file holds one or more runs::

    [[run]]
    gadget = "trace exec"
    params = { ignore-errors = true }
    runtime = { timeout = "30s" }

    [[run.operators]]            # the chain, in this order (output comes last regardless)
    name = "filter"
    with = { filter = "comm:bash" }

    [[run.operators]]
    name = "output"
    with = { output = "json" }

``igrun --config FILE`` starts every run of the file at once; ``igrun --config FILE trace exec``
takes the file's run of that gadget as the starting point. Without ``--config``, the user's
default file (``$XDG_CONFIG_HOME/igrun/config.toml``, else ``~/.config/igrun/config.toml``)
gives defaults to the gadget named on the command line. A value comes from, in this order:
the command line, the environment (``IGRUN_<KEY>``, e.g. ``IGRUN_OUTPUT=json``), the file,
the param's default.

The file is checked with pydantic before anything loads, against the params of the gadget and
operators it names, and an error names the key: ``run[0].operators[1].with.limit: Extra
inputs are not permitted``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from igrun.core.errors import ParamError, UsageError
from igrun.core.gadget import Gadget
from igrun.core.operator import Operator
from igrun.core.params import ParamDesc

Value = str | int | float | bool | list[str] | list[int]
ENV_PREFIX = "IGRUN_"


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


@dataclass
class RunSpec:
    """One run, resolved: the gadget and the flat parameter map for it (``key``,
    ``runtime.key``, ``operator.<name>.key``), and the chain when the file fixes it."""

    gadget: type[Gadget]
    values: dict[str, str] = field(default_factory=dict)
    chain: list[str] | None = None


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "igrun" / "config.toml"


def readable(path: Path) -> bool:
    """Whether there is a file to read at ``path`` (a folder we may not enter has none)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _location(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("with" if part == "with_" else str(part))
    return out


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    error = exc.errors()[0]
    where = _location([*([prefix] if prefix else []), *error["loc"]])
    return f"{where}: {error['msg']}"


def load(path: Path) -> ConfigFile:
    """Read and check the file's shape; params are checked by :func:`resolve`."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config {path}: not TOML: {exc}") from None
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"config {path}: {_first_error(exc)}") from None


def _as_text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


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
            by_key[key].validate(_as_text(value))
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
    spec.values.update({k: _as_text(v) for k, v in entry.params.items()})
    _check(entry.runtime, runtime_params, f"{where}.runtime")
    spec.values.update({f"runtime.{k}": _as_text(v) for k, v in entry.runtime.items()})
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
            spec.values.update({prefix + k: _as_text(v) for k, v in op_entry.with_.items()})
    return spec


def from_environment(
    gadget: type[Gadget], operators: Sequence[type[Operator]], runtime_params: Sequence[ParamDesc]
) -> dict[str, str]:
    """``IGRUN_<KEY>`` for every param of this run that has one set (``-`` becomes ``_``)."""
    out: dict[str, str] = {}

    def take(descs: Sequence[ParamDesc], prefix: str) -> None:
        for d in descs:
            value = os.environ.get(ENV_PREFIX + d.key.upper().replace("-", "_"))
            if value is not None:
                out[prefix + d.key] = value

    take(gadget.params, "")
    take(runtime_params, "runtime.")
    for op in operators:
        take(op.params, f"operator.{op.name}.")
    return out


def _typed(desc: ParamDesc, raw: str) -> Value:
    """A param's text value as the TOML value a user would write."""
    from igrun.core.params import TypeHint

    if desc.type_hint is TypeHint.BOOL:
        return raw.strip().lower() in ("true", "1", "yes")
    if desc.type_hint in (TypeHint.INT, TypeHint.UINT) and raw.strip().lstrip("-").isdigit():
        return int(raw)
    if desc.type_hint.value.startswith("[]"):
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def to_toml(
    spec: RunSpec, operators: Sequence[type[Operator]], runtime_params: Sequence[ParamDesc]
) -> str:
    """One run as a config file: every param, with its value (or default)."""

    def table(descs: Sequence[ParamDesc], prefix: str) -> dict[str, Value]:
        return {d.key: _typed(d, spec.values.get(prefix + d.key, d.default)) for d in descs}

    run: dict[str, Any] = {"gadget": spec.gadget.full_name()}
    if spec.gadget.params:
        run["params"] = table(spec.gadget.params, "")
    run["runtime"] = table(runtime_params, "runtime.")
    chain = spec.chain or [op.name for op in operators]
    by_name = {op.name: op for op in operators}
    run["operators"] = [
        {"name": name, "with": table(by_name[name].params, f"operator.{name}.")}
        for name in chain
        if name in by_name
    ]
    return tomli_w.dumps({"run": [run]})
