"""Flags of a bare object: one per ``GADGET_PARAM(var)`` (``igrun/macros.h``).

A flag is typed after its ``const volatile`` global (its BTF: size, sign, bool, char array)
and defaults to the value the object was compiled with, which libbpf holds from open on.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from igrun.core.bpf.btf import INT_SIGNED, BtfKind, ObjectBtf
from igrun.core.bpf.objects import BpfObject
from igrun.core.errors import ParamError, UsageError
from igrun.core.objectrun.layout import is_bool, is_char
from igrun.core.params import ParamDesc, TypeHint

PARAM_PREFIX = "gadget_param_"


@dataclass(frozen=True)
class ObjectParam:
    """A global variable of the object set from a flag."""

    var: str
    size: int
    hint: TypeHint
    signed: bool
    default: str
    ctype: str
    byteorder: Literal["little", "big"] = "little"

    def desc(self) -> ParamDesc:
        return ParamDesc(
            self.var,
            description=f"sets {self.ctype} {self.var} in the object",
            default=self.default,
            type_hint=self.hint,
        )

    def encode(self, value: Any) -> bytes:
        """The variable's bytes for a flag's typed value."""
        if self.hint is TypeHint.BOOL:
            return bytes([1 if value else 0]).ljust(self.size, b"\0")
        if self.hint is TypeHint.STRING:
            data = str(value).encode()
            if len(data) >= self.size:
                raise ParamError(f"--{self.var}: at most {self.size - 1} bytes")
            return data.ljust(self.size, b"\0")
        bits = self.size * 8
        low, high = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if self.signed else (0, (1 << bits) - 1)
        )
        if not low <= int(value) <= high:
            raise ParamError(f"--{self.var}: {value} is out of range ({low} to {high})")
        return int(value).to_bytes(self.size, self.byteorder, signed=self.signed)


def object_params(
    obj: BpfObject, btf: ObjectBtf, globals_: Sequence[str], path: Path
) -> list[ObjectParam]:
    """One flag per ``GADGET_PARAM(var)``, typed after ``var``, defaulting to its initial value."""
    order: Literal["little", "big"] = "little" if sys.byteorder == "little" else "big"
    out = []
    for g in globals_:
        if not g.startswith(PARAM_PREFIX):
            continue
        var = g.removeprefix(PARAM_PREFIX)
        type_id = btf.variable(var)
        initial = obj.global_value(var)
        if type_id is None or initial is None:
            raise UsageError(f"{path}: GADGET_PARAM({var}) names no global variable")
        t, declared = btf.resolve(type_id)
        size = len(initial)
        if t.kind == BtfKind.INT and is_bool(t, declared):
            hint, signed, default = TypeHint.BOOL, False, "true" if any(initial) else "false"
        elif t.kind in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64) and size in (1, 2, 4, 8):
            signed = bool(t.encoding & INT_SIGNED) if t.kind == BtfKind.INT else t.kflag
            hint = TypeHint.INT if signed else TypeHint.UINT
            default = str(int.from_bytes(initial, order, signed=signed))
        elif t.kind == BtfKind.ARRAY and is_char(btf.resolve(t.elem)[0]):
            hint, signed = TypeHint.STRING, False
            default = initial.partition(b"\0")[0].decode("utf-8", "replace")
        else:
            raise UsageError(f"{path}: GADGET_PARAM({var}): a {declared} cannot be a flag")
        out.append(ObjectParam(var, size, hint, signed, default, declared, order))
    return out
