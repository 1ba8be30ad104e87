"""podman and CRI-O, which share containers/storage: its containers.json names every
container, and each container's userdata folder holds its OCI spec and init pid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igrun.core.containers.collection import Container, from_process
from igrun.core.containers.engines.base import RuntimeClient, RuntimeUnavailable
from igrun.core.containers.engines.oci import CRUN_ROOTS, RUNC_ROOTS

STORAGE = Path("/var/lib/containers/storage/overlay-containers")
RUN_STORAGE = Path("/run/containers/storage/overlay-containers")
CRIO_MARK = "io.kubernetes.cri-o.ContainerType"


def _pid(id: str) -> tuple[int, int | None]:
    """The init pid (conmon's pidfile, else runc's state) and, from runc's state, when it
    started (clock ticks; None when unknown)."""
    start: int | None = None
    pid = 0
    try:
        state = json.loads((RUNC_ROOTS[0] / id / "state.json").read_text())
        pid, start = int(state["init_process_pid"]), int(state["init_process_start"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        from_conmon = int((RUN_STORAGE / id / "userdata" / "pidfile").read_text().strip() or 0)
    except (OSError, ValueError):
        return pid, start
    return from_conmon, (start if from_conmon == pid else None)


def _spec_annotations(id: str) -> dict[str, str]:
    for base in (STORAGE, RUN_STORAGE):
        try:
            spec = json.loads((base / id / "userdata" / "config.json").read_text())
        except (OSError, ValueError):
            continue
        return {str(k): str(v) for k, v in (spec.get("annotations") or {}).items()}
    return {}


class _StorageClient(RuntimeClient):
    def available(self) -> bool:
        return (STORAGE / "containers.json").exists()

    def state_dirs(self) -> tuple[Path, ...]:
        # conmon writes the pidfile under RUN_STORAGE; runc's (or crun's) state appears at
        # create.
        return (RUN_STORAGE, *RUNC_ROOTS, *CRUN_ROOTS)

    def _entries(self) -> list[dict[str, Any]]:
        """Every container of the store: containers.json, and volatile-containers.json where
        containers/storage keeps those it need not keep across reboots (``--rm`` ones), next
        to it or, in transient mode, under the run root."""
        out: list[dict[str, Any]] = []
        for path in (
            STORAGE / "containers.json",
            STORAGE / "volatile-containers.json",
            RUN_STORAGE / "volatile-containers.json",
        ):
            try:
                entries = json.loads(path.read_text())
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise RuntimeUnavailable(f"cannot read {path}: {exc}") from None
            if isinstance(entries, list):
                out += [e for e in entries if isinstance(e, dict)]
        return out

    def _is_mine(self, annotations: dict[str, str]) -> bool:
        raise NotImplementedError

    def containers(self) -> list[Container]:
        out = []
        for entry in self._entries():
            id = str(entry.get("id", ""))
            pid, start = _pid(id)
            if not id or pid <= 0:
                continue  # created but not running
            c = self._container(entry, id, pid, start)
            if c is not None:
                out.append(c)
        return out

    def describe(self, id: str, pid: int, state_dir: Path, bundle: str) -> Container | None:
        if state_dir.parent not in (*RUNC_ROOTS, *CRUN_ROOTS):
            return None
        entry = next((e for e in self._entries() if e.get("id") == id), None)
        return None if entry is None else self._container(entry, id, pid, None)

    def _container(
        self, entry: dict[str, Any], id: str, pid: int, start: int | None
    ) -> Container | None:
        annotations = _spec_annotations(id)
        if not self._is_mine(annotations):
            return None
        try:
            metadata = json.loads(entry.get("metadata") or "{}")
        except ValueError:
            metadata = {}
        names = entry.get("names") or []
        return from_process(
            id,
            str(names[0]) if names else str(metadata.get("name", "")),
            self.name,
            pid,
            image_name=str(metadata.get("image-name", "")),
            image_digest=f"sha256:{entry['image']}" if entry.get("image") else "",
            annotations=annotations,
            start_ticks=start,
        )


class PodmanClient(_StorageClient):
    name = "podman"

    def _is_mine(self, annotations: dict[str, str]) -> bool:
        return CRIO_MARK not in annotations


class CrioClient(_StorageClient):
    name = "cri-o"

    def available(self) -> bool:
        return Path("/var/run/crio/crio.sock").exists() and super().available()

    def _is_mine(self, annotations: dict[str, str]) -> bool:
        return CRIO_MARK in annotations
