"""containerd, read from its v2 task folders (one per running task, per namespace)."""

from __future__ import annotations

import json
from pathlib import Path

from igrun.core.containers import Container, from_process
from igrun.core.runtimes.base import RuntimeClient
from igrun.core.runtimes.oci import container_name

TASKS = Path("/run/containerd/io.containerd.runtime.v2.task")


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
                    spec = json.loads((task / "config.json").read_text())
                except (OSError, ValueError):
                    continue
                annotations = {str(k): str(v) for k, v in (spec.get("annotations") or {}).items()}
                c = from_process(
                    task.name,
                    container_name(task.name, annotations),
                    self.name,
                    pid,
                    image_name=annotations.get("io.kubernetes.cri.image-name", ""),
                    annotations=annotations,
                    labels={"containerd.namespace": ns},
                )
                if c is not None:
                    out.append(c)
        return out
