"""A gadget made at run time from a compiled CO-RE object that no Python describes.

Inspektor Gadget's image-based gadgets need no Go per gadget: the object declares what it
produces and the framework does the rest. The same holds here. The object says, in globals
that ``igrun/macros.h`` makes (so they sit in its BTF), which struct its events have and where
they come from: ``GADGET_TRACER(name, map, struct)`` for a ring or perf buffer,
``GADGET_SNAPSHOTTER(name, struct, program)`` for an iterator read once, and
``GADGET_PARAM(var)`` for each ``const volatile`` global that should be a flag. From that and
the struct's BTF (:mod:`igrun.core.objectrun.layout`, :mod:`igrun.core.objectrun.params`) this
module
builds a gadget class (subclassing :mod:`igrun.core.objectrun.gadgets`), which the CLI's usual
parser and runtime run (``igrun run``, :mod:`igrun.core.cli.run`), so the operators
(containers, filter, sort, limit, output) work as for any gadget.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from igrun.core.bpf.btf import BtfError, ObjectBtf
from igrun.core.bpf.mntnsfilter import FILTER_BY_MNTNS
from igrun.core.bpf.objects import BpfObject, MapType, _c_name, lib
from igrun.core.errors import BpfError, UsageError
from igrun.core.events.schema import Field, Schema
from igrun.core.files import OBJECT_LIMIT, FileRefused, read_bytes
from igrun.core.gadget import Gadget
from igrun.core.objectrun.gadgets import (
    PARAM_BUFFER_MAP,
    PARAM_HOST,
    PARAM_PROGRAMS,
    ObjectSnapshot,
    ObjectTracer,
)
from igrun.core.objectrun.layout import event_layout
from igrun.core.objectrun.params import object_params
from igrun.core.params import ParamDesc, TypeHint

TRACER_PREFIX = "gadget_tracer_"
SNAPSHOTTER_PREFIX = "gadget_snapshotter_"
SEPARATOR = "___"
EM_BPF = 247
PROBE_TIMEOUT_S = 10
_ELF64_CLASS = 2


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


def check_file(path: Path) -> None:
    """Say what ``path`` is when it is not a BPF object, before libbpf tries it: only the
    ELF identification and machine (20 bytes) are read here; libbpf reads the rest."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a BPF object")
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    try:
        head = read_bytes(path, OBJECT_LIMIT)[:20]
    except FileRefused as exc:
        raise UsageError(f"{path}: cannot read it: {exc}") from None
    if head[:4] != b"\x7fELF":
        raise UsageError(f"{path}: not an ELF file: expected a compiled BPF object")
    machine = int.from_bytes(head[18:20], "little" if head[5:6] == b"\x01" else "big")
    if len(head) < 20 or head[4] != _ELF64_CLASS or machine != EM_BPF:
        raise UsageError(
            f"{path}: an ELF file for another machine, not a BPF object "
            "(compile it with clang -target bpf)"
        )


def probe_open(path: Path) -> None:
    """Have libbpf open ``path`` in a child process first: libbpf 1.1 can crash on damaged
    BTF (its map definitions), and a user's file must cost one line, not this process."""
    result = lib.igr_probe_open(_c_name("BPF object path", os.fspath(path)), PROBE_TIMEOUT_S)
    if result == -errno.EFAULT:
        raise UsageError(f"{path}: a damaged BPF object: libbpf crashed reading it")
    if result == -errno.ETIMEDOUT:
        raise UsageError(f"{path}: a damaged BPF object: libbpf did not finish reading it")
    # Anything else, a refusal included, is said by the open that follows, in libbpf's words.


# ---- making the class ---------------------------------------------------------------------


def choose(found: list[Declaration], path: Path, buffer_map: str | None) -> Declaration:
    """The declaration to run: the only one, or the tracer reading ``--buffer-map``."""
    if not found:
        raise UsageError(
            f"{path}: declares no GADGET_TRACER nor GADGET_SNAPSHOTTER (igrun/macros.h): "
            "nothing to run"
        )
    names = ", ".join(
        f"{d.kind} {d.name} (map {d.source})" if d.kind == "tracer" else f"{d.kind} {d.name}"
        for d in found
    )
    if buffer_map:
        chosen = [d for d in found if d.kind == "tracer" and d.source == buffer_map]
        if not chosen:
            raise UsageError(f"--{PARAM_BUFFER_MAP}: no tracer of {path} reads {buffer_map!r} "
                             f"(it declares {names})")  # fmt: skip
        return chosen[0]
    if len(found) > 1:
        raise UsageError(
            f"{path}: declares several gadgets ({names}); choose one with --{PARAM_BUFFER_MAP}"
        )
    return found[0]


def gadget_from_object(path: Path, buffer_map: str | None = None) -> type[Gadget]:
    """A gadget class for the object at ``path``, from what it declares (the tracer reading
    ``buffer_map`` when it declares several). Bad objects are a one-line :class:`UsageError`."""
    check_file(path)
    probe_open(path)
    try:
        obj = BpfObject.open(path)
    except BpfError as exc:
        raise UsageError(str(exc)) from None
    with obj:
        try:
            btf = ObjectBtf(obj)
        except BtfError:
            raise UsageError(f"{path}: has no BTF (compile it with clang -g)") from None
        globals_ = obj.global_names()
        decl = choose(declarations(globals_), path, buffer_map)
        _check_source(obj, decl)
        try:
            layout = event_layout(obj, btf, decl.struct)
            params = object_params(obj, btf, globals_, path)
        except (BtfError, RecursionError) as exc:
            # The kernel rejects such BTF at load; this is before load, so say it here.
            raise UsageError(f"{path}: its BTF cannot be read ({exc})") from None
        programs = [n for n, p in obj.programs.items() if not p.is_iterator]
    description = f"{path.name}: {decl.kind} {decl.name}, events of struct {decl.struct}"
    if layout.not_shown:
        description += f" (not shown: {', '.join(layout.not_shown)})"
    has_mntns = any("mntns" in f.tags for f in layout.fields)
    own = [
        ParamDesc(PARAM_PROGRAMS, type_hint=TypeHint.STRING_LIST,
                  description="load only these programs (default: all; "
                  f"{', '.join(programs) or 'none'})"),
        ParamDesc(PARAM_BUFFER_MAP, description="the buffer to read when the object declares "
                  "several tracers", default=buffer_map or ""),
    ]  # fmt: skip
    note = ""
    if not has_mntns:
        note = (
            f"struct {decl.struct} has no mount namespace member (gadget_mntns_id): every "
            "event is shown; a container selection cannot filter them"
        )
        own.append(
            ParamDesc(PARAM_HOST, type_hint=TypeHint.BOOL, default="false",
                      description=f"show events of the host too (always: {note})")
        )  # fmt: skip
    clash = [p.var for p in params if p.var in (PARAM_PROGRAMS, PARAM_BUFFER_MAP, PARAM_HOST)]
    if clash:
        raise UsageError(f"{path}: GADGET_PARAM({clash[0]}) clashes with igrun run's own flag")
    attrs: dict[str, Any] = {
        "name": decl.name,
        "description": description,
        "path": path,
        "layout": layout.dtype(),
        "object_params": tuple(params),
        "params": (*(p.desc() for p in params), *own),
        "kernel_filter": FILTER_BY_MNTNS in globals_,
        "no_mntns_note": note,
        "schema": Schema(layout.fields),
        "examples": _examples(path, layout.fields),
    }
    if decl.kind == "tracer":
        attrs["buffer_map"] = decl.source
        return cast(type[Gadget], type(f"RunTracer_{decl.name}", (ObjectTracer,), attrs))
    attrs["program"] = decl.source
    attrs["iterators"] = (decl.source,)
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
