"""containerd, read from its v2 task folders (one per running task, per namespace)."""

from __future__ import annotations

import json
from pathlib import Path

from igrun.core.containers.collection import Container, from_process
from igrun.core.containers.engines.base import RuntimeClient
from igrun.core.containers.engines.oci import container_name

TASKS = Path("/run/containerd/io.containerd.runtime.v2.task")
RUNC_STATE = Path("/run/containerd/runc")


class ContainerdClient(RuntimeClient):
    name = "containerd"

    def __init__(self, namespaces: tuple[str, ...] = ("k8s.io",)) -> None:
        super().__init__()
        self.namespaces = namespaces

    def available(self) -> bool:
        return TASKS.is_dir() or Path("/run/containerd/containerd.sock").exists()

    def state_dirs(self) -> tuple[Path, ...]:
        return tuple(TASKS / ns for ns in self.namespaces)

    def containers(self) -> list[Container]:
        out = []
        for ns in self.namespaces:
            folder = TASKS / ns
            if not folder.is_dir():
                continue
            for task in folder.iterdir():
                try:
                    pid = int((task / "init.pid").read_text().strip() or 0)
                except (OSError, ValueError):
                    continue
                c = self._container(task, ns, pid)
                if c is not None:
                    out.append(c)
        return out

    def describe(self, id: str, pid: int, state_dir: Path, bundle: str) -> Container | None:
        """The shim runs runc with ``--root /run/containerd/runc/<ns>``; the task folder (the
        bundle) exists before runc does, its init.pid only after."""
        ns = state_dir.parent.name
        if state_dir.parent != RUNC_STATE / ns or ns not in self.namespaces:
            return None
        return self._container(TASKS / ns / id, ns, pid)

    def _container(self, task: Path, ns: str, pid: int) -> Container | None:
        try:
            spec = json.loads((task / "config.json").read_text())
        except (OSError, ValueError):
            return None
        annotations = {str(k): str(v) for k, v in (spec.get("annotations") or {}).items()}
        return from_process(
            task.name,
            container_name(task.name, annotations),
            self.name,
            pid,
            image_name=annotations.get("io.kubernetes.cri.image-name", ""),
            annotations=annotations,
            labels={"containerd.namespace": ns},
        )
