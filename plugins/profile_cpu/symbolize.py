"""Naming sampled instruction addresses: kernel ones from ``/proc/kallsyms``, user ones from
the ELF symbols of the binary mapped at that address in that process.

Everything works on arrays: the distinct addresses of a process are found once
(``np.unique``), matched to their mapping and then to their symbol with ``searchsorted``.
Binaries are opened through ``/proc/<pid>/root`` (so a container's own files are read, not
the host's of the same name) and their symbol tables are kept once per build id (or file,
when there is none). A process is looked at while it still runs (:meth:`Symbolizer.remember`),
so one that exits before the profile ends is still named. An address that cannot be named
becomes ``module+0xoffset`` (``[unknown]+0xaddress`` outside any mapping): a frame never
vanishes.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Any

import numpy as np

from igrun.plugins.profile_cpu.elf import Array, ElfSymbols, read_elf_symbols

__all__ = ["ElfSymbols", "KernelSymbols", "Symbolizer", "read_elf_symbols"]


_KALLSYMS_TEXT = re.compile(rb"^([0-9a-fA-F]+) [tTwW] ([^\s]+)", re.MULTILINE)
"""A text symbol's line of /proc/kallsyms: address, type, name (then maybe [module])."""


UNKNOWN_MODULE = "[unknown]"
"""The module of a user address outside every mapping known."""


class KernelSymbols:
    """``/proc/kallsyms``' text symbols, sorted: read once, on the first kernel frame."""

    def __init__(self, path: str = "/proc/kallsyms") -> None:
        with open(path, "rb") as f:
            data = f.read()
        # One pass in C over the whole file; names are decoded only when a frame needs one.
        found = _KALLSYMS_TEXT.findall(data)
        hexes = [a for a, _ in found]
        joined = b"".join(hexes)
        if len(joined) == 16 * len(hexes):  # 64-bit: every address has 16 digits
            addrs = np.frombuffer(bytes.fromhex(joined.decode()), ">u8").astype(np.uint64)
        else:  # 32-bit kernels, or a file that is not the usual shape
            addrs = np.array([int(h, 16) for h in hexes], np.uint64)
        order = np.argsort(addrs, kind="stable")
        self.addrs = addrs[order]
        names = np.empty(len(found), dtype=object)
        names[:] = [n for _, n in found]
        self.names = names[order]
        self.hidden = not len(self.addrs) or not self.addrs.any()
        """Addresses all zero (kptr_restrict, not root): nothing can be named."""

    def lookup(self, ips: Array) -> Array:
        """Names of kernel addresses (``[kernel]+0xaddress`` below the first symbol)."""
        out = np.empty(len(ips), dtype=object)
        if self.hidden:
            out[:] = [f"[kernel]+0x{ip:x}" for ip in ips.tolist()]
            return out
        idx = np.searchsorted(self.addrs, ips, side="right") - 1
        ok = idx >= 0
        uniq, inverse = np.unique(idx[ok], return_inverse=True)
        decoded = np.empty(len(uniq), dtype=object)
        decoded[:] = [n.decode("utf-8", "replace") for n in self.names[uniq].tolist()]
        out[ok] = decoded[inverse.reshape(-1)]
        out[~ok] = [f"[kernel]+0x{ip:x}" for ip in ips[~ok].tolist()]
        return out


@dataclass
class ProcessMaps:
    """A process's executable mappings, as seen while it ran."""

    starts: Array
    ends: Array
    offsets: Array
    modules: list[tuple[str, FileKey | None]]
    """Per mapping: its module's short name and file (None: no file, or it could not be
    opened)."""


FileKey = tuple[int, int, int, int]
"""A binary: device, inode, size and modification time."""
MAX_OPEN_FILES = 4096
"""Binaries held open at most (each one open once, however many processes map it)."""


_EXEC_MAPPING = re.compile(
    rb"^([0-9a-f]+)-([0-9a-f]+) ..x. ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+)[ \t]*(.*)$",
    re.MULTILINE,
)
"""An executable mapping's line of /proc/<pid>/maps: bounds, offset, device, inode, path."""


def _read_maps(pid: int, proc: str) -> list[tuple[int, int, int, str, str, int, str]]:
    """The executable mappings of a process (one regex pass over its maps file):
    start, end, file offset, path, the ``map_files`` name, inode and device."""
    with open(f"{proc}/{pid}/maps", "rb") as f:
        data = f.read()
    out = []
    for low, high, offset, device, inode, raw in _EXEC_MAPPING.findall(data):
        start, end = int(low, 16), int(high, 16)
        path = raw.decode("utf-8", "replace").strip()
        path = path.removesuffix(" (deleted)")  # still mapped: read through map_files
        # map_files names a mapping by its bounds in hex without leading zeros.
        out.append(
            (start, end, int(offset, 16), path, f"{start:x}-{end:x}", int(inode), device.decode())
        )
    return out


class Symbolizer:
    """Names for the frames of many stacks at once; keeps what it learns for the next run."""

    def __init__(self, proc: str = "/proc", kallsyms: str = "/proc/kallsyms") -> None:
        self.proc = proc
        self.kallsyms_path = kallsyms
        self._kernel: KernelSymbols | None = None
        self._procs: dict[int, ProcessMaps | None] = {}
        self._files: dict[FileKey, int] = {}
        self._by_mapping: dict[tuple[str, int], FileKey] = {}
        self._labels: dict[FileKey, str] = {}
        self._by_file: dict[FileKey, ElfSymbols | None] = {}
        self._by_build_id: dict[str, ElfSymbols] = {}
        self._seen: set[tuple[int, Any]] = set()
        self._refreshed: set[int] = set()

    @property
    def kernel(self) -> KernelSymbols:
        if self._kernel is None:
            self._kernel = KernelSymbols(self.kallsyms_path)
        return self._kernel

    def kernel_names(self, ips: Array) -> Array:
        uniq, inverse = np.unique(ips.astype(np.uint64), return_inverse=True)
        return self.kernel.lookup(uniq)[inverse.reshape(-1)]

    def remember(self, pids: Any, comms: Any = None) -> None:
        """Read the mappings (and binaries) of processes not seen yet, while they run. With
        ``comms``, a process seen under a new name has exec'd something else since: it is
        read again (a sample taken between fork and exec must not fix the wrong binary)."""
        names = comms if comms is not None else [None] * len(pids)
        stale = set()
        for pid, comm in zip(pids, names, strict=True):
            pid = int(pid)
            if pid not in self._procs or (comm is not None and (pid, comm) not in self._seen):
                stale.add(pid)
            if comm is not None:
                self._seen.add((pid, comm))
        for pid in stale:  # once each: the mappings now are those of its latest exec
            fresh = self._load_process(pid)
            if fresh is not None or pid not in self._procs:
                self._procs[pid] = fresh  # a process gone meanwhile keeps what was read

    def _refresh(self, pid: int) -> ProcessMaps | None:
        """The mappings read again, once, for addresses outside all those known (the
        process mapped something since, or exec'd)."""
        if pid in self._refreshed:
            return self._procs.get(pid)
        self._refreshed.add(pid)
        fresh = self._load_process(pid)
        if fresh is not None:
            self._procs[pid] = fresh
        return self._procs.get(pid)

    def _load_process(self, pid: int) -> ProcessMaps | None:
        try:
            maps = _read_maps(pid, self.proc)
        except OSError:
            return None  # gone already: its frames show addresses
        modules = []
        for _, _, _, path, rng, inode, device in maps:
            label = os.path.basename(path) or "[anon]"
            # A file already open for another process (same device and inode as the kernel
            # names them): no syscall; most processes of a host map the same few libraries.
            known = self._by_mapping.get((device, inode)) if inode else None
            if known is None:
                known = self._module(pid, path, rng, inode)
                if known is not None and inode:
                    self._by_mapping[(device, inode)] = known
            modules.append((label, known))
        return ProcessMaps(
            np.array([m[0] for m in maps], np.uint64),
            np.array([m[1] for m in maps], np.uint64),
            np.array([m[2] for m in maps], np.uint64),
            modules,
        )

    def _module(self, pid: int, path: str, rng: str, inode: int = 0) -> FileKey | None:
        """Open the binary of a mapping now, while the process runs, and keep it open: its
        symbols are read only if a sample falls in it, maybe after the process (or its
        container) is gone."""
        if not path.startswith("/"):
            return None  # [vdso], [anon], a JIT's memory: no file to read
        # The process's own view of its files (a container's root); when the file there is
        # not the one mapped (replaced, deleted), the mapping itself.
        doubtful = None
        for candidate in (f"{self.proc}/{pid}/root{path}", f"{self.proc}/{pid}/map_files/{rng}"):
            key = self._open(candidate, path)
            if key is None:
                continue
            if not inode or key[1] == inode or candidate.endswith(rng):
                return key
            doubtful = key  # overlay file systems may show other inode numbers: keep it
        return doubtful

    def _open(self, candidate: str, path: str) -> FileKey | None:
        """The key of the regular file at ``candidate``, held open (once per file)."""
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in self._files or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return key if key in self._files else None
        if len(self._files) >= MAX_OPEN_FILES:
            os.close(fd)
            return None
        self._files[key] = fd
        self._labels[key] = os.path.basename(path)
        return key

    def symbols(self, key: FileKey | None) -> ElfSymbols | None:
        """A binary's symbols, read on first use and kept by build id."""
        if key is None:
            return None
        if key not in self._by_file:
            fd = self._files.get(key)
            if fd is None:
                return None  # closed (the run has ended) before anything needed it
            syms = read_elf_symbols(fd, self._labels[key])
            if syms is not None and syms.build_id:
                syms = self._by_build_id.setdefault(syms.build_id, syms)
            self._by_file[key] = syms
        return self._by_file[key]

    def close(self) -> None:
        """Close the binaries held open (what was read from them stays)."""
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()

    @staticmethod
    def _mapping_of(maps: ProcessMaps, addrs: Array) -> Array:
        """The index of the mapping holding each address, -1 for none."""
        if not len(maps.starts):
            return np.full(len(addrs), -1, np.int64)
        order = np.argsort(maps.starts)
        starts, ends = maps.starts[order], maps.ends[order]
        pos = np.searchsorted(starts, addrs, side="right") - 1
        inside = (pos >= 0) & (addrs < ends[np.maximum(pos, 0)])
        return np.where(inside, order[np.maximum(pos, 0)], -1)

    def user_names(self, pid: int, ips: Array) -> Array:
        """Names of one process's user addresses."""
        return self.user_frames(pid, ips)[0]

    def user_frames(self, pid: int, ips: Array) -> tuple[Array, Array]:
        """Names of one process's user addresses, and the module (binary) of each: a
        per-function metric keeps ``main`` of two programs apart."""
        self.remember([pid])
        uniq, inverse = np.unique(ips.astype(np.uint64), return_inverse=True)
        out = np.empty(len(uniq), dtype=object)
        modules = np.full(len(uniq), UNKNOWN_MODULE, dtype=object)
        maps = self._procs.get(pid)
        if maps is None:
            maps = self._refresh(pid)
        back = inverse.reshape(-1)
        if maps is None:
            out[:] = [f"[unknown]+0x{ip:x}" for ip in uniq.tolist()]
            return out[back], modules[back]
        mapping = self._mapping_of(maps, uniq)
        if (mapping < 0).any():
            again = self._refresh(pid)
            if again is not None and again is not maps:
                maps = again
                mapping = self._mapping_of(maps, uniq)
        for m in np.unique(mapping).tolist():
            sel = np.flatnonzero(mapping == m)
            if m < 0:
                out[sel] = [f"[unknown]+0x{ip:x}" for ip in uniq[sel].tolist()]
                continue
            label, key = maps.modules[m]
            modules[sel] = label
            syms = self.symbols(key)
            offsets = uniq[sel] - maps.starts[m] + maps.offsets[m]
            names = syms.names(offsets) if syms is not None else [None] * len(sel)
            out[sel] = [
                n if n is not None else f"{label}+0x{o:x}"
                for n, o in zip(names, offsets.tolist(), strict=True)
            ]
        return out[back], modules[back]
