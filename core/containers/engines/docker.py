"""Docker, through its API socket (HTTP over a Unix socket, no client library needed)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from igrun.core.containers.collection import Container, from_process
from igrun.core.containers.engines.base import RuntimeClient, RuntimeUnavailable
from igrun.core.files import CONFIG_LIMIT, FileRefused, read_bytes

SOCKET = Path("/run/docker.sock")
STATE = Path("/run/docker/runtime-runc/moby")
TIMEOUT = 2.0
"""Seconds one listing may take in all."""


def socket_path() -> Path:
    """``DOCKER_HOST`` when it names a Unix socket (as for the docker CLI), else the default."""
    host = os.environ.get("DOCKER_HOST", "")
    return Path(host.removeprefix("unix://")) if host.startswith("unix://") else SOCKET


class DockerClient(RuntimeClient):
    name = "docker"

    def __init__(self, path: Path | None = None, timeout: float = TIMEOUT) -> None:
        super().__init__()
        self.path = path or socket_path()
        self.timeout = timeout
        self._seen: dict[str, Container] = {}

    def available(self) -> bool:
        return self.path.exists()

    def state_dirs(self) -> tuple[Path, ...]:
        return (STATE,)

    def _get(self, url: str, deadline: float) -> Any:
        from igrun.core.containers.engines.unixhttp import HTTPException, UnixConnection

        conn = UnixConnection(self.path, deadline)
        try:
            conn.request("GET", url)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeUnavailable(f"docker answered {response.status} for {url}")
            return json.loads(body)
        except TimeoutError:
            raise RuntimeUnavailable(
                f"docker at {self.path}: no answer within {self.timeout:g} s"
            ) from None
        except (OSError, ValueError, HTTPException) as exc:
            raise RuntimeUnavailable(f"docker at {self.path}: {exc}") from None
        finally:
            conn.close()

    def describe(self, id: str, pid: int, state_dir: Path, bundle: str) -> Container | None:
        """Docker runs runc (through containerd's ``moby`` namespace) with ``--root`` in
        :data:`STATE`, or ``<exec-root>/runtime-runc/moby`` for a daemon with an exec root of
        its own. The API cannot be asked here: Docker holds the container's lock while it
        starts it, so an inspect waits for the very start igrun is holding. What ``docker
        create`` wrote is read instead: the bundle's ``/etc/hostname`` mount comes from the
        container's folder in Docker's data root, next to its ``config.v2.json``."""
        if state_dir.parent != STATE and state_dir.parent.parts[-2:] != ("runtime-runc", "moby"):
            return None
        folder = _container_folder(bundle)
        if folder is None:
            return None
        try:
            config = json.loads(read_bytes(folder / "config.v2.json", CONFIG_LIMIT))
        except (FileRefused, ValueError):
            return None
        inner = config.get("Config") or {}
        return from_process(
            id,
            str(config.get("Name", "")).lstrip("/"),
            self.name,
            pid,
            image_name=str(inner.get("Image", "")),
            image_digest=str(config.get("Image", "")),
            labels={str(k): str(v) for k, v in (inner.get("Labels") or {}).items()},
        )

    def containers(self) -> list[Container]:
        """The running containers, all asked for within ``timeout`` seconds in all (the list,
        then each new container's details): a slow daemon costs discovery that much, once."""
        if not self.path.exists():
            raise RuntimeUnavailable(f"no docker socket at {self.path}")
        deadline = time.monotonic() + self.timeout
        seen: dict[str, Container] = {}
        for entry in self._get("/containers/json", deadline):
            id = str(entry["Id"])
            if id in self._seen:  # inspect each container once
                seen[id] = self._seen[id]
                continue
            detail = self._get(f"/containers/{id}/json", deadline)
            labels = {str(k): str(v) for k, v in (entry.get("Labels") or {}).items()}
            names = entry.get("Names") or [""]
            c = from_process(
                id,
                str(names[0]).lstrip("/"),
                self.name,
                int((detail.get("State") or {}).get("Pid") or 0),
                image_name=str(entry.get("Image", "")),
                image_digest=str(entry.get("ImageID", "")),
                labels=labels,
            )
            if c is not None:
                seen[id] = c
        self._seen = seen
        return list(seen.values())


def _container_folder(bundle: str) -> Path | None:
    """Docker's folder of the container whose OCI bundle is ``bundle`` (where its
    ``/etc/hostname`` is bind-mounted from), or None."""
    try:
        spec = json.loads(read_bytes(Path(bundle) / "config.json", CONFIG_LIMIT))
    except (FileRefused, ValueError):
        return None
    for mount in spec.get("mounts") or []:
        if isinstance(mount, dict) and mount.get("destination") == "/etc/hostname":
            return Path(str(mount.get("source", ""))).parent
    return None
