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

The file is checked with pydantic before anything loads (``core/config/check.py``, imported
only when there is a file: a plain run does not pay for pydantic), against the params of the
gadget and operators it names, and an error names the key: ``run[0].operators[1].with.limit:
Extra inputs are not permitted``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from igrun.core.gadget import Gadget
from igrun.core.operator import Operator
from igrun.core.params import ParamDesc

Value = str | int | float | bool | list[str] | list[int]
ENV_PREFIX = "IGRUN_"


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


def as_text(value: Value) -> str:
    """A file's value as the text a flag would give (lists comma-separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


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
    run["operators"] = [  # the chain as it runs: with what is always on, output last
        {"name": op.name, "with": table(op.params, f"operator.{op.name}.")} for op in operators
    ]
    return tomli_w.dumps({"run": [run]})
