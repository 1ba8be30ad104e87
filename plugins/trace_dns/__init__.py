"""``trace dns``: DNS queries and responses in each selected network namespace, with the
process that owns the socket.

A socket filter in every selected network namespace (:class:`~igrun.plugins._packet.
PacketTracer`) parses each DNS message over UDP or TCP, IPv4 or IPv6, in the kernel with
bounded loops (``dns.bpf.c``): id, flags, the question's name and type, and the addresses of
A and AAAA answers. It computes a response's latency from its query in the kernel too. Here
the question's labels are joined into a name once per distinct name in a batch.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

import numpy as np

from igrun.core import Batch, Category, Column, Field, Kind, ParamDesc, Schema, hookimpl
from igrun.core.errors import ParamError
from igrun.core.events import fields
from igrun.core.events.fields import duration_field, ip_address_field
from igrun.core.gadget import GadgetContext
from igrun.core.params import TypeHint
from igrun.plugins._packet import PacketTracer, owner_fields, packet_types, protocols

PARAM_DNS_TIMEOUT = "dns-timeout"
NS_PER_SECOND = 1_000_000_000
MAX_ADDRS = 8

QTYPES = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR", 24: "SIG",
    25: "KEY", 26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID",
    32: "NIMLOC", 33: "SRV", 34: "ATMA", 35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6",
    39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY",
    46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM",
    52: "TLSA", 53: "SMIMEA", 55: "HIP", 56: "NINFO", 57: "RKEY", 58: "TALINK", 59: "CDS",
    60: "CDNSKEY", 61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS",
    99: "SPF", 100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "NID", 105: "L32",
    106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG", 251: "IXFR",
    252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "*", 256: "URI", 257: "CAA", 258: "AVC",
    259: "DOA", 260: "AMTRELAY", 32768: "TA", 32769: "DLV",
}  # fmt: skip
"""Query types by number, as ``ig`` names them (others are ``UNASSIGNED``)."""
RCODES = {0: "NoError", 1: "FormErr", 2: "ServFail", 3: "NXDomain", 4: "NotImp", 5: "Refused"}
"""Response codes by number, as ``ig`` names them (others are ``UNKNOWN``)."""


def label_text(raw: bytes) -> str:
    """A name's wire labels (``\\x03www\\x07example\\x03com\\x00``) as ``www.example.com.``:
    each label read within the buffer, nothing past its end."""
    out = []
    i = 0
    while i < len(raw) and raw[i]:
        end = i + 1 + raw[i]
        if end > len(raw):
            break
        out.append(raw[i + 1 : end].decode("utf-8", "replace") + ".")
        i = end
    return "".join(out)


def _names(batch: Batch) -> Any:
    raw = np.ascontiguousarray(batch.member("name")).view(np.uint8).reshape(len(batch), -1)
    names = raw.view(f"S{raw.shape[1]}").reshape(-1)
    unique, inverse = np.unique(names, return_inverse=True)
    table = np.array([label_text(n) for n in unique.tolist()] + [""], dtype=object)
    return table[inverse.reshape(-1)] if len(unique) else table[:0]


def _ids(batch: Batch) -> Any:
    return fields.per_distinct(batch.member("id"), lambda v: f"{v:04x}")


def _qr(batch: Batch) -> Any:
    return np.where(batch.member("qr") != 0, "R", "Q").astype(object)


def _qtypes(batch: Batch) -> Any:
    return fields.per_distinct(batch.member("qtype"), lambda v: QTYPES.get(v, "UNASSIGNED"))


def _rcodes(batch: Batch) -> Any:
    codes = fields.per_distinct(batch.member("rcode"), lambda v: RCODES.get(v, "UNKNOWN"))
    return np.where(batch.member("qr") != 0, codes, "").astype(object)


def _nameservers(batch: Batch) -> Any:
    return np.where(batch.member("qr") != 0, batch["srcIP"], batch["dstIP"]).astype(object)


def _address(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped or addr)


def _addresses(batch: Batch) -> Any:
    counts = np.minimum(batch.member("anaddrcount"), MAX_ADDRS)
    out = np.empty(len(batch), dtype=object)
    out[:] = [[] for _ in range(len(batch))]
    rows = np.nonzero(counts)[0]
    if not len(rows):
        return out
    raw = np.ascontiguousarray(batch.member("anaddr")).view(np.uint8).reshape(len(batch), -1)
    texts: dict[bytes, str] = {}
    for row in rows.tolist():
        addrs = raw[row].tobytes()
        listed = []
        for i in range(int(counts[row])):
            one = addrs[16 * i : 16 * i + 16]
            text = texts.get(one)
            if text is None:
                text = texts[one] = _address(one)
            listed.append(text)
        out[row] = listed
    return out


def _check_timeout(value: Any) -> None:
    if value <= 0:
        raise ParamError(f"--{PARAM_DNS_TIMEOUT}: DNS timeout must be > 0")


_HIDDEN = Column(hidden=True)
_HIDDEN_RIGHT = Column(hidden=True, align="right")


class TraceDns(PacketTracer):
    name = "dns"
    category = Category.TRACE
    description = "Trace DNS requests"
    bpf_object = "dns.bpf.o"
    packet_program = "ig_trace_dns"
    params = (
        ParamDesc(
            PARAM_DNS_TIMEOUT,
            type_hint=TypeHint.DURATION,
            default="10s",
            description="Timeout waiting for a response to a DNS query (used to calculate latency)",
            check=_check_timeout,
        ),
    )
    examples: ClassVar[tuple[str, ...]] = (
        "igrun trace dns -c web",
        "igrun trace dns --host -F qr:R -o columns=+latency,+addresses",
        "igrun trace dns --host -F rcode:NXDomain -o json",
    )
    schema = Schema(
        [
            *owner_fields(),
            ip_address_field("srcIP", "source address", "conn.saddr", "conn.ipversion",
                             column=_HIDDEN),
            ip_address_field("dstIP", "destination address", "conn.daddr", "conn.ipversion",
                             column=_HIDDEN),
            Field("srcPort", Kind.UINT, "source port", member="conn.sport",
                  column=_HIDDEN_RIGHT, omit_empty=True),
            Field("dstPort", Kind.UINT, "destination port", member="conn.dport",
                  column=_HIDDEN_RIGHT, omit_empty=True),
            Field("proto", Kind.STR, "transport protocol (UDP or TCP)", json="protocol",
                  decode=protocols, column=Column(max_width=5, hidden=True), omit_empty=True),
            Field("id", Kind.STR, "the message's id, in hex", decode=_ids,
                  column=Column(width=4, fixed=True, hidden=True), omit_empty=True),
            Field("qr", Kind.STR, "Q for a query, R for a response", decode=_qr,
                  column=Column(width=2, fixed=True), omit_empty=True),
            Field("nameserver", Kind.STR, "the server's address (destination of a query, "
                  "source of a response)", decode=_nameservers, column=_HIDDEN,
                  omit_empty=True),
            Field("type", Kind.STR, "packet type (HOST: arriving, OUTGOING: leaving...)",
                  json="pktType", decode=packet_types, column=Column(min_width=7, max_width=9),
                  omit_empty=True),
            Field("qtype", Kind.STR, "the question's type (A, AAAA, MX...)", decode=_qtypes,
                  column=Column(min_width=5, max_width=10), omit_empty=True),
            Field("name", Kind.STR, "the name asked about", decode=_names,
                  column=Column(width=30), omit_empty=True),
            Field("rcode", Kind.STR, "response code (NoError, NXDomain...); empty for a query",
                  decode=_rcodes, column=Column(min_width=8), omit_empty=True),
            duration_field("latency", "time since the query, for a response seen in the "
                           "namespace its query left", member="latency_ns", column=_HIDDEN),
            Field("numAnswers", Kind.UINT, "number of answer records in the response",
                  member="ancount", column=Column(width=8, max_width=8, align="right"),
                  omit_empty=True),
            Field("addresses", Kind.LIST, f"addresses of the A and AAAA answers (up to "
                  f"{MAX_ADDRS})", decode=_addresses, column=Column(width=32, hidden=True),
                  omit_empty=True),
        ],
        struct="dns_event",
    )  # fmt: skip

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        seconds = float(ctx.gadget_params.get(PARAM_DNS_TIMEOUT) or 10.0)
        return {"dns_timeout_ns": round(seconds * NS_PER_SECOND)}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceDns)
