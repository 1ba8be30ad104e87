"""Readers of container runtimes' state: one module per runtime, one small interface.

Each :class:`RuntimeClient` answers one question, cheaply and without side effects: which of
its containers run now? Reading state files (or a local API socket) keeps discovery free of
kprobes; :mod:`igrun.core.containers.discovery` asks them whenever their state folders change.
Clients
are ordered so that a manager claims its containers before the low-level runtime underneath
it would (podman and containerd both drive runc).
"""

from __future__ import annotations

from collections.abc import Iterable

from igrun.core.containers.engines.base import RuntimeClient, RuntimeUnavailable

__all__ = ["RUNTIME_NAMES", "RuntimeClient", "RuntimeUnavailable", "all_clients"]


def all_clients(containerd_namespaces: Iterable[str] = ("k8s.io",)) -> list[RuntimeClient]:
    """Every client igrun has, managers first."""
    from igrun.core.containers.engines.containerd import ContainerdClient
    from igrun.core.containers.engines.docker import DockerClient
    from igrun.core.containers.engines.oci import CrunClient, RuncClient
    from igrun.core.containers.engines.storage import CrioClient, PodmanClient

    return [
        DockerClient(),
        ContainerdClient(tuple(containerd_namespaces)),
        CrioClient(),
        PodmanClient(),
        RuncClient(),
        CrunClient(),
    ]


RUNTIME_NAMES = ("docker", "containerd", "cri-o", "podman", "runc", "crun")
