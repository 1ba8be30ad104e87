"""Network endpoints as ``ig`` shows them: ``{"addr", "version", "port"}`` in JSON, and one
readable ``addr:port`` column (``[addr]:port`` for IPv6).

A gadget keeps each endpoint in its event struct as a 16-byte address (IPv4 in the first four
bytes), a port in host byte order and an IP version (4 or 6), and describes it with
:func:`l4_endpoint`; every gadget's endpoints then look, filter and sort the same way
(``-F dst.port:443``, ``-F src.addr:10.0.0.1``, ``--sort dst``).
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


def l4_endpoint(
    name: str,
    addr: str,
    port: str,
    version: str,
    description: str,
    column: Column | None = None,
) -> list[Field]:
    """The fields of one endpoint: ``name.addr``, ``name.version``, ``name.port`` (in JSON,
    hidden as columns) and ``name`` (the ``addr:port`` column, not in JSON). ``addr``,
    ``port`` and ``version`` name the struct members. As ``ig``'s ``L4Endpoint``: ``addr`` and
    ``version`` are left out of JSON when empty, ``port`` always written."""
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
        Field(
            name,
            Kind.STR,
            f"{description} (address:port)",
            json="-",
            decode=_joined(name),
            column=column or Column(width=24),
        ),
    ]
