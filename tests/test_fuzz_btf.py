"""Fuzzing the decoder that igrun derives from BTF: random C structs (every integer width and
sign, typedef chains, enums, pointers, floats, arrays of one and two dimensions, char arrays,
nested and anonymous structs and unions, aligned members, packed structs, flexible arrays at
the end), compiled by clang into a BPF object. ``BpfObject.struct_dtype`` must give what the
compiler laid out: clang itself checks every offset and size the dtype claims
(``_Static_assert`` on ``offsetof``/``sizeof`` in a second translation unit), and records
decoded through a bound :class:`Schema` must give each integer member's bytes read at clang's
offset with the member's sign."""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzlab import fuzz_settings
from hypothesis import event, given
from hypothesis import strategies as st

from igrun.core.bpf.btf import ObjectBtf
from igrun.core.bpf.objects import BpfError, BpfObject
from igrun.core.errors import UsageError
from igrun.core.events.schema import Field, Kind, Schema
from igrun.core.objectrun.layout import event_layout

FUZZ = fuzz_settings(30)
CLANG = os.environ.get("IGRUN_CLANG", "clang")

PRELUDE = """
typedef unsigned char u8_t;
typedef signed char s8_t;
typedef unsigned short u16_t;
typedef short s16_t;
typedef unsigned int u32_t;
typedef int s32_t;
typedef unsigned long long u64_t;
typedef long long s64_t;
typedef u32_t u32_alias_t;
typedef const volatile s16_t s16_cv_t;
enum small { SMALL_A, SMALL_B = 7 };
enum wide { WIDE_A = 1, WIDE_B = 0x7fffffff };
"""


@dataclass(frozen=True)
class Scalar:
    """A C type that is one value: its spelling, size and, for integers, sign."""

    c: str
    size: int
    signed: bool | None  # None: not an integer (pointer, float)


# Signedness of char on the BPF target is checked by clang too (plain char is signed there).
SCALARS = [
    Scalar("char", 1, True),
    Scalar("signed char", 1, True),
    Scalar("unsigned char", 1, False),
    Scalar("_Bool", 1, False),
    Scalar("short", 2, True),
    Scalar("unsigned short", 2, False),
    Scalar("int", 4, True),
    Scalar("unsigned int", 4, False),
    Scalar("long", 8, True),
    Scalar("unsigned long", 8, False),
    Scalar("long long", 8, True),
    Scalar("unsigned long long", 8, False),
    Scalar("u8_t", 1, False),
    Scalar("s8_t", 1, True),
    Scalar("u16_t", 2, False),
    Scalar("s16_t", 2, True),
    Scalar("s16_cv_t", 2, True),
    Scalar("u32_t", 4, False),
    Scalar("u32_alias_t", 4, False),
    Scalar("s32_t", 4, True),
    Scalar("u64_t", 8, False),
    Scalar("s64_t", 8, True),
    Scalar("enum small", 4, False),
    Scalar("enum wide", 4, False),
    Scalar("void *", 8, None),
    Scalar("struct ev *", 8, None),
    Scalar("float", 4, None),
    Scalar("double", 8, None),
]


@dataclass
class Member:
    """One member of the struct under test, as declared and as the test checks it."""

    name: str | None  # None: an anonymous struct or union
    decl: str  # the whole declaration, without the ';'
    scalar: Scalar | None = None  # an integer or other one-value member
    dims: tuple[int, ...] = ()  # array dimensions
    flexible: bool = False  # a flexible array member (declared [] at the end)
    bitfield: bool = False


@dataclass
class Layout:
    """The struct under test and the types it uses."""

    types: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    packed: bool = False

    def source(self) -> str:
        body = "".join(f"\t{m.decl};\n" for m in self.members)
        attr = " __attribute__((packed))" if self.packed else ""
        return (
            PRELUDE
            + "".join(self.types)
            + f"struct ev {{\n{body}}}{attr};\n"
            + "struct ev *igrun_fuzz_event __attribute__((unused));\n"
        )


@st.composite
def nested_type(draw: st.DrawFn, layout: Layout, depth: int) -> str:
    """A struct or union type defined before ``struct ev``; its name."""
    keyword = draw(st.sampled_from(["struct", "union"]))
    inner = []
    for i in range(draw(st.integers(1, 4))):
        if depth < 2 and draw(st.integers(0, 4)) == 0:
            ctype = draw(nested_type(layout, depth + 1))
        else:
            ctype = draw(st.sampled_from(SCALARS)).c
        suffix = "".join(f"[{n}]" for n in draw(st.lists(st.integers(1, 3), max_size=2)))
        inner.append(f"\t{ctype} f{i}{suffix};\n")
    packed = " __attribute__((packed))" if draw(st.integers(0, 5)) == 0 else ""
    name = f"t{len(layout.types)}"  # after the types nested in it took theirs
    layout.types.append(f"{keyword} {name} {{\n{''.join(inner)}}}{packed};\n")
    return f"{keyword} {name}"


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    layout = Layout(packed=draw(st.integers(0, 5)) == 0)
    count = draw(st.integers(1, 10))
    for i in range(count):
        name = f"m{i}"
        shape = draw(st.integers(0, 19))
        aligned = ""
        if draw(st.integers(0, 7)) == 0:
            aligned = f" __attribute__((aligned({draw(st.sampled_from([1, 2, 4, 8, 16]))})))"
        if shape < 9:
            s = draw(st.sampled_from(SCALARS))
            member = Member(name, f"{s.c} {name}{aligned}", scalar=s)
        elif shape < 12:
            s = draw(st.sampled_from(SCALARS))
            dims = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=2)))
            text = "".join(f"[{n}]" for n in dims)
            member = Member(name, f"{s.c} {name}{text}{aligned}", scalar=s, dims=dims)
        elif shape < 14:
            n = draw(st.integers(1, 40))
            s = draw(st.sampled_from([x for x in SCALARS if x.size == 1 and x.c != "_Bool"]))
            member = Member(name, f"{s.c} {name}[{n}]{aligned}", scalar=s, dims=(n,))
        elif shape < 17:
            member = Member(name, f"{draw(nested_type(layout, 0))} {name}{aligned}")
        elif shape < 19:
            keyword = draw(st.sampled_from(["struct", "union"]))
            parts = "".join(
                f"{draw(st.sampled_from(SCALARS)).c} a{i}_{j}; "
                for j in range(draw(st.integers(1, 3)))
            )
            member = Member(None, f"{keyword} {{ {parts}}}")
        else:
            width = draw(st.integers(1, 7))
            member = Member(name, f"unsigned int {name} : {width}", bitfield=True)
        layout.members.append(member)
    if draw(st.integers(0, 4)) == 0:  # a flexible array last, as event structs end in data
        s = draw(st.sampled_from([x for x in SCALARS if x.signed is not None]))
        size = draw(st.sampled_from(["", "0"]))
        layout.members.append(
            Member("tail", f"{s.c} tail[{size}]", scalar=s, dims=(0,), flexible=True)
        )
    return layout


def compile_to(source: str, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    c = path.with_suffix(".c")
    c.write_text(source)
    return subprocess.run(
        [CLANG, "-g", "-O2", "-target", "bpf", "-Wno-everything", *flags, "-c", str(c),
         "-o", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def clang_checks(layout: Layout, dtype: np.dtype[Any]) -> str:
    """C asserting each offset and size ``dtype`` claims, and each integer's sign."""

    def check(claim: str, what: str) -> str:
        return f'_Static_assert({claim}, "{what}");'

    lines = [check(f"sizeof(struct ev) == {dtype.itemsize}", "struct size")]
    for m in layout.members:
        if m.name is None or m.name not in (dtype.names or ()):
            continue
        member, offset = dtype.fields[m.name][:2]  # type: ignore[index]
        ref = f"((struct ev *)0)->{m.name}"
        lines.append(
            check(f"__builtin_offsetof(struct ev, {m.name}) == {offset}", f"offset of {m.name}")
        )
        if not m.flexible:
            lines.append(check(f"sizeof({ref}) == {member.itemsize}", f"size of {m.name}"))
        if m.scalar is not None and m.scalar.signed is not None and len(m.dims) <= 1:
            elem = f"{ref}[0]" if m.dims else ref
            kind = member.base.kind if member.shape else member.kind
            if kind in "iu":
                signed = int(kind == "i")
                claim = f"((__typeof__({elem}))-1 < 0) == {signed}"
                lines.append(check(claim, f"sign of {m.name}"))
    return layout.source() + "\n".join(lines) + "\n"


@FUZZ
@given(layout=layouts(), data=st.data())
def test_struct_dtype_is_the_layout_clang_made(layout: Layout, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "ev.bpf.o"
        built = compile_to(layout.source(), obj)
        assert built.returncode == 0, built.stderr + layout.source()
        with BpfObject.open(obj) as bpf:
            if any(m.bitfield for m in layout.members):
                with pytest.raises(BpfError, match="struct ev"):
                    bpf.struct_dtype("ev")
                return
            dtype = bpf.struct_dtype("ev")
        named = [m.name for m in layout.members if m.name is not None]
        assert list(dtype.names or ()) == named  # anonymous members: left out, nothing else
        for m in layout.members:
            if m.name is None:
                continue
            member = dtype.fields[m.name][0]  # type: ignore[index]
            if m.scalar is not None and m.scalar.size == 1 and len(m.dims) == 1:
                if m.scalar.signed is not None and m.scalar.c != "_Bool":
                    assert member == np.dtype(f"S{m.dims[0]}")  # char arrays are text
            elif m.scalar is not None and m.scalar.signed is not None and not m.dims:
                assert member.kind == ("i" if m.scalar.signed else "u")
                assert member.itemsize == m.scalar.size
        checked = compile_to(clang_checks(layout, dtype), Path(tmp) / "check.o", "-fsyntax-only")
        assert checked.returncode == 0, checked.stderr
        decoded_integers_match(layout, dtype, data)


def decoded_integers_match(layout: Layout, dtype: np.dtype[Any], data: st.DataObject) -> None:
    """Records of random bytes decoded through a Schema bound to ``dtype``: each integer
    member is its bytes at clang's offset (checked above), read little-endian with its sign."""
    ints = [
        m for m in layout.members
        if m.name and m.scalar and m.scalar.signed is not None and not m.dims
    ]  # fmt: skip
    if not ints or dtype.itemsize == 0:
        return
    count = data.draw(st.integers(1, 4))
    blob = data.draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    fields = [Field(m.name, Kind.INT if m.scalar.signed else Kind.UINT) for m in ints]  # type: ignore[union-attr,arg-type]
    batch = Schema(fields, "ev").bind(dtype).decode(blob)
    for m in ints:
        assert m.name is not None and m.scalar is not None
        offset = dtype.fields[m.name][1]  # type: ignore[index]
        want = [
            int.from_bytes(
                blob[i * dtype.itemsize + offset : i * dtype.itemsize + offset + m.scalar.size],
                "little",
                signed=m.scalar.signed,  # type: ignore[arg-type]
            )
            for i in range(count)
        ]
        assert batch[m.name].tolist() == want, m.decl


@FUZZ
@given(layout=layouts(), data=st.data())
def test_igrun_run_flattens_to_the_layout_clang_made(layout: Layout, data: st.DataObject) -> None:
    """``igrun run`` reads the event struct from the object's BTF (through libbpf) and flattens
    nested structs (``m3.f1``): every member it shows is where clang put it, with its size and
    sign, and decodes to its bytes there; what it cannot show is one clear UsageError line."""
    with tempfile.TemporaryDirectory() as tmp:
        obj = Path(tmp) / "ev.bpf.o"
        built = compile_to(layout.source(), obj)
        assert built.returncode == 0, built.stderr + layout.source()
        with BpfObject.open(obj) as bpf:
            try:
                flat = event_layout(bpf, ObjectBtf(bpf), "ev")
            except UsageError as exc:
                event("refused")
                assert "\n" not in str(exc)
                assert any(m.bitfield for m in layout.members) or "cannot be decoded" in str(exc), (
                    exc
                )
                return
        assert not any(m.bitfield for m in layout.members)
        dtype = flat.dtype()
        event(f"nested members shown: {any('.' in n for n in dtype.names or ())}")
        checks = []
        for name in dtype.names or ():
            member, offset = dtype.fields[name][:2]  # type: ignore[index]
            ref = f"((struct ev *)0)->{name}"
            checks.append(f'_Static_assert(__builtin_offsetof(struct ev, {name}) == {offset}, "");')
            if member.itemsize:  # not a flexible array
                checks.append(f'_Static_assert(sizeof({ref}) == {member.itemsize}, "");')
        ints = [
            f for f in flat.fields
            if f.kind in (Kind.INT, Kind.UINT) and f.decode is None
            and not f.description.endswith("(pointer)")
        ]  # fmt: skip
        for f in ints:
            signed = int(f.kind is Kind.INT)
            ref = f"((struct ev *)0)->{f.source}"
            checks.append(f'_Static_assert(((__typeof__({ref}))-1 < 0) == {signed}, "");')
        source = layout.source() + "\n".join(checks) + "\n"
        checked = compile_to(source, Path(tmp) / "check.o", "-fsyntax-only")
        assert checked.returncode == 0, checked.stderr
    if not ints or dtype.itemsize == 0:
        return
    count = data.draw(st.integers(1, 3))
    blob = data.draw(st.binary(min_size=count * dtype.itemsize, max_size=count * dtype.itemsize))
    batch = Schema(flat.fields).bind(dtype).decode(blob)
    for f in ints:
        member, offset = dtype.fields[f.source][:2]  # type: ignore[index]
        want = [
            int.from_bytes(
                blob[i * dtype.itemsize + offset : i * dtype.itemsize + offset + member.itemsize],
                "little",
                signed=f.kind is Kind.INT,
            )
            for i in range(count)
        ]
        assert batch[f.name].tolist() == want, f.name
