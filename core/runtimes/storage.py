"""podman and CRI-O, which share containers/storage: its containers.json names every
container, and each container's userdata folder holds its OCI spec and init pid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igrun.core.containers import Container, from_process
from igrun.core.runtimes.base import RuntimeClient, RuntimeUnavailable
from igrun.core.runtimes.oci import RUNC_ROOTS

STORAGE = Path("/var/lib/containers/storage/overlay-containers")
RUN_STORAGE = Path("/run/containers/storage/overlay-containers")
CRIO_MARK = "io.kubernetes.cri-o.ContainerType"


def _pid(id: str) -> int:
    """The init pid: conmon's pidfile, else runc's state."""
    for path in (RUN_STORAGE / id / "userdata" / "pidfile",):
        try:
            return int(path.read_text().strip() or 0)
        except (OSError, ValueError):
            pass
    try:
        state = json.loads((RUNC_ROOTS[0] / id / "state.json").read_text())
        return int(state["init_process_pid"])
    except (OSError, ValueError, KeyError):
        return 0


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
        # conmon writes the pidfile under RUN_STORAGE; runc's state appears at create.
        return (RUN_STORAGE, *RUNC_ROOTS)

    def _entries(self) -> list[dict[str, Any]]:
        try:
            entries = json.loads((STORAGE / "containers.json").read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise RuntimeUnavailable(f"cannot read {STORAGE / 'containers.json'}: {exc}") from None
        return entries if isinstance(entries, list) else []

    def _is_mine(self, annotations: dict[str, str]) -> bool:
        raise NotImplementedError

    def containers(self) -> list[Container]:
        out = []
        for entry in self._entries():
            id = str(entry.get("id", ""))
            pid = _pid(id)
            if not id or pid <= 0:
                continue  # created but not running
            annotations = _spec_annotations(id)
            if not self._is_mine(annotations):
                continue
            try:
                metadata = json.loads(entry.get("metadata") or "{}")
            except ValueError:
                metadata = {}
            names = entry.get("names") or []
            c = from_process(
                id,
                str(names[0]) if names else str(metadata.get("name", "")),
                self.name,
                pid,
                image_name=str(metadata.get("image-name", "")),
                image_digest=f"sha256:{entry['image']}" if entry.get("image") else "",
                annotations=annotations,
            )
            if c is not None:
                out.append(c)
        return out


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
