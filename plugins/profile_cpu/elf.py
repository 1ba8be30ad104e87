"""Reading a binary's function symbols: ``.symtab`` and ``.dynsym`` of a 64-bit ELF file.

pyelftools checks and decodes the ELF header; the program and section header tables and the
symbol tables are then read whole into numpy arrays, one read each, with every offset and size
checked against the file's size: a large binary costs a few reads, and a damaged one is
refused, never trusted (its frames then show ``module+0xoffset``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]

MAX_SYMBOLS = 20_000_000
"""Symbols read from one table at most: a corrupt header cannot make igrun allocate more."""
MAX_TABLE_BYTES = 1 << 30
"""Bytes of one symbol or string table read at most."""
STT_FUNC, STT_GNU_IFUNC = 2, 10
SHN_UNDEF = 0
PF_X = 1


def _sym_dtype(little: bool) -> np.dtype[Any]:
    order = "<" if little else ">"
    return np.dtype(
        [
            ("name", order + "u4"),
            ("info", "u1"),
            ("other", "u1"),
            ("shndx", order + "u2"),
            ("value", order + "u8"),
            ("size", order + "u8"),
        ]
    )


@dataclass
class ElfSymbols:
    """One binary's function symbols, sorted by address, and how file offsets map to them."""

    name: str
    build_id: str
    values: Array = field(default_factory=lambda: np.zeros(0, np.uint64))
    ends: Array = field(default_factory=lambda: np.zeros(0, np.uint64))
    name_offsets: Array = field(default_factory=lambda: np.zeros(0, np.int64))
    strtabs: list[bytes] = field(default_factory=list)
    table_of: Array = field(default_factory=lambda: np.zeros(0, np.int64))
    loads: list[tuple[int, int, int]] = field(default_factory=list)
    """Executable ``PT_LOAD`` segments: ``(file offset, virtual address, file size)``."""

    def vaddrs(self, offsets: Array) -> Array:
        """File offsets as the addresses the symbols use (the segment containing each)."""
        out = offsets.astype(np.uint64).copy()
        for off, vaddr, size in self.loads:
            inside = (offsets >= off) & (offsets < off + size)
            out[inside] = offsets[inside] - np.uint64(off) + np.uint64(vaddr)
        return out

    def names(self, offsets: Array) -> list[str | None]:
        """The function containing each file offset, or None (each symbol decoded once)."""
        if not len(self.values):
            return [None] * len(offsets)
        addrs = self.vaddrs(offsets)
        idx = np.searchsorted(self.values, addrs, side="right") - 1
        ok = (idx >= 0) & (addrs < self.ends[np.maximum(idx, 0)])
        uniq, inverse = np.unique(np.where(ok, idx, -1), return_inverse=True)
        table = [self._name(i) if i >= 0 else None for i in uniq.tolist()]
        return [table[j] for j in inverse.reshape(-1).tolist()]

    def _name(self, i: int) -> str | None:
        table = self.strtabs[int(self.table_of[i])]
        start = int(self.name_offsets[i])
        if start >= len(table):
            return None
        end = table.find(b"\0", start)
        return table[start : end if end >= 0 else len(table)].decode("utf-8", "replace")


def _shdr_dtype(order: str) -> np.dtype[Any]:
    return np.dtype(
        [("name", order + "u4"), ("type", order + "u4"), ("flags", order + "u8"),
         ("addr", order + "u8"), ("offset", order + "u8"), ("size", order + "u8"),
         ("link", order + "u4"), ("info", order + "u4"), ("addralign", order + "u8"),
         ("entsize", order + "u8")]
    )  # fmt: skip


def _phdr_dtype(order: str) -> np.dtype[Any]:
    return np.dtype(
        [("type", order + "u4"), ("flags", order + "u4"), ("offset", order + "u8"),
         ("vaddr", order + "u8"), ("paddr", order + "u8"), ("filesz", order + "u8"),
         ("memsz", order + "u8"), ("align", order + "u8")]
    )  # fmt: skip


SHT_SYMTAB, SHT_DYNSYM = 2, 11
PT_LOAD, PT_NOTE = 1, 4
NT_GNU_BUILD_ID = 3
MAX_NOTES_BYTES = 1 << 16


def read_elf_symbols(fd: int, label: str) -> ElfSymbols | None:
    """The function symbols of ``.symtab`` and ``.dynsym`` of the ELF file open at ``fd``, or
    None when it is no 64-bit ELF file igrun can read (not ELF, truncated, a header that
    points outside the file): its frames then show ``module+offset``.

    pyelftools checks and decodes the ELF header; the section and program header tables and
    the symbol tables are read whole into numpy arrays (one read each, every offset and size
    checked against the file's size), which is what keeps a large binary cheap."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        size = os.fstat(fd).st_size
        with os.fdopen(os.dup(fd), "rb") as f:
            elf = ELFFile(f)
            if elf.elfclass != 64:
                return None  # 32-bit binaries: their frames show module+offset
            return _read(f, elf.header, "<" if elf.little_endian else ">", size, label)
    except (OSError, ELFError, ValueError, KeyError, IndexError):
        return None


def _table(f: Any, offset: int, count: int, entsize: int, dtype: np.dtype[Any], size: int) -> Array:
    """``count`` records of ``dtype`` at ``offset``, after checking they are in the file."""
    if entsize != dtype.itemsize or count < 0 or offset < 0 or offset + count * entsize > size:
        raise ValueError("ELF table outside the file")
    f.seek(offset)
    data = f.read(count * entsize)
    if len(data) != count * entsize:
        raise ValueError("short read")
    return np.frombuffer(data, dtype)


def _chunk(f: Any, offset: int, length: int, size: int, limit: int = MAX_TABLE_BYTES) -> bytes:
    if offset < 0 or length < 0 or length > limit or offset + length > size:
        raise ValueError("ELF section outside the file")
    f.seek(offset)
    data = bytes(f.read(length))
    if len(data) != length:
        raise ValueError("short read")
    return data


def _build_id(notes: bytes, order: str) -> str:
    """The GNU build id among the notes of one ``PT_NOTE`` segment (4-byte aligned)."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = np.frombuffer(notes, order + "u4", 3, pos).tolist()
        name_at = pos + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if end > len(notes):
            return ""
        if kind == NT_GNU_BUILD_ID and notes[name_at : name_at + namesz] == b"GNU\0":
            return notes[desc_at : desc_at + descsz].hex()
        pos = end
    return ""


def _read(f: Any, header: Any, order: str, size: int, label: str) -> ElfSymbols:
    phdrs = _table(
        f, header["e_phoff"], header["e_phnum"], header["e_phentsize"], _phdr_dtype(order), size
    )
    loads = [
        (int(p["offset"]), int(p["vaddr"]), int(p["filesz"]))
        for p in phdrs[(phdrs["type"] == PT_LOAD) & ((phdrs["flags"] & PF_X) != 0)]
    ]
    build_id = ""
    for p in phdrs[phdrs["type"] == PT_NOTE]:
        length = min(int(p["filesz"]), MAX_NOTES_BYTES)
        build_id = _build_id(_chunk(f, int(p["offset"]), length, size), order)
        if build_id:
            break
    shdrs = _table(
        f, header["e_shoff"], header["e_shnum"], header["e_shentsize"], _shdr_dtype(order), size
    )
    dtype = _sym_dtype(order == "<")
    values, sizes, names, tables, strtabs = [], [], [], [], []
    for sec in shdrs[(shdrs["type"] == SHT_SYMTAB) | (shdrs["type"] == SHT_DYNSYM)]:
        link = int(sec["link"])
        if not 0 < link < len(shdrs) or int(sec["entsize"]) not in (0, dtype.itemsize):
            continue
        count = int(sec["size"]) // dtype.itemsize
        if count > MAX_SYMBOLS:
            continue
        syms = _table(f, int(sec["offset"]), count, dtype.itemsize, dtype, size)
        kind = syms["info"] & 0xF
        keep = (
            ((kind == STT_FUNC) | (kind == STT_GNU_IFUNC))
            & (syms["shndx"] != SHN_UNDEF)
            & (syms["value"] != 0)
        )
        strtab = shdrs[link]
        strtabs.append(_chunk(f, int(strtab["offset"]), int(strtab["size"]), size))
        values.append(syms["value"][keep].astype(np.uint64))
        sizes.append(syms["size"][keep].astype(np.uint64))
        names.append(syms["name"][keep].astype(np.int64))
        tables.append(np.full(int(keep.sum()), len(strtabs) - 1, np.int64))
    out = ElfSymbols(label, build_id, loads=loads, strtabs=strtabs)
    if values:
        v = np.concatenate(values)
        order_ = np.argsort(v, kind="stable")
        v = v[order_]
        s = np.concatenate(sizes)[order_]
        # A symbol with no size reaches the next one (hand-written assembly, some stubs).
        nxt = np.append(v[1:], np.uint64(np.iinfo(np.uint64).max))
        out.values = v
        out.ends = np.where(s > 0, v + s, np.maximum(nxt, v + np.uint64(1)))
        out.name_offsets = np.concatenate(names)[order_]
        out.table_of = np.concatenate(tables)[order_]
    return out
