"""runc and crun: the low-level runtimes, read from their state folders.

Containers that a manager (podman, containerd, CRI-O, Docker) started also have runc state;
those are claimed by the manager's client first, and only the rest appear as runc's own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from igrun.core.containers.collection import Container, from_process
from igrun.core.containers.engines.base import RuntimeClient

RUNC_ROOTS = (Path("/run/runc"),)
"""runc's default root (podman's too)."""
OTHER_RUNC_ROOTS = (Path("/run/docker/runtime-runc"), Path("/run/containerd/runc"))
"""Where Docker and containerd keep runc state: one root per namespace inside each."""
CRUN_ROOTS = (Path("/run/crun"),)
"""crun's default root (podman's)."""


def bundle_annotations(bundle: str) -> dict[str, str]:
    """The annotations of an OCI bundle's config.json (empty if unreadable)."""
    try:
        spec = json.loads((Path(bundle) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    annotations = spec.get("annotations") or {}
    return {str(k): str(v) for k, v in annotations.items()}


def _labels(state: dict[str, Any]) -> dict[str, str]:
    out = {}
    for item in (state.get("config") or {}).get("labels") or []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def container_name(id: str, annotations: dict[str, str]) -> str:
    """The name people use: a CRI container name, a ``name`` annotation, else the id."""
    for key in (
        "io.kubernetes.cri.container-name",
        "io.kubernetes.container.name",
        "name",
        "io.container.name",
    ):
        if annotations.get(key):
            return annotations[key]
    return id


class RuncClient(RuntimeClient):
    name = "runc"

    def __init__(self, roots: tuple[Path, ...] | None = None) -> None:
        super().__init__()
        self._roots = roots
        self._learned: list[Path] = []
        """Roots runc was seen to use (``--root``) beyond the usual ones."""

    @property
    def roots(self) -> tuple[Path, ...]:
        """The given roots, else runc's own and those of Docker's and containerd's namespaces
        (looked up each time: a namespace may appear while igrun runs)."""
        if self._roots is not None:
            return self._roots
        nested = [ns for base in OTHER_RUNC_ROOTS if base.is_dir() for ns in base.iterdir()]
        learned = (r for r in self._learned if r.is_dir())
        return (*RUNC_ROOTS, *(ns for ns in nested if ns.is_dir()), *learned)

    def available(self) -> bool:
        return any(root.is_dir() for root in self.roots)

    def state_dirs(self) -> tuple[Path, ...]:
        return self.roots

    def describe(self, id: str, pid: int, state_dir: Path, bundle: str) -> Container | None:
        """Any runc container that no manager claims, whatever its ``--root``: a root seen
        here for the first time is read by later scans too."""
        if state_dir.parent in CRUN_ROOTS:
            return None  # crun's: CrunClient describes it
        if self._roots is None and state_dir.parent not in self.roots:
            self._learned.append(state_dir.parent)
        elif state_dir.parent not in self.roots:
            return None
        annotations = bundle_annotations(bundle)
        return from_process(
            id,
            container_name(id, annotations),
            self.name,
            pid,
            annotations=annotations,
            labels={"bundle": bundle} if bundle else {},
        )

    def containers(self) -> list[Container]:
        out = []
        for root in self.roots:
            if not root.is_dir():
                continue
            for entry in root.iterdir():
                c = self._read(entry / "state.json")
                if c is not None:
                    out.append(c)
        return out

    def _read(self, path: Path) -> Container | None:
        try:
            state = json.loads(path.read_text())
        except OSError:
            return None  # gone since the folder was listed
        except ValueError as exc:
            self.problems.append(f"skipping malformed state file {path}: {exc}")
            return None
        labels = _labels(state)
        annotations = bundle_annotations(labels.get("bundle", ""))
        id = str(state.get("id", path.parent.name))
        return from_process(
            id,
            container_name(id, annotations),
            self.name,
            int(state.get("init_process_pid") or 0),
            annotations=annotations,
            labels=labels,
            start_ticks=_start_ticks(state),
        )


def _start_ticks(state: dict[str, Any]) -> int | None:
    """When runc saw the init process start (clock ticks after boot), to tell a reused pid."""
    try:
        return int(state["init_process_start"])
    except (KeyError, TypeError, ValueError):
        return None


class CrunClient(RuntimeClient):
    name = "crun"
    root = CRUN_ROOTS[0]

    def available(self) -> bool:
        return self.root.is_dir()

    def state_dirs(self) -> tuple[Path, ...]:
        return (self.root,)

    def describe(self, id: str, pid: int, state_dir: Path, bundle: str) -> Container | None:
        """A crun container no manager claims, held at its start."""
        if state_dir.parent != self.root:
            return None
        annotations = bundle_annotations(bundle)
        return from_process(
            id, container_name(id, annotations), self.name, pid, annotations=annotations
        )

    def containers(self) -> list[Container]:
        out: list[Container] = []
        if not self.root.is_dir():
            return out
        for entry in self.root.iterdir():
            try:
                status = json.loads((entry / "status").read_text())
            except OSError:
                continue
            except ValueError as exc:
                self.problems.append(f"skipping malformed state file {entry / 'status'}: {exc}")
                continue
            annotations = bundle_annotations(str(status.get("bundle", "")))
            c = from_process(
                entry.name,
                container_name(entry.name, annotations),
                self.name,
                int(status.get("pid") or 0),
                annotations=annotations,
            )
            if c is not None:
                out.append(c)
        return out
