"""Network endpoints as ``ig`` shows them: ``{"addr", "version", "port"}`` in JSON, and one
readable ``addr:port`` column (``[addr]:port`` for IPv6).

A gadget keeps each endpoint in its event struct as a 16-byte address (IPv4 in the first four
bytes), a port in host byte order and an IP version (4 or 6), and describes it with
:func:`l4_endpoint`; every gadget's endpoints then look, filter and sort the same way
(``-F dst.port:443``, ``-F src.addr:10.0.0.1``, ``--sort dst``).

Each endpoint also has ``ig``'s Kubernetes keys, ``namespace``, ``podname`` and ``kind``
(:func:`pod_fields`): empty, so left out of JSON, unless the address is a known pod's
(:mod:`igrun.core.containers.endpoints` fills them in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
else:
    from igrun.core.lazy import numpy as np

from igrun.core.events.helpers import ip_strings
from igrun.core.events.schema import Batch, Column, Field, Kind


def _addresses(addr: str, version: str) -> Any:
    def decode(batch: Batch) -> Any:
        return ip_strings(batch.member(addr), batch.member(version))

    return decode


def _joined(name: str) -> Any:
    def decode(batch: Batch) -> Any:
        addrs = batch[f"{name}.addr"]
        ports = batch[f"{name}.port"].astype(str)
        v6 = batch[f"{name}.version"] == 6
        hosts = np.where(v6, "[" + addrs.astype(str) + "]", addrs.astype(str))
        return (hosts.astype(object) + ":" + ports.astype(object)).astype(object)

    return decode


def _no_text(batch: Batch) -> Any:
    return np.full(len(batch), "", dtype=object)


POD_KEYS = ("namespace", "podname", "kind")
"""The Kubernetes keys of ``ig``'s ``L3Endpoint`` that igrun can know (not ``podlabels``)."""


def pod_fields(name: str, description: str) -> list[Field]:
    """``name.namespace``, ``name.podname`` and ``name.kind``: the pod that has the endpoint's
    address, as ``ig``'s ``L3Endpoint`` has them (``kind`` is ``pod``); empty until an
    operator finds one, so left out of JSON, hidden as columns."""
    what = {
        "namespace": "Kubernetes namespace of the pod that has the address",
        "podname": "Kubernetes pod that has the address",
        "kind": "pod when the address is a known pod's",
    }
    return [
        Field(
            f"{name}.{key}",
            Kind.STR,
            f"{description}: {what[key]}",
            decode=_no_text,
            column=Column(hidden=True),
            omit_empty=True,
        )
        for key in POD_KEYS
    ]


def l4_endpoint(
    name: str,
    addr: str,
    port: str,
    version: str,
    description: str,
    column: Column | None = None,
    pod: bool = True,
) -> list[Field]:
    """The fields of one endpoint: ``name.addr``, ``name.version``, ``name.port`` (in JSON,
    hidden as columns), with ``pod`` its pod's (:func:`pod_fields`), and ``name`` (the
    ``addr:port`` column, not in JSON). ``addr``, ``port`` and ``version`` name the struct
    members. As ``ig``'s ``L4Endpoint``: ``addr`` and ``version`` are left out of JSON when
    empty, ``port`` always written."""
    return [
        Field(
            f"{name}.addr",
            Kind.STR,
            f"{description}: IP address",
            decode=_addresses(addr, version),
            column=Column(width=16, hidden=True),
            omit_empty=True,
        ),
        Field(
            f"{name}.version",
            Kind.UINT,
            f"{description}: IP version",
            member=version,
            column=Column(width=2, hidden=True),
            omit_empty=True,
        ),
        Field(
            f"{name}.port",
            Kind.UINT,
            f"{description}: port",
            member=port,
            column=Column(width=5, hidden=True, align="right"),
        ),
        *(pod_fields(name, description) if pod else []),
        Field(
            name,
            Kind.STR,
            f"{description} (address:port)",
            json="-",
            decode=_joined(name),
            column=column or Column(width=24),
        ),
    ]
