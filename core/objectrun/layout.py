"""The event struct of a bare object, flattened to numpy members and igrun fields.

``igrun run`` shows a struct no Python describes. Its top-level layout comes from
:meth:`BpfObject.struct_dtype`, as for every gadget; nested structs are flattened
(``outer.inner``) from the BTF, read through libbpf (:mod:`igrun.core.bpf.btf`). How a member
shows is said in C (``igrun/display.h``, ``igrun/types.h``): by the typedef it is declared
with (:mod:`igrun.core.objectrun.display`; ``gadget_timestamp``, ``gadget_mntns_id`` and the
endpoints here) and by BTF declaration tags after its name (``GADGET_FLAGS``,
``GADGET_WIDTH(n)``, ``GADGET_HIDDEN``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from igrun.core.bpf.btf import INT_BOOL, INT_CHAR, INT_SIGNED, BtfKind, BtfType, ObjectBtf
from igrun.core.bpf.objects import BpfObject
from igrun.core.errors import BpfError, UsageError
from igrun.core.events.endpoints import l4_endpoint
from igrun.core.events.fields import (
    PROCESS_NAMES,
    connection_fields,
    mntns,
    per_distinct,
    process_fields,
    timestamp,
)
from igrun.core.events.helpers import ip_strings, proto_string
from igrun.core.events.schema import Batch, Column, Field, Kind, field_like
from igrun.core.objectrun.display import DISPLAY_TYPES, Annotations, flag_names

L4_ENDPOINT = "gadget_l4endpoint_t"
L3_ENDPOINT = "gadget_l3endpoint_t"
PROCESS_STRUCT = "gadget_process"
CONNECTION_STRUCT = "gadget_connection"
CONNECTION_MEMBERS = ("saddr", "daddr", "sport", "dport", "ipversion")
MNTNS_TYPE = "gadget_mntns_id"
TIMESTAMP_TYPE = "gadget_timestamp"
UID_TYPES = ("gadget_uid", "gadget_gid")
RAW_SUFFIX = "_raw"

_RIGHT = Column(align="right")


def _texts(member: str, fmt: str, text: Callable[[int], str]) -> Callable[[Batch], Any]:
    def decode(batch: Batch) -> Any:
        return per_distinct(batch.member(member).astype(fmt), text)

    return decode


def _enum_names(member: str, t: BtfType, size: int) -> Callable[[Batch], Any]:
    """An enum member shown by name (its number when no enumerator has that value)."""
    mask = (1 << (8 * size)) - 1
    names = {value & mask: name for name, value in reversed(t.enumerators)}

    def decode(batch: Batch) -> Any:
        unsigned = batch.member(member).astype(f"<u{size}")  # as the names are keyed
        return per_distinct(unsigned, lambda v: names.get(v, str(v)))

    return decode


def _flags(member: str, t: BtfType, size: int) -> Callable[[Batch], Any]:
    mask = (1 << (8 * size)) - 1
    bits = {value & mask: name for name, value in reversed(t.enumerators)}
    return _texts(member, f"<u{size}", lambda v: flag_names(bits, v))


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


def is_char(t: BtfType) -> bool:
    return (
        t.kind == BtfKind.INT
        and t.size_or_type == 1
        and (bool(t.encoding & INT_CHAR) or "char" in t.name)
    )


def is_bool(t: BtfType, declared: str) -> bool:
    return t.kind == BtfKind.INT and (bool(t.encoding & INT_BOOL) or "bool" in declared.lower())


def _int_format(size: int, signed: bool) -> str:
    return f"<{'i' if signed else 'u'}{size}"


# ---- the layout ---------------------------------------------------------------------------


@dataclass
class Layout:
    """A struct flattened to numpy members (nested ones named ``outer.inner``) and fields."""

    btf: ObjectBtf
    names: list[str] = field(default_factory=list)
    formats: list[Any] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    fields: list[Field] = field(default_factory=list)
    not_shown: list[str] = field(default_factory=list)
    itemsize: int = 0
    tags: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    processes: list[tuple[str, int, int, tuple[str, ...]]] = field(default_factory=list)
    """Each ``struct gadget_process`` member: its path, the slice of :attr:`fields` its
    members took when flattened, and which of :data:`PROCESS_NAMES` it has."""

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

    def annotations(self, struct_id: int, index: int, where: str) -> Annotations:
        return Annotations.parse(self.tags.get((struct_id, index), []), where)

    def add(
        self,
        path: str,
        type_id: int,
        offset: int,
        fmt: Any = None,
        notes: Annotations | None = None,
    ) -> None:
        """Add the member at ``path`` (a whole struct member is flattened)."""
        notes = notes or Annotations()
        t, declared = self.btf.resolve(type_id)
        description = f"{path} ({declared})"
        if (
            t.kind == BtfKind.STRUCT
            and t.name == L4_ENDPOINT
            and self._endpoint(path, t, offset, 4)
        ):
            return
        if (
            t.kind == BtfKind.STRUCT
            and t.name == L3_ENDPOINT
            and self._endpoint(path, t, offset, 3)
        ):
            return
        if (
            t.kind == BtfKind.STRUCT
            and t.name == CONNECTION_STRUCT
            and self._connection(path, t, offset)
        ):
            return
        if t.kind == BtfKind.STRUCT:
            start = len(self.fields)
            for i, m in enumerate(t.members):
                if m.bits:
                    self.not_shown.append(f"{path}.{m.name} (bitfield)")
                elif m.name:
                    inner = f"{path}.{m.name}"
                    self.add(inner, m.type, offset + m.offset, None,
                             self.annotations(t.id, i, inner))  # fmt: skip
                else:
                    self.not_shown.append(f"an anonymous member of {path}")
            if t.name == PROCESS_STRUCT:
                has = {"mntns" if m.name == "mntns_id" else m.name for m in t.members if not m.bits}
                names = tuple(n for n in PROCESS_NAMES if n in has)
                self.processes.append((path, start, len(self.fields), names))
            return
        if t.kind == BtfKind.ARRAY:
            elem, _ = self.btf.resolve(t.elem)
            if is_char(elem):
                self.member(path, fmt or f"S{t.nelems}", offset)
                self.fields.append(notes.apply(Field(path, Kind.STR, description)))
            else:
                self.not_shown.append(f"{path} ({declared}: only char arrays are shown)")
            return
        if t.kind not in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.PTR):
            self.not_shown.append(f"{path} ({declared})")
            return
        size = self.btf.size(type_id)
        if size not in (1, 2, 4, 8):
            self.not_shown.append(f"{path} ({declared}: {size} bytes)")
            return
        signed = (
            bool(t.encoding & INT_SIGNED) if t.kind == BtfKind.INT
            else t.kflag and t.kind != BtfKind.PTR
        )  # fmt: skip
        typedefs = self.btf.typedefs(type_id)
        shown = next((DISPLAY_TYPES[n] for n in typedefs if n in DISPLAY_TYPES), None)
        if shown is not None and shown.raw_only and not path.endswith(RAW_SUFFIX):
            shown = None
        if shown is not None and shown.signed and not signed:
            signed, fmt = True, None  # read as signed: -ENOENT is ENOENT
        self.member(path, fmt or _int_format(size, signed), offset)
        if shown is not None:
            self.fields += self._text_and_raw(path, size, shown.text, shown.width,
                                              signed, description, notes)  # fmt: skip
            return
        if notes.flags:
            if not t.enumerators:
                raise UsageError(f"{description}: GADGET_FLAGS needs a member of an enum type")
            self.fields += self._text_and_raw(path, size, None, 0, signed, description, notes,
                                              _flags(path, t, size))  # fmt: skip
            return
        scalar = self._scalar(path, t, declared, typedefs, size, signed, description)
        self.fields.append(notes.apply(scalar))

    def _text_and_raw(
        self,
        path: str,
        size: int,
        text: Callable[[int], str] | None,
        width: int,
        signed: bool,
        description: str,
        notes: Annotations,
        decode: Callable[[Batch], Any] | None = None,
    ) -> list[Field]:
        """``x`` as text and ``x_raw`` as its number (a hidden column), from member ``path``
        (named ``x`` or ``x_raw``)."""
        name = path.removesuffix(RAW_SUFFIX) if path.endswith(RAW_SUFFIX) else path
        if decode is None:
            assert text is not None
            decode = _texts(path, _int_format(size, signed), text)
        shown = Field(name, Kind.STR, description, decode=decode,
                      column=Column(width=width) if width else Column())  # fmt: skip
        raw = Field(
            name + RAW_SUFFIX, Kind.INT if signed else Kind.UINT, f"{description}: the number",
            member=None if path == name + RAW_SUFFIX else path,
            column=Column(hidden=True, align="right"),
        )  # fmt: skip
        return [notes.apply(shown), raw]

    def _scalar(
        self,
        path: str,
        t: BtfType,
        declared: str,
        typedefs: list[str],
        size: int,
        signed: bool,
        description: str,
    ) -> Field:
        is_mntns = MNTNS_TYPE in typedefs or path == "mntns_id"
        if size == 8 and is_mntns and not self.taken("mntns"):
            return field_like(mntns(), member=path, description=description)
        is_time = TIMESTAMP_TYPE in typedefs or path == "timestamp"
        if size == 8 and is_time and not self.taken("timestamp"):
            return timestamp(member=path)
        if is_bool(t, declared):
            return Field(path, Kind.BOOL, description)
        if t.enumerators:
            return Field(path, Kind.STR, description, decode=_enum_names(path, t, size))
        tags = tuple(n.removeprefix("gadget_") for n in typedefs if n in UID_TYPES)[:1]
        return Field(path, Kind.INT if signed else Kind.UINT, description, column=_RIGHT,
                     tags=tags)  # fmt: skip

    def _connection(self, path: str, t: BtfType, offset: int) -> bool:
        """A ``struct gadget_connection`` (igrun/connection.h) as the network gadgets show
        theirs (``ip``, ``src``, ``dst``); False if ``t`` is laid out otherwise."""
        members = {m.name: m for m in t.members if not m.bits}
        if any(n not in members for n in CONNECTION_MEMBERS) or any(
            self.btf.size(members[n].type) != 16 for n in ("saddr", "daddr")
        ):
            return False
        if any(self.taken(n) for n in ("ip", "src", "dst")):
            return False
        for name in CONNECTION_MEMBERS:
            m = members[name]
            size = self.btf.size(m.type)
            fmt = ("u1", (16,)) if size == 16 else _int_format(size, False)
            self.member(f"{path}.{name}", fmt, offset + m.offset)
        self.fields += connection_fields(member=path)
        return True

    def show_processes(self) -> None:
        """Show each ``struct gadget_process`` member as the built-in gadgets do (``pid``,
        ``comm``, ``mntns`` for the containers operator ...), unless one of those names is
        another member's (a second one: ``parent.pid``): then it keeps its flattened
        names."""
        shift = 0  # how much the fields replaced so far moved the later ones
        for path, first, last, names in self.processes:
            start, end = first + shift, last + shift
            rest = self.fields[:start] + self.fields[end:]
            others = {f.name for f in rest} | {f.json_key for f in rest}
            own = self.fields[start:end]
            if "mntns" in others:  # another member is the mount namespace: keep this one's
                names = tuple(n for n in names if n != "mntns")
            shown = process_fields(*names, member=path)
            if any(f.name in others or f.json_key in others for f in shown):
                continue
            kept = [f for f in own if f.name == f"{path}.mntns_id"] if "mntns" in others else []
            self.fields[start:end] = shown + kept
            shift += len(shown) + len(kept) - (end - start)

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
                path, f"{path}.addr_raw", f"{path}.port", f"{path}.version", path, pod=False
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


def event_layout(obj: BpfObject, btf: ObjectBtf, struct_name: str) -> Layout:
    """The layout and fields of ``struct struct_name`` of ``obj``; what cannot be shown is a
    :class:`UsageError` of one line."""
    where = f"{obj.source}: struct {struct_name}"
    struct_id = btf.find(BtfKind.STRUCT, struct_name)
    if struct_id is None:
        raise UsageError(f"{where} is declared as the event but its BTF does not describe it")
    members = btf.type(struct_id).members
    bitfields = [m.name or "(anonymous)" for m in members if m.bits]
    if bitfields:
        raise UsageError(
            f"{where} cannot be decoded: bitfields have no numpy layout ({', '.join(bitfields)})"
        )
    try:
        top = obj.struct_dtype(struct_name)
    except BpfError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise UsageError(f"{where} cannot be decoded: {reason}") from None
    layout = Layout(btf, itemsize=top.itemsize, tags=btf.decl_tags())
    layout.not_shown += [f"an anonymous member at byte {m.offset}" for m in members if not m.name]
    index = {m.name: i for i, m in enumerate(members)}
    for name in top.names or ():
        fmt, offset = top.fields[name][:2]  # type: ignore[index]
        opaque = fmt.kind == "V"  # a nested struct or union: flattened from the BTF
        i = index[name]
        notes = layout.annotations(struct_id, i, f"{where}: {name}")
        layout.add(name, members[i].type, offset, None if opaque else fmt, notes)
    layout.show_processes()
    if not layout.fields:
        raise UsageError(f"{where} cannot be decoded: none of its members can be shown")
    names = [f.name for f in layout.fields]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"{where}: members would show under the same name: {', '.join(twice)}")
    return layout
