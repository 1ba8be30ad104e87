"""``profile tcprtt``: the distribution of TCP round-trip times, optionally per address.

``ig`` v0.25's gadget (``pkg/gadgets/profile/tcprtt``, after libbpf-tools' ``tcprtt``), with
its flags (``-m``, ``-b``/``--byladdr``, ``-B``/``--byraddr``, ``--lport``, ``--rport``,
``--laddr``, ``--raddr``, ``--laddrv6``, ``--raddrv6``), its ``report`` (the default) and its
JSON (``{"histograms": [...]}``). ``ig`` reads the socket's smoothed RTT in a kprobe on
``tcp_rcv_established``; igrun reads the same value in the ``tcp/tcp_probe`` tracepoint at
the top of that function, so it loads where kprobes do not.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from igrun.core import (
    Batch,
    Category,
    Column,
    Field,
    GadgetContext,
    Kind,
    OutputFormat,
    ParamDesc,
    ParamError,
    RunPlan,
    Schema,
    TypeHint,
    hookimpl,
)
from igrun.core.events.helpers import ip_strings
from igrun.core.histogram import (
    BpfHistogram,
    bucket_fields,
    groups,
    histogram_text,
    intervals,
    json_line,
    unit_field,
)

PARAM_MILLISECONDS = "milliseconds"
PARAM_BY_LADDR = "byladdr"
PARAM_BY_RADDR = "byraddr"
PARAM_LPORT = "lport"
PARAM_RPORT = "rport"
PARAM_LADDR = "laddr"
PARAM_RADDR = "raddr"
PARAM_LADDR_V6 = "laddrv6"
PARAM_RADDR_V6 = "raddrv6"

WILDCARD_ADDRESS = "******"
ADDRESS_TYPES = ("All Addresses", "Local", "Remote")
"""``ig``'s ``addressType`` by the row constant ``addr_type`` (0, 1, 2)."""


def _ipv4(value: str) -> None:
    if value:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 address") from None


def _ipv6(value: str) -> None:
    if value:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv6 address") from None


def _port(value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{value} is not a port (0 to 65535)")


def _addresses(batch: Batch) -> Any:
    versions = np.asarray(batch.member("ipversion"))
    text = ip_strings(batch.member("addr"), versions)
    return np.where(versions == 0, WILDCARD_ADDRESS, text).astype(object)


def _address_types(batch: Batch) -> Any:
    table = np.array(ADDRESS_TYPES, dtype=object)
    return table[np.asarray(batch.member("addr_type"), dtype=np.intp)]


def _averages(batch: Batch) -> Any:
    cnt = np.asarray(batch.member("cnt"), dtype=np.float64)
    latency = np.asarray(batch.member("latency"), dtype=np.float64)
    return np.divide(latency, cnt, out=np.zeros_like(latency), where=cnt > 0)


SCHEMA = Schema(
    [
        Field(
            "address",
            Kind.STR,
            "the local or remote address of the histogram (******: every address)",
            decode=_addresses,
            column=Column(width=16),
        ),
        Field(
            "addressType",
            Kind.STR,
            "Local, Remote or All Addresses",
            decode=_address_types,
            column=Column(width=13, hidden=True),
        ),
        Field(
            "average",
            Kind.FLOAT,
            "the mean RTT of the histogram (its unit is unit)",
            decode=_averages,
            omit_empty=True,
            column=Column(width=10, align="right", hidden=True),
        ),
        Field(
            "localPort",
            Kind.UINT,
            "--lport",
            member="lport",
            omit_empty=True,
            column=Column(width=6, hidden=True),
        ),
        Field(
            "remotePort",
            Kind.UINT,
            "--rport",
            member="rport",
            omit_empty=True,
            column=Column(width=6, hidden=True),
        ),
        *bucket_fields(),
        unit_field(),
    ],
)

_KEY = ["address", "addressType", "localPort", "remotePort"]


def _histograms(batch: Batch) -> list[dict[str, Any]]:
    """``ig``'s ``ExtendedHistogram`` records, one per address (or one for all)."""
    units = np.asarray(batch["unit"]).tolist() if len(batch) else []
    averages = np.asarray(batch["average"]).tolist() if len(batch) else []
    out = []
    for values, index in groups(batch, _KEY):
        first = int(index[0])
        record: dict[str, Any] = {"unit": units[first], "intervals": intervals(batch, index)}
        record["address"] = values["address"]
        record["addressType"] = values["addressType"]
        if averages[first]:
            record["average"] = averages[first]
        if values["localPort"]:
            record["localPort"] = values["localPort"]
        if values["remotePort"]:
            record["remotePort"] = values["remotePort"]
        out.append(record)
    return out


def _json(batch: Batch) -> bytes:
    histograms = _histograms(batch)
    return json_line({"histograms": histograms} if histograms else {})


def _report(batch: Batch) -> bytes:
    """``ig``'s report: per histogram a title line (address, ports, ``[AVG x]``), then the
    histogram, then an empty line."""
    parts = []
    for h in _histograms(batch):
        title = f"{h['addressType']} = {h['address']}"
        if h.get("localPort"):
            title += f" Local port = {h['localPort']}"
        if h.get("remotePort"):
            title += f" Remote port = {h['remotePort']}"
        if h.get("average"):
            title += f" [AVG {h['average']:f}]"
        rows = [(i["start"], i["end"], i["count"]) for i in h["intervals"]]
        parts.append(f"{title}\n{histogram_text(h['unit'], rows)}\n")
    return "".join(parts).encode()


def _bool(desc: str, key: str, alias: str) -> ParamDesc:
    return ParamDesc(key, alias=alias, default="false", type_hint=TypeHint.BOOL, description=desc)


class ProfileTcprtt(BpfHistogram):
    name = "tcprtt"
    category = Category.PROFILE
    description = "Analyze TCP connections through an Round-Trip Time (RTT) distribution"
    bpf_object = "tcprtt.bpf.o"
    schema = SCHEMA
    examples = (
        "igrun profile tcprtt -t 10s",
        "igrun profile tcprtt --byraddr --rport 443",
    )
    params = (
        _bool("show histogram in milliseconds instead of microseconds", PARAM_MILLISECONDS, "m"),
        _bool("show histogram by local address", PARAM_BY_LADDR, "b"),
        _bool("show histogram by remote address", PARAM_BY_RADDR, "B"),
        ParamDesc(
            PARAM_LPORT,
            default="0",
            type_hint=TypeHint.UINT,
            description="filter for local port",
            check=_port,
        ),
        ParamDesc(
            PARAM_RPORT,
            default="0",
            type_hint=TypeHint.UINT,
            description="filter for remote port",
            check=_port,
        ),
        ParamDesc(PARAM_LADDR, description="filter for local address", check=_ipv4),
        ParamDesc(PARAM_RADDR, description="filter for remote address", check=_ipv4),
        ParamDesc(PARAM_LADDR_V6, description="filter for local address using IPv6", check=_ipv6),
        ParamDesc(PARAM_RADDR_V6, description="filter for remote address using IPv6", check=_ipv6),
    )
    _formats: ClassVar[dict[str, OutputFormat]] = {
        "report": OutputFormat(
            "report",
            "A histogram showing the TCP RTT distribution",
            _report,
            requires_combined_result=True,
        ),
        "json": OutputFormat(
            "json",
            "ig's JSON: histograms, each with unit, intervals, address, addressType, average",
            _json,
            requires_combined_result=True,
        ),
    }

    @classmethod
    def output_formats(cls) -> tuple[dict[str, OutputFormat], str]:
        return dict(cls._formats), "report"

    @classmethod
    def check_params(cls, plan: RunPlan) -> None:
        super().check_params(plan)
        p = plan.gadget_params
        if p.get(PARAM_BY_LADDR) and p.get(PARAM_BY_RADDR):
            raise ParamError(
                "local and remote address histograms cannot be enabled at the same time"
            )
        v4 = p.get(PARAM_LADDR) or p.get(PARAM_RADDR)
        if v4 and (p.get(PARAM_LADDR_V6) or p.get(PARAM_RADDR_V6)):
            raise ParamError("filtering by any IPv4 and IPv6 address is not permitted")

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        p = ctx.gadget_params

        def v4(key: str) -> int:
            value = p.get(key)
            return int.from_bytes(socket.inet_aton(value), "little") if value else 0

        def v6(key: str) -> bytes:
            value = p.get(key)
            return ipaddress.IPv6Address(value).packed if value else bytes(16)

        return {
            "targ_ms": bool(p.get(PARAM_MILLISECONDS)),
            "targ_laddr_hist": bool(p.get(PARAM_BY_LADDR)),
            "targ_raddr_hist": bool(p.get(PARAM_BY_RADDR)),
            "targ_sport": int(p.get(PARAM_LPORT) or 0),
            "targ_dport": socket.htons(int(p.get(PARAM_RPORT) or 0)),
            "targ_saddr": v4(PARAM_LADDR),
            "targ_daddr": v4(PARAM_RADDR),
            "targ_saddr_v6": v6(PARAM_LADDR_V6),
            "targ_daddr_v6": v6(PARAM_RADDR_V6),
        }

    def row_constants(self, ctx: GadgetContext) -> dict[str, int]:
        p = ctx.gadget_params
        addr_type = 1 if p.get(PARAM_BY_LADDR) else 2 if p.get(PARAM_BY_RADDR) else 0
        return {
            "ms": int(bool(p.get(PARAM_MILLISECONDS))),
            "addr_type": addr_type,
            "lport": int(p.get(PARAM_LPORT) or 0),
            "rport": int(p.get(PARAM_RPORT) or 0),
        }


__all__ = ["ProfileTcprtt"]


@hookimpl
def igrun_register_gadgets(register: Callable[[type[Any]], None]) -> None:
    register(ProfileTcprtt)
