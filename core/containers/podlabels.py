"""Pod labels from the Kubernetes API server, for ``--k8s-selector``.

On a node, a container's runtime knows its pod's namespace and name (the CRI labels) but
not always its pod's labels: the kubelet gives them to the pod's sandbox only. Where an API
server is at hand (the pod's service account, as the agent's DaemonSet has it, or
``$KUBECONFIG`` when set), the labels are read from the pod itself
(``GET /api/v1/namespaces/NS/pods/NAME``, which the agent's ClusterRole allows), once per pod
and again after :data:`TTL` seconds. Where none is, or it does not answer, the labels the
runtime tells are used (:func:`~igrun.core.containers.collection.pod_labels`).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from igrun.core.containers.collection import Container, pod_labels
from igrun.core.errors import IgrunError
from igrun.core.log import get_logger

if TYPE_CHECKING:
    from igrun.core.remote.kube import ApiServer

TTL = 30.0
TIMEOUT = 2.0
"""Seconds an answer may take: a container's start may wait for its selection."""


def reachable_api() -> ApiServer | None:
    """The API server of the pod's service account, or of ``$KUBECONFIG`` when set; None
    where there is neither (a plain host: no request leaves it)."""
    from igrun.core.remote.kube import SERVICE_ACCOUNT, api_server

    in_pod = os.environ.get("KUBERNETES_SERVICE_HOST") and (SERVICE_ACCOUNT / "token").is_file()
    if not in_pod and not os.environ.get("KUBECONFIG"):
        return None
    try:
        return api_server()
    except IgrunError as exc:
        get_logger().warning("no_api_server", reason=str(exc), note="pod labels from runtimes")
        return None


class ApiPodLabels:
    """A container's pod labels: the pod's own from the API server, else the runtime's."""

    def __init__(self, api: ApiServer, ttl: float = TTL) -> None:
        self.api = api
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, Mapping[str, str] | None]] = {}
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self, c: Container) -> Mapping[str, str]:
        if not (c.k8s_namespace and c.k8s_pod):
            return pod_labels(c)
        key = (c.k8s_namespace, c.k8s_pod)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is None or now - hit[0] > self.ttl:
            hit = (now, self._fetch(*key))
            with self._lock:
                self._cache[key] = hit
        return hit[1] if hit[1] is not None else pod_labels(c)

    def _fetch(self, namespace: str, pod: str) -> Mapping[str, str] | None:
        path = "/api/v1/namespaces/{}/pods/{}".format(
            urllib.parse.quote(namespace, safe=""), urllib.parse.quote(pod, safe="")
        )
        try:
            found = self.api.get(path, timeout=TIMEOUT)
        except IgrunError as exc:
            if not self._warned:
                self._warned = True
                get_logger().warning("pod_labels_unavailable", reason=str(exc))
            return None
        labels = ((found or {}).get("metadata") or {}).get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()}
