"""The BTF of an opened :class:`BpfObject`, read through libbpf.

libbpf parses and checks an object's BTF when it opens it (header, record sizes, type ids,
string offsets); :class:`ObjectBtf` asks it for one type, one member or one enumerator at a
time (``igr_btf_*`` in ``csrc/igrun_libbpf.c``, which checks every id and index it is given).
What is left to Python is following typedefs, modifiers and arrays, which it does with a
bound: damaged or hostile BTF (a typedef that names itself) is a :class:`BtfError`, one line,
never an endless loop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from igrun.core.bpf.objects import BpfObject, _c_name, ffi, lib
from igrun.core.errors import BpfError


class BtfKind(enum.IntEnum):
    """BTF kinds, numbered as the kernel numbers them (``BTF_KIND_*``)."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


QUALIFIERS = {BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT, BtfKind.TYPE_TAG}
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
MAX_RESOLVE_DEPTH = 32
"""Typedefs, qualifiers and array dimensions followed before BTF counts as cyclic (libbpf's
limit)."""


class BtfError(BpfError, ValueError):
    """The object's BTF cannot describe what was asked (a cycle, an id out of range)."""


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
    id: int
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
    component: int = -1
    """DECL_TAG: the member index it tags, -1 for the whole type or variable."""


class ObjectBtf:
    """The types of one opened object, read on demand; valid while the object is open."""

    def __init__(self, obj: BpfObject) -> None:
        self.obj = obj
        count = lib.igr_btf_count(obj._obj())
        if count < 0:
            raise BtfError(f"{obj.source}: has no BTF (compile it with clang -g)", -count)
        self.count = int(count)
        self._types: dict[int, BtfType] = {}

    def type(self, type_id: int) -> BtfType:
        """Type ``type_id`` (read once, then kept)."""
        t = self._types.get(type_id)
        if t is None:
            t = self._types[type_id] = self._read(type_id)
        return t

    def _read(self, type_id: int) -> BtfType:
        if not 0 <= type_id < self.count:
            raise BtfError(f"BTF type {type_id} does not exist (the object has {self.count})")
        raw = ffi.new("struct igr_btf_type *")
        err = lib.igr_btf_type(self.obj._obj(), type_id, raw)
        if err:
            raise BtfError(f"BTF type {type_id} cannot be read", -err)
        kind, vlen = int(raw.kind), int(raw.vlen)
        name = ffi.string(raw.name).decode("utf-8", "replace")
        members: list[BtfMember] = []
        enumerators: list[tuple[str, int]] = []
        if kind in (BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM, BtfKind.ENUM64):
            item = ffi.new("struct igr_btf_item *")
            for i in range(vlen):
                err = lib.igr_btf_item(self.obj._obj(), type_id, i, item)
                if err:
                    raise BtfError(f"BTF type {type_id}: item {i} cannot be read", -err)
                item_name = ffi.string(item.name).decode("utf-8", "replace")
                if kind in (BtfKind.STRUCT, BtfKind.UNION):
                    bit = int(item.value)
                    members.append(BtfMember(item_name, int(item.type), bit // 8, int(item.bits)))
                else:
                    enumerators.append((item_name, int(item.value)))
        return BtfType(
            type_id, kind, name, int(raw.size_or_type), bool(raw.kflag), int(raw.encoding),
            int(raw.elem), int(raw.nelems), tuple(members), tuple(enumerators),
            int(raw.component),
        )  # fmt: skip

    def find(self, kind: int, name: str) -> int | None:
        found = lib.igr_btf_find(self.obj._obj(), _c_name("BTF type name", name), kind)
        return None if found < 0 else int(found)

    def global_location(self, name: str) -> tuple[str, int] | None:
        """Where global variable ``name`` is: the section (``.bss``, ``.data``, ``.rodata``
        ...: the name of its map) and its offset there; None without such a variable."""
        var = self.find(BtfKind.VAR, name)
        if var is None:
            return None
        raw = ffi.new("struct igr_btf_type *")
        item = ffi.new("struct igr_btf_item *")
        for type_id in range(1, self.count):
            if lib.igr_btf_type(self.obj._obj(), type_id, raw) or raw.kind != BtfKind.DATASEC:
                continue
            for i in range(int(raw.vlen)):
                err = lib.igr_btf_item(self.obj._obj(), type_id, i, item)
                if err:
                    raise BtfError(f"BTF section {type_id}: item {i} cannot be read", -err)
                if item.type == var:
                    return ffi.string(raw.name).decode("utf-8", "replace"), int(item.value)
        return None

    def variable(self, name: str) -> int | None:
        """The type of global variable ``name``."""
        var = self.find(BtfKind.VAR, name)
        return None if var is None else self.type(var).size_or_type

    def resolve(self, type_id: int, depth: int = 0) -> tuple[BtfType, str]:
        """The type behind typedefs and qualifiers, and the name it was declared with
        (``__u32`` for a member declared ``const volatile __u32``)."""
        if depth > MAX_RESOLVE_DEPTH:
            raise BtfError(f"BTF type {type_id}: arrays nested too deep")
        declared = ""
        t = self.type(type_id)
        hops = 0
        while t.kind in QUALIFIERS:
            if t.kind == BtfKind.TYPEDEF and not declared:
                declared = t.name
            hops += 1
            if hops > MAX_RESOLVE_DEPTH:
                raise BtfError(f"BTF type {type_id}: a cycle of typedefs or qualifiers")
            t = self.type(t.size_or_type)
        if not declared:
            declared = self.type_name(t, depth)
        return t, declared

    def typedefs(self, type_id: int) -> list[str]:
        """Every typedef name on the way from ``type_id`` to the type behind it, outermost
        first (``my_errno``, ``gadget_errno`` for ``typedef gadget_errno my_errno``)."""
        names: list[str] = []
        t = self.type(type_id)
        for _ in range(MAX_RESOLVE_DEPTH):
            if t.kind not in QUALIFIERS:
                return names
            if t.kind == BtfKind.TYPEDEF:
                names.append(t.name)
            t = self.type(t.size_or_type)
        raise BtfError(f"BTF type {type_id}: a cycle of typedefs or qualifiers")

    def type_name(self, t: BtfType, depth: int = 0) -> str:
        if t.kind == BtfKind.STRUCT:
            return f"struct {t.name or '(anonymous)'}"
        if t.kind == BtfKind.UNION:
            return f"union {t.name or '(anonymous)'}"
        if t.kind in (BtfKind.ENUM, BtfKind.ENUM64):
            return f"enum {t.name}"
        if t.kind == BtfKind.PTR:
            return "pointer"
        if t.kind == BtfKind.ARRAY:
            return f"{self.resolve(t.elem, depth + 1)[1]}[{t.nelems}]"
        return t.name

    def size(self, type_id: int) -> int:
        """The size of ``type_id`` in bytes, as libbpf resolves it; 0 for what has none."""
        t, _ = self.resolve(type_id)
        if t.kind not in (BtfKind.INT, BtfKind.STRUCT, BtfKind.UNION, BtfKind.ENUM,
                          BtfKind.ENUM64, BtfKind.FLOAT, BtfKind.ARRAY, BtfKind.PTR):  # fmt: skip
            return 0
        size = lib.igr_btf_size(self.obj._obj(), type_id)
        if size < 0:
            raise BtfError(f"BTF type {type_id}: no size (a cycle or a damaged array)", -size)
        return int(size)

    def decl_tags(self) -> dict[tuple[int, int], list[str]]:
        """Every ``btf_decl_tag`` of the object: ``(type id, member index) -> tags`` (index
        -1 for a tag on the whole type or variable)."""
        out: dict[tuple[int, int], list[str]] = {}
        type_id = 0
        while True:
            type_id = lib.igr_btf_next_decl_tag(self.obj._obj(), type_id + 1)
            if type_id < 0:
                raise BtfError("the BTF's declaration tags cannot be listed", -type_id)
            if type_id == 0:
                return out
            t = self.type(type_id)
            out.setdefault((t.size_or_type, t.component), []).append(t.name)
