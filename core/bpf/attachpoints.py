"""Does this kernel have what a program attaches to? Asked before load, so that a gadget can
skip a program it can do without (a tracepoint of a newer syscall, a function of a newer
kernel) instead of failing its whole run at attach.

Tracepoints are looked up in tracefs, kernel types and functions in the kernel's BTF (read
through libbpf, once per process).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from igrun.core.errors import BpfError
from igrun.core.log import get_logger

if TYPE_CHECKING:
    from igrun.core.bpf.objects import BpfObject

TRACEFS_EVENTS = (Path("/sys/kernel/tracing/events"), Path("/sys/kernel/debug/tracing/events"))
"""Where tracepoints are listed, in the order libbpf looks."""

_KINDS = {"struct": 4, "union": 5, "enum": 6, "typedef": 8, "func": 12}
"""BTF kinds as the kernel numbers them (:class:`igrun.core.bpf.btf.BtfKind`; that module loads
libbpf, which ``import igrun.core`` does not)."""


def _events() -> Path | None:
    return next((p for p in TRACEFS_EVENTS if p.is_dir()), None)


def _plain(what: str, name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{what}: {name!r} is not a tracepoint name")
    return name


def tracepoint_exists(category: str, name: str) -> bool:
    """Whether tracepoint ``category/name`` (``"syscalls", "sys_enter_fchmodat2"``) exists on
    the running kernel. False too when tracefs is not mounted: nothing could attach to it."""
    events = _events()
    if events is None:
        return False
    return (events / _plain("category", category) / _plain("tracepoint", name)).is_dir()


def raw_tracepoint_exists(name: str) -> bool:
    """Whether a tracepoint ``name`` exists in any category (what ``raw_tp/name`` and
    ``tp_btf/name`` attach to)."""
    events = _events()
    if events is None:
        return False
    pattern = os.path.join(glob.escape(str(events)), "*", glob.escape(_plain("tracepoint", name)))
    return bool(glob.glob(pattern))


def kernel_type_exists(name: str, kind: str = "struct") -> bool:
    """Whether the running kernel's BTF has type ``name`` of ``kind`` (``struct``, ``union``,
    ``enum``, ``typedef`` or ``func``): ``kernel_type_exists("bpf_lsm_file_open", "func")``.
    A kernel without BTF is a :class:`BpfError` (CO-RE objects cannot load there either)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(_KINDS)}, not {kind!r}")
    from igrun.core.bpf.objects import _c_name, lib

    found = lib.igr_kernel_has_type(_c_name("kernel type name", name), _KINDS[kind])
    if found < 0:
        raise BpfError("the kernel's BTF cannot be read (/sys/kernel/btf/vmlinux)", -found)
    return bool(found)


_FUNCTION_SECTIONS = ("fentry/", "fexit/", "fmod_ret/", "fentry.s/", "fexit.s/", "fmod_ret.s/")


def missing_attach_point(section: str) -> str | None:
    """What the program of ELF section ``section`` attaches to, when the running kernel lacks
    it (``tracepoint syscalls/sys_enter_fchmodat2``); None when it is there or when this
    cannot be told before attaching (kprobes, uprobes, sections that name no target)."""
    kind, _, target = section.partition("/")
    if kind in ("tracepoint", "tp"):
        category, _, name = target.partition("/")
        if category and name and "/" not in name and not tracepoint_exists(category, name):
            return f"tracepoint {category}/{name}"
    elif kind in ("raw_tracepoint", "raw_tp", "raw_tracepoint.w", "raw_tp.w", "tp_btf"):
        if target and "/" not in target and not raw_tracepoint_exists(target):
            return f"tracepoint {target}"
    elif section.startswith(_FUNCTION_SECTIONS) and target:
        return None if kernel_type_exists(target, "func") else f"kernel function {target}"
    elif kind in ("lsm", "lsm.s") and target:
        return None if kernel_type_exists(f"bpf_lsm_{target}", "func") else f"LSM hook {target}"
    return None


def skip_missing(obj: BpfObject, programs: Iterable[str] | None = None) -> list[str]:
    """Before load: set autoload off for each of ``programs`` (every program set to load when
    None) whose attach point the kernel lacks, with one debug line (``-v``) each. Returns the
    names of the programs skipped; :meth:`BpfObject.attach_all` then leaves them out."""
    progs = obj.programs
    names = list(progs) if programs is None else list(programs)
    unknown = [n for n in names if n not in progs]
    if unknown:
        raise BpfError(f"{obj.source}: no program {', '.join(unknown)} (has {', '.join(progs)})")
    skipped = []
    for name in names:
        prog = progs[name]
        if not prog.autoload:
            continue
        missing = missing_attach_point(prog.section)
        if missing is None:
            continue
        prog.autoload = False
        skipped.append(name)
        get_logger().debug(f"program {name} skipped: this kernel has no {missing}")
    return skipped
