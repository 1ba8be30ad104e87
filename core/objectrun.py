"""``igrun run FILE.bpf.o``: run a compiled CO-RE object that no Python describes.

Inspektor Gadget's image-based gadgets need no Go per gadget: the object declares what it
produces and the framework does the rest. The same holds here. The object says, in globals
that ``igrun/macros.h`` makes (so they sit in its BTF), which struct its events have and where
they come from: ``GADGET_TRACER(name, map, struct)`` for a ring or perf buffer,
``GADGET_SNAPSHOTTER(name, struct, program)`` for an iterator read once, and
``GADGET_PARAM(var)`` for each ``const volatile`` global that should be a flag. From that and
the struct's BTF this module builds a gadget class at run time, a :class:`BpfTracer` or a
one-shot snapshot, and hands it to the launcher's usual parser and runtime, so the operators
(containers, filter, sort, limit, output) work as for any gadget.

Two things igrun's libbpf layer does not expose are read from the object's BTF directly, in
pure Python: the types of globals (a flag needs the size and signedness of its variable) and
the declared type names of struct members (``gadget_l4endpoint_t``, ``gadget_mntns_id``, ``bool``),
including the members of nested structs, which :meth:`BpfObject.struct_dtype` shows as opaque
bytes. Parsing BTF is a few fixed-size records; a subprocess (``bpftool``) would add a
dependency and a fork to every start. The event's top-level layout still comes from
:meth:`BpfObject.struct_dtype`, as for every gadget. A flag's default is the variable's
initial value, found through the ELF symbol table as libbpf finds it (clang may leave the
offsets in the object's DATASEC records at 0).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np

from igrun.core.bpf import BpfObject, MapType
from igrun.core.endpoints import l4_endpoint
from igrun.core.errors import BpfError, IgrunError, ParamError, UsageError
from igrun.core.fields import mntns, per_distinct, timestamp
from igrun.core.files import OBJECT_LIMIT, FileRefused, read_bytes
from igrun.core.gadget import PARAM_INTERVAL, Category, Gadget, GadgetContext, GadgetType
from igrun.core.helpers import ip_strings, proto_string
from igrun.core.params import ParamDesc, TypeHint
from igrun.core.schema import Batch, Column, Field, Kind, Schema, field_like
from igrun.core.tracer import FILTER_BY_MNTNS, BpfTracer, MntnsFilter, join_shared

USAGE = "igrun run FILE.bpf.o [flags]  (igrun run FILE.bpf.o --help lists them)"

TRACER_PREFIX = "gadget_tracer_"
SNAPSHOTTER_PREFIX = "gadget_snapshotter_"
PARAM_PREFIX = "gadget_param_"
SEPARATOR = "___"

L4_ENDPOINT = "gadget_l4endpoint_t"
L3_ENDPOINT = "gadget_l3endpoint_t"
MNTNS_TYPE = "gadget_mntns_id"
TIMESTAMP_TYPE = "gadget_timestamp"

# ---- ELF sections, in pure Python --------------------------------------------------------

EM_BPF = 247
SHT_SYMTAB = 2
SHT_NOBITS = 8
_ELF64_CLASS = 2


@dataclass(frozen=True)
class ElfObject:
    """The sections of an ELF file by name (``None`` for sections with no bytes, ``.bss``)
    and where each symbol is: ``name -> (section, offset)``."""

    sections: dict[str, bytes | None]
    symbols: dict[str, tuple[str, int]]
    order: str
    """``<`` or ``>``: the byte order of the file, and so of its BTF."""

    @classmethod
    def read(cls, path: Path) -> ElfObject:
        """Read ``path``; bad input is a :class:`UsageError` that says what the file is."""
        if path.is_dir():
            raise UsageError(f"{path}: is a folder, not a BPF object")
        if not path.exists():
            raise UsageError(f"{path}: no such file")
        try:
            data = read_bytes(path, OBJECT_LIMIT)
        except FileRefused as exc:
            raise UsageError(f"{path}: cannot read it: {exc}") from None
        if data[:4] != b"\x7fELF":
            raise UsageError(f"{path}: not an ELF file: expected a compiled BPF object")
        order = "<" if data[5:6] == b"\x01" else ">"
        try:
            machine = struct.unpack_from(order + "H", data, 18)[0]
            if data[4] != _ELF64_CLASS or machine != EM_BPF:
                raise UsageError(
                    f"{path}: an ELF file for another machine, not a BPF object "
                    "(compile it with clang -target bpf)"
                )
            return cls(*_parse_elf(data, order), order)
        except (struct.error, ValueError, IndexError):
            raise UsageError(f"{path}: a damaged ELF file") from None

    def initial_value(self, name: str, size: int) -> bytes:
        """The bytes global ``name`` starts with (zeros in ``.bss``)."""
        section, offset = self.symbols.get(name, ("", 0))
        data = self.sections.get(section) or b""
        return data[offset : offset + size].ljust(size, b"\0")

    @property
    def byteorder(self) -> Literal["little", "big"]:
        return "little" if self.order == "<" else "big"


def _cstring(data: bytes, start: int) -> str:
    return data[start : data.index(b"\0", start)].decode("utf-8", "replace")


def _parse_elf(
    data: bytes, order: str
) -> tuple[dict[str, bytes | None], dict[str, tuple[str, int]]]:
    shoff = struct.unpack_from(order + "Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", data, 0x3A)
    # name, type, flags, addr, offset, size, link (the rest of each header is not needed)
    headers = [
        struct.unpack_from(order + "IIQQQQI", data, shoff + i * shentsize) for i in range(shnum)
    ]
    names_at = headers[shstrndx][4]
    names = [_cstring(data, names_at + h[0]) for h in headers]
    sections: dict[str, bytes | None] = {}
    symbols: dict[str, tuple[str, int]] = {}
    for name, (_, kind, _, _, offset, size, link) in zip(names, headers, strict=True):
        sections[name] = None if kind == SHT_NOBITS else data[offset : offset + size]
        if kind != SHT_SYMTAB:
            continue
        strings_at = headers[link][4]
        # name, info, other, section index, value, size
        for sym_name, _, _, shndx, value, _ in struct.iter_unpack(
            order + "IBBHQQ", data[offset : offset + size]
        ):
            if sym_name and 0 < shndx < len(names):
                symbols.setdefault(_cstring(data, strings_at + sym_name), (names[shndx], value))
    return sections, symbols


# ---- BTF, in pure Python -----------------------------------------------------------------

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_QUALIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}
_EXTRA = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_ITEM = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
MAX_RESOLVE_DEPTH = 32
"""Typedefs, qualifiers and array dimensions followed before BTF counts as cyclic (libbpf's
limit): a damaged or hostile object must not loop forever."""


@dataclass(frozen=True)
class BtfMember:
    """A member of a struct or union."""

    name: str
    type: int
    offset: int
    """Bytes from the start of the struct."""
    bits: int = 0
    """Bitfield width, 0 for whole members."""


@dataclass(frozen=True)
class BtfType:
    kind: int
    name: str
    size_or_type: int
    """The size in bytes (INT, STRUCT, UNION, ENUM) or the referenced type."""
    kflag: bool = False
    encoding: int = 0
    """INT: INT_SIGNED | INT_CHAR | INT_BOOL."""
    elem: int = 0
    nelems: int = 0
    members: tuple[BtfMember, ...] = ()
    enumerators: tuple[tuple[str, int], ...] = ()
    """ENUM, ENUM64: the names and values (as unsigned numbers of the enum's size)."""


class Btf:
    """The types of one object's ``.BTF`` section: enough to name and size its members."""

    def __init__(self, raw: bytes, order: str) -> None:
        magic, _, _, hdr_len = struct.unpack_from(order + "HBBI", raw, 0)
        if magic != 0xEB9F:
            raise ValueError("bad BTF magic")
        type_off, type_len, str_off, str_len = struct.unpack_from(order + "IIII", raw, 8)
        self._strings = raw[hdr_len + str_off : hdr_len + str_off + str_len]
        self.types: list[BtfType] = [BtfType(0, "void", 0)]
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            t, pos = self._parse(raw, pos, order)
            self.types.append(t)
        self._named: dict[tuple[int, str], int] = {}
        for i, t in enumerate(self.types):
            self._named.setdefault((t.kind, t.name), i)

    def _name(self, offset: int) -> str:
        return self._strings[offset : self._strings.index(b"\0", offset)].decode()

    def _parse(self, raw: bytes, pos: int, order: str) -> tuple[BtfType, int]:
        name_off, info, size_or_type = struct.unpack_from(order + "III", raw, pos)
        pos += 12
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        name = self._name(name_off)
        t = BtfType(kind, name, size_or_type, kflag)
        if kind == INT:
            (word,) = struct.unpack_from(order + "I", raw, pos)
            t = BtfType(kind, name, size_or_type, kflag, encoding=(word >> 24) & 0x0F)
        elif kind == ARRAY:
            elem, _, nelems = struct.unpack_from(order + "III", raw, pos)
            t = BtfType(kind, name, size_or_type, kflag, elem=elem, nelems=nelems)
        elif kind in (STRUCT, UNION):
            items = []
            for i in range(vlen):
                m_name, m_type, m_off = struct.unpack_from(order + "III", raw, pos + 12 * i)
                bit_off, bits = (m_off & 0xFFFFFF, m_off >> 24) if kflag else (m_off, 0)
                items.append(BtfMember(self._name(m_name), m_type, bit_off // 8, bits))
            t = BtfType(kind, name, size_or_type, kflag, members=tuple(items))
        elif kind in (ENUM, ENUM64):
            step, fmt = (8, "II") if kind == ENUM else (12, "III")
            values = []
            for i in range(vlen):
                e_name, *words = struct.unpack_from(order + fmt, raw, pos + step * i)
                value = words[0] | (words[1] << 32 if kind == ENUM64 else 0)
                values.append((self._name(e_name), value))
            t = BtfType(kind, name, size_or_type, kflag, enumerators=tuple(values))
        return t, pos + _EXTRA.get(kind, 0) + _PER_ITEM.get(kind, 0) * vlen

    def find(self, kind: int, name: str) -> int | None:
        return self._named.get((kind, name))

    def resolve(self, type_id: int, depth: int = 0) -> tuple[BtfType, str]:
        """The type behind typedefs and qualifiers, and the name it was declared with
        (``__u32`` for a member declared ``const volatile __u32``)."""
        if depth > MAX_RESOLVE_DEPTH:
            raise ValueError(f"BTF type {type_id}: arrays nested too deep")
        declared = ""
        t = self.types[type_id]
        hops = 0
        while t.kind in _QUALIFIERS:
            if t.kind == TYPEDEF and not declared:
                declared = t.name
            hops += 1
            if hops > MAX_RESOLVE_DEPTH:
                raise ValueError(f"BTF type {type_id}: a cycle of typedefs or qualifiers")
            t = self.types[t.size_or_type]
        if not declared:
            declared = self.type_name(t, depth)
        return t, declared

    def type_name(self, t: BtfType, depth: int = 0) -> str:
        if t.kind == STRUCT:
            return f"struct {t.name or '(anonymous)'}"
        if t.kind == UNION:
            return f"union {t.name or '(anonymous)'}"
        if t.kind in (ENUM, ENUM64):
            return f"enum {t.name}"
        if t.kind == PTR:
            return "pointer"
        if t.kind == ARRAY:
            return f"{self.resolve(t.elem, depth + 1)[1]}[{t.nelems}]"
        return t.name

    def size(self, type_id: int, depth: int = 0) -> int:
        t, _ = self.resolve(type_id, depth)
        if t.kind == ARRAY:
            return t.nelems * self.size(t.elem, depth + 1)
        if t.kind == PTR:
            return 8
        return t.size_or_type if t.kind in (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT) else 0

    def variable(self, name: str) -> int | None:
        """The type of global variable ``name``."""
        var = self.find(VAR, name)
        return None if var is None else self.types[var].size_or_type


def _is_char(t: BtfType) -> bool:
    return (
        t.kind == INT and t.size_or_type == 1 and (bool(t.encoding & INT_CHAR) or "char" in t.name)
    )


def _is_bool(t: BtfType, declared: str) -> bool:
    return t.kind == INT and (bool(t.encoding & INT_BOOL) or "bool" in declared.lower())


def _int_format(size: int, signed: bool) -> str:
    return f"<{'i' if signed else 'u'}{size}"


# ---- what the object declares --------------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    """One ``GADGET_TRACER`` or ``GADGET_SNAPSHOTTER`` of an object."""

    kind: str
    """``tracer`` or ``snapshotter``."""
    name: str
    struct: str
    source: str
    """The buffer map (tracer) or the iterator program (snapshotter)."""


def declarations(globals_: Sequence[str]) -> list[Declaration]:
    """The tracers and snapshotters declared by the names of an object's globals."""
    out = []
    for g in globals_:
        if g.startswith(TRACER_PREFIX):
            parts = g.removeprefix(TRACER_PREFIX).split(SEPARATOR)
            if len(parts) == 3:
                out.append(Declaration("tracer", parts[0], parts[2], parts[1]))
        elif g.startswith(SNAPSHOTTER_PREFIX):
            parts = g.removeprefix(SNAPSHOTTER_PREFIX).split(SEPARATOR)
            if len(parts) == 3:
                out.append(Declaration("snapshotter", parts[0], parts[1], parts[2]))
    return out


# ---- the event layout and its fields ---------------------------------------------------------

_RIGHT = Column(align="right")


@dataclass
class Layout:
    """A struct flattened to numpy members (nested ones named ``outer.inner``) and fields."""

    btf: Btf
    names: list[str]
    formats: list[Any]
    offsets: list[int]
    fields: list[Field]
    not_shown: list[str]
    itemsize: int = 0

    def dtype(self) -> np.dtype[Any]:
        spec = {
            "names": self.names,
            "formats": self.formats,
            "offsets": self.offsets,
            "itemsize": self.itemsize,
        }
        return np.dtype(spec)  # type: ignore[call-overload,no-any-return]

    def member(self, name: str, fmt: Any, offset: int) -> None:
        self.names.append(name)
        self.formats.append(fmt)
        self.offsets.append(offset)

    def taken(self, name: str) -> bool:
        return any(f.name == name or f.json_key == name for f in self.fields)

    def add(self, path: str, type_id: int, offset: int, fmt: Any = None) -> None:
        """Add the member at ``path`` (a whole struct member is flattened)."""
        t, declared = self.btf.resolve(type_id)
        description = f"{path} ({declared})"
        if t.kind == STRUCT and t.name == L4_ENDPOINT and self._endpoint(path, t, offset, 4):
            return
        if t.kind == STRUCT and t.name == L3_ENDPOINT and self._endpoint(path, t, offset, 3):
            return
        if t.kind == STRUCT:
            for m in t.members:
                if m.bits:
                    self.not_shown.append(f"{path}.{m.name} (bitfield)")
                elif m.name:
                    self.add(f"{path}.{m.name}", m.type, offset + m.offset)
                else:
                    self.not_shown.append(f"an anonymous member of {path}")
            return
        if t.kind == ARRAY:
            elem, _ = self.btf.resolve(t.elem)
            if _is_char(elem):
                self.member(path, fmt or f"S{t.nelems}", offset)
                self.fields.append(Field(path, Kind.STR, description))
            else:
                self.not_shown.append(f"{path} ({declared}: only char arrays are shown)")
            return
        if t.kind not in (INT, ENUM, ENUM64, PTR):
            self.not_shown.append(f"{path} ({declared})")
            return
        size = self.btf.size(type_id)
        if size not in (1, 2, 4, 8):
            self.not_shown.append(f"{path} ({declared}: {size} bytes)")
            return
        signed = bool(t.encoding & INT_SIGNED) if t.kind == INT else t.kflag and t.kind != PTR
        self.member(path, fmt or _int_format(size, signed), offset)
        self.fields.append(self._scalar(path, t, declared, size, signed, description))

    def _scalar(
        self, path: str, t: BtfType, declared: str, size: int, signed: bool, description: str
    ) -> Field:
        is_mntns = declared == MNTNS_TYPE or path == "mntns_id"
        if size == 8 and is_mntns and not self.taken("mntns"):
            return field_like(mntns(), member=path, description=description)
        is_time = declared == TIMESTAMP_TYPE or path == "timestamp"
        if size == 8 and is_time and not self.taken("timestamp"):
            return timestamp(member=path)
        if _is_bool(t, declared):
            return Field(path, Kind.BOOL, description)
        if t.enumerators:
            return Field(path, Kind.STR, description, decode=_enum_names(path, t, size))
        return Field(path, Kind.INT if signed else Kind.UINT, description, column=_RIGHT)

    def _endpoint(self, path: str, t: BtfType, offset: int, layer: int) -> bool:
        """An L3 or L4 endpoint as igrun's gadgets show theirs; False if ``t`` is not laid
        out as igrun/types.h declares it."""
        members = {m.name: m for m in t.members if not m.bits}
        wanted = ("addr_raw", "version", "port", "proto") if layer == 4 else ("addr_raw", "version")
        if any(w not in members for w in wanted) or self.btf.size(members["addr_raw"].type) != 16:
            return False
        for name in wanted:
            m = members[name]
            size = self.btf.size(m.type)
            fmt = ("u1", (16,)) if name == "addr_raw" else _int_format(size, False)
            self.member(f"{path}.{name}", fmt, offset + m.offset)
        if layer == 4:
            self.fields += l4_endpoint(
                path, f"{path}.addr_raw", f"{path}.port", f"{path}.version", path
            )
            self.fields.append(
                Field(
                    f"{path}.proto",
                    Kind.STR,
                    f"{path}: IP protocol",
                    decode=_protocols(f"{path}.proto"),
                    column=Column(width=5, hidden=True),
                )
            )
        else:
            self.fields += _l3_endpoint(path)
        return True


def _enum_names(member: str, t: BtfType, size: int) -> Callable[[Batch], Any]:
    """An enum member shown by name (its number when no enumerator has that value)."""
    mask = (1 << (8 * size)) - 1
    names = {value & mask: name for name, value in reversed(t.enumerators)}

    def decode(batch: Batch) -> Any:
        unsigned = batch.member(member).astype(f"<u{size}")  # as the names are keyed
        return per_distinct(unsigned, lambda v: names.get(v, str(v)))

    return decode


def _protocols(member: str) -> Callable[[Batch], Any]:
    def decode(batch: Batch) -> Any:
        return per_distinct(batch.member(member), proto_string)

    return decode


def _l3_endpoint(path: str) -> list[Field]:
    def addresses(batch: Batch) -> Any:
        return ip_strings(batch.member(f"{path}.addr_raw"), batch.member(f"{path}.version"))

    return [
        Field(f"{path}.addr", Kind.STR, f"{path}: IP address", decode=addresses,
              column=Column(width=16, hidden=True)),
        Field(f"{path}.version", Kind.UINT, f"{path}: IP version",
              column=Column(width=2, hidden=True)),
        Field(path, Kind.STR, f"{path} (address)", json="-", decode=addresses,
              column=Column(width=16)),
    ]  # fmt: skip


def event_layout(obj: BpfObject, btf: Btf, struct_name: str) -> Layout:
    """The layout and fields of ``struct struct_name`` of ``obj``."""
    where = f"{obj.source}: struct {struct_name}"
    struct_id = btf.find(STRUCT, struct_name)
    if struct_id is None:
        raise UsageError(f"{where} is declared as the event but its BTF does not describe it")
    bitfields = [m.name or "(anonymous)" for m in btf.types[struct_id].members if m.bits]
    if bitfields:
        raise UsageError(
            f"{where} cannot be decoded: bitfields have no numpy layout ({', '.join(bitfields)})"
        )
    try:
        top = obj.struct_dtype(struct_name)
    except BpfError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UsageError(f"{where} cannot be decoded: {reason}") from None
    layout = Layout(btf, [], [], [], [], [], itemsize=top.itemsize)
    members = btf.types[struct_id].members
    layout.not_shown += [f"an anonymous member at byte {m.offset}" for m in members if not m.name]
    by_name = {m.name: m for m in members}
    for name in top.names or ():
        fmt, offset = top.fields[name][:2]  # type: ignore[index]
        opaque = fmt.kind == "V"  # a nested struct or union: flattened from the BTF
        layout.add(name, by_name[name].type, offset, None if opaque else fmt)
    if not layout.fields:
        raise UsageError(f"{where} cannot be decoded: none of its members can be shown")
    names = [f.name for f in layout.fields]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{where}: members would show under the same name: {', '.join(twice)}")
    return layout


# ---- params from GADGET_PARAM --------------------------------------------------------------


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
    elf: ElfObject, btf: Btf, globals_: Sequence[str], path: Path
) -> list[ObjectParam]:
    """One flag per ``GADGET_PARAM(var)``, typed after ``var``, defaulting to its initial value."""
    out = []
    for g in globals_:
        if not g.startswith(PARAM_PREFIX):
            continue
        var = g.removeprefix(PARAM_PREFIX)
        type_id = btf.variable(var)
        if type_id is None:
            raise UsageError(f"{path}: GADGET_PARAM({var}) names no global variable")
        t, declared = btf.resolve(type_id)
        size = btf.size(type_id)
        initial = elf.initial_value(var, size)
        if t.kind == INT and _is_bool(t, declared):
            hint, signed, default = TypeHint.BOOL, False, "true" if any(initial) else "false"
        elif t.kind in (INT, ENUM, ENUM64) and size in (1, 2, 4, 8):
            signed = bool(t.encoding & INT_SIGNED) if t.kind == INT else t.kflag
            hint = TypeHint.INT if signed else TypeHint.UINT
            default = str(int.from_bytes(initial, elf.byteorder, signed=signed))
        elif t.kind == ARRAY and _is_char(btf.resolve(t.elem)[0]):
            hint, signed = TypeHint.STRING, False
            default = initial.partition(b"\0")[0].decode("utf-8", "replace")
        else:
            raise UsageError(f"{path}: GADGET_PARAM({var}): a {declared} cannot be a flag")
        out.append(ObjectParam(var, size, hint, signed, default, declared, elf.byteorder))
    return out


# ---- the gadgets ------------------------------------------------------------------------------


class ObjectGadget:
    """What the tracer and the snapshot made from an object share: the object's file, its
    flattened layout, its flags, and the container filter for objects without a kernel one."""

    path: ClassVar[Path]
    layout: ClassVar[np.dtype[Any]]
    object_params: ClassVar[tuple[ObjectParam, ...]] = ()
    kernel_filter: ClassVar[bool] = True
    """The object follows the ``gadget_filter_by_mntns`` convention (``igrun/mntns_filter.h``);
    otherwise the selected containers are kept in user space."""
    name: ClassVar[str]
    schema: ClassVar[Schema]

    @classmethod
    def full_name(cls) -> str:
        return f"run {cls.name}"

    @classmethod
    def id(cls) -> str:
        return f"run_{cls.name}"

    def object_constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return {p.var: p.encode(ctx.gadget_params.get(p.var)) for p in self.object_params}

    def selected(self, ctx: GadgetContext, batch: Batch) -> Batch:
        """Without a kernel filter, keep the events of the selected containers here."""
        mntns_filter = ctx.resources.get(MntnsFilter)
        field = batch.schema.tagged("mntns")
        if self.kernel_filter or mntns_filter is None or field is None or not len(batch):
            return batch
        keys = mntns_filter.map.items()
        ids = np.array([int.from_bytes(k, "little") for k, _ in keys], np.uint64)
        return batch.take(np.isin(batch[field.name], ids))


class ObjectTracer(ObjectGadget, BpfTracer):
    """A tracer made from an object's ``GADGET_TRACER``: events stream from its buffer."""

    category = Category.OTHER
    type = GadgetType.RUN

    def object_path(self) -> Any:
        return self.path

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        return self.object_constants(ctx)

    def init(self, ctx: GadgetContext) -> None:
        # The schema has no struct name: BpfTracer would bind it to the unflattened layout.
        ctx.schema = self.schema.bind(self.layout)
        self._ctx = ctx
        super().init(ctx)

    def transform(self, batch: Batch) -> Batch:
        return self.selected(self._ctx, batch)


class ObjectSnapshot(ObjectGadget, Gadget):
    """A snapshot made from an object's ``GADGET_SNAPSHOTTER``: its iterator is read once
    and every record it wrote with ``bpf_seq_write`` is one row."""

    category = Category.OTHER
    type = GadgetType.ONE_SHOT
    program: ClassVar[str]

    def __init__(self) -> None:
        self.obj: BpfObject | None = None

    def init(self, ctx: GadgetContext) -> None:
        ctx.schema = self.schema.bind(self.layout)
        obj = self.obj = BpfObject.open(self.path)
        try:
            for name, value in self.object_constants(ctx).items():
                obj.set_global(name, value)
            join_shared(ctx, obj)
            obj.load()
            if ctx.pins is not None:
                folder = ctx.pins.sub(self.id())
                for name in obj.map_names():
                    obj.map(name).pin(folder / name)
        except BaseException:
            self.close()
            raise

    def run(self, ctx: GadgetContext) -> None:
        """One snapshot; with ``--interval``, one per interval until the run ends. The next
        snapshot is due an interval after the last one was taken, so the runtime's interval
        tick (which ends a window: sort, output, gauges) always falls between two of them."""
        interval = float(ctx.runtime_params.get(PARAM_INTERVAL) or 0.0)
        while True:
            ctx.heartbeat()
            due = time.monotonic() + interval
            self._snapshot(ctx)
            if not interval:
                return
            while not ctx.done and time.monotonic() < due:
                time.sleep(ctx.remaining(min(0.1, max(0.0, due - time.monotonic()))))
                ctx.heartbeat()
            if ctx.done:
                return

    def _snapshot(self, ctx: GadgetContext) -> None:
        assert self.obj is not None and ctx.schema is not None
        data = self.obj.attach(self.program).read()
        size = self.layout.itemsize
        if len(data) % size:
            raise IgrunError(
                f"{self.path}: iterator {self.program} wrote {len(data)} bytes, not whole "
                f"records of {size} bytes (write each one with bpf_seq_write)"
            )
        raw = np.frombuffer(data, dtype=self.layout).copy()
        batch = self.selected(ctx, Batch(ctx.schema, raw))
        if len(batch):
            ctx.emit(batch)

    def close(self) -> None:
        if self.obj is not None:
            self.obj.close()
            self.obj = None


def gadget_from_object(path: Path) -> type[Gadget]:
    """A gadget class for the object at ``path``, from what it declares."""
    elf = ElfObject.read(path)
    raw_btf = elf.sections.get(".BTF")
    if not raw_btf:
        raise UsageError(f"{path}: has no BTF (compile it with clang -g)")
    try:
        btf = Btf(raw_btf, elf.order)
    except (ValueError, struct.error, IndexError):
        raise UsageError(f"{path}: its BTF cannot be read") from None
    try:
        obj = BpfObject.open(path)
    except BpfError as exc:
        raise UsageError(str(exc)) from None
    with obj:
        globals_ = obj.global_names()
        found = declarations(globals_)
        if not found:
            raise UsageError(
                f"{path}: declares no GADGET_TRACER nor GADGET_SNAPSHOTTER (igrun/macros.h): "
                "nothing to run"
            )
        if len(found) > 1:
            names = ", ".join(f"{d.kind} {d.name}" for d in found)
            raise UsageError(f"{path}: declares several gadgets ({names}); igrun runs one")
        (decl,) = found
        _check_source(obj, decl)
        try:
            layout = event_layout(obj, btf, decl.struct)
            params = object_params(elf, btf, globals_, path)
        except (ValueError, IndexError, RecursionError) as exc:
            # The kernel rejects such BTF at load; this is before load, so say it here.
            raise UsageError(f"{path}: its BTF cannot be read ({exc})") from None
    description = f"{path.name}: {decl.kind} {decl.name}, events of struct {decl.struct}"
    if layout.not_shown:
        description += f" (not shown: {', '.join(layout.not_shown)})"
    attrs: dict[str, Any] = {
        "name": decl.name,
        "description": description,
        "path": path,
        "layout": layout.dtype(),
        "object_params": tuple(params),
        "params": tuple(p.desc() for p in params),
        "kernel_filter": FILTER_BY_MNTNS in globals_,
        "schema": Schema(layout.fields),
        "examples": _examples(path, layout.fields),
    }
    if decl.kind == "tracer":
        attrs["buffer_map"] = decl.source
        return cast(type[Gadget], type(f"RunTracer_{decl.name}", (ObjectTracer,), attrs))
    attrs["program"] = decl.source
    return cast(type[Gadget], type(f"RunSnapshot_{decl.name}", (ObjectSnapshot,), attrs))


def _examples(path: Path, fields: Sequence[Field]) -> tuple[str, ...]:
    """Command lines for ``--help`` that work with this object's fields and flags."""
    first = next(f.name for f in fields if not f.column.hidden)
    if not any("mntns" in f.tags for f in fields):
        return (f"igrun run {path} -o json", f"igrun run {path} -o json -F {first}:VALUE")
    return (f"igrun run {path} --host -o json", f"igrun run {path} -c CONTAINER --sort {first}")


def _check_source(obj: BpfObject, decl: Declaration) -> None:
    where = f"{obj.source}: {decl.kind} {decl.name}"
    if decl.kind == "tracer":
        if not obj.has_map(decl.source):
            raise UsageError(f"{where} reads map {decl.source!r}, which the object lacks")
        if obj.map_type(decl.source) not in (MapType.RINGBUF, MapType.PERF_EVENT_ARRAY):
            raise UsageError(f"{where}: map {decl.source!r} is not a ring or perf buffer")
        return
    prog = obj.programs.get(decl.source)
    if prog is None:
        raise UsageError(f"{where} reads program {decl.source!r}, which the object lacks")
    if not prog.is_iterator:
        raise UsageError(f'{where}: program {decl.source!r} is not an iterator (SEC("iter/..."))')


# ---- the command ---------------------------------------------------------------------------


def cmd_run(argv: list[str]) -> int:
    """``igrun run FILE.bpf.o [flags]``."""
    from igrun.core.cli import STDOUT, run_gadget_class
    from igrun.core.plugins import registry

    if argv[:1] in (["-h"], ["--help"]):
        STDOUT.write(
            f"usage: {USAGE}\n\nRun a compiled CO-RE object that declares its "
            "events with GADGET_TRACER or GADGET_SNAPSHOTTER (igrun/macros.h).\n"
        )
        return 0
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"igrun run: name the object first: {USAGE}")
    gadget = gadget_from_object(Path(argv[0]))
    return run_gadget_class(registry(), gadget, argv[1:], prog=f"igrun run {argv[0]}")
