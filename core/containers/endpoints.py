"""Which pod a network endpoint's address is: ``ig``'s ``KubeIPResolver`` without the
Kubernetes API.

``ig`` v0.25 fills an endpoint's ``namespace``, ``podname``, ``kind`` and ``podlabels`` only
where its Kubernetes IP resolver runs (with the API server: ``kind`` is then ``pod``, ``svc``
or ``raw``); the local ``ig`` has no resolver and leaves them out. igrun knows the addresses
of the containers it sees (:mod:`igrun.core.containers.addresses`, which skips containers in
the host's network namespace, as the resolver skips host-network pods) and their pods from
the runtime's labels: an endpoint whose address is a pod's container's gets that pod's
``namespace`` and ``podname`` and ``kind`` ``pod``. Services and pod labels need the API: no
``svc``, no ``podlabels``, and no ``raw`` either (what the local ``ig`` writes: nothing).

Per batch, each end's distinct addresses are looked up once (a batch has few).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.containers.addresses import ContainerAddresses
from igrun.core.containers.collection import Container, ContainerCollection
from igrun.core.events.endpoints import POD_KEYS
from igrun.core.events.schema import Batch, Schema


def pod_ends(schema: Schema) -> list[str]:
    """The endpoints (``src``, ``dst``) of ``schema`` that have an address and pod keys."""
    return [
        end
        for end in ("src", "dst")
        if f"{end}.addr" in schema and all(f"{end}.{key}" in schema for key in POD_KEYS)
    ]


class EndpointPods:
    """Fills the pod keys of ``ends`` from the addresses of ``collection``'s containers.
    The addresses are read on the first batch that may need them (never before the programs
    are attached, never on a host with no pod)."""

    def __init__(self, collection: ContainerCollection, ends: Sequence[str], host_netns: int):
        self.collection = collection
        self.ends = tuple(ends)
        self.host_netns = host_netns
        self.addresses: ContainerAddresses | None = None
        self._generation = -1
        self._pods = False
        """Whether any container of the collection (at its generation above) is a pod's:
        with none, as on a host without Kubernetes, no address is read or looked up."""

    def resolve(self, batch: Batch) -> None:
        """Set each end's pod keys where its address is a pod's; an end whose keys the
        gadget set itself (``trace network``'s peer) is left as it is."""
        if not len(batch):
            return
        generation = self.collection.generation
        if generation != self._generation:
            self._generation = generation
            self._pods = any(c.k8s_pod for c in self.collection.containers())
        if not self._pods:
            return
        if self.addresses is None:
            self.addresses = ContainerAddresses(self.collection, self.host_netns)
        coded = batch.layers()[1]
        for end in self.ends:
            if f"{end}.podname" in coded:
                continue
            addrs = batch[f"{end}.addr"]
            unique, inverse = np.unique(addrs.astype(str), return_inverse=True)
            pods: list[Container] = []
            codes = np.full(len(unique), -1, dtype=np.int64)
            for i, c in enumerate(self.addresses.lookup(unique.tolist())):
                if c is not None and c.k8s_pod:
                    codes[i] = len(pods)
                    pods.append(c)
            if pods:
                batch.set_coded_group(pod_tables(end, pods), codes[inverse.reshape(-1)])

    def close(self) -> None:
        if self.addresses is not None:
            self.addresses.close()
            self.addresses = None


def pod_tables(end: str, pods: list[Container]) -> dict[str, Any]:
    """The pod keys of ``end`` for each container of ``pods``, the last row being none."""
    values = {
        "namespace": [c.k8s_namespace for c in pods],
        "podname": [c.k8s_pod for c in pods],
        "kind": ["pod"] * len(pods),
    }
    tables = {}
    for key, column in values.items():
        table = np.empty(len(column) + 1, dtype=object)
        table[:] = [*column, ""]
        tables[f"{end}.{key}"] = table
    return tables
