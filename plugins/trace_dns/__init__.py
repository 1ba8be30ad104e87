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
import socket
from typing import Any, ClassVar

import numpy as np

from igrun.core import Batch, Category, Column, Field, Kind, ParamDesc, Schema, hookimpl
from igrun.core.errors import ParamError
from igrun.core.events import fields
from igrun.core.events.fields import duration_field
from igrun.core.gadget import GadgetContext
from igrun.core.params import TypeHint
from igrun.plugins._packet import (
    PACKET_TYPES,
    UNKNOWN_OWNER,
    PacketTracer,
    owner_fields,
    packet_types,
    protocols,
)

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
    # One dict lookup per row and one decode per distinct name: cheaper than sorting the
    # 256-byte names to find the distinct ones.
    raw = np.ascontiguousarray(batch.member("name")).view(np.uint8).reshape(len(batch), -1)
    texts: dict[bytes, str] = {}
    out = np.empty(len(batch), dtype=object)
    out[:] = [
        texts.get(n) or texts.setdefault(n, label_text(n))
        for n in raw.view(f"S{raw.shape[1]}").reshape(-1).tolist()
    ]
    return out


def _qr(batch: Batch) -> Any:
    return np.where(batch.member("qr") != 0, "R", "Q").astype(object)


def _qtypes(batch: Batch) -> Any:
    return fields.per_distinct(batch.member("qtype"), lambda v: QTYPES.get(v, "UNASSIGNED"))


def _rcodes(batch: Batch) -> Any:
    codes = fields.per_distinct(batch.member("rcode"), lambda v: RCODES.get(v, "UNKNOWN"))
    return np.where(batch.member("qr") != 0, codes, "").astype(object)


def ip_texts(addrs: Any, versions: Any) -> Any:
    """16-byte addresses (IPv4 in the first four) as text: the IPv4 ones found distinct as
    32-bit integers (a fast sort), the IPv6 ones through a dict."""
    raw = np.ascontiguousarray(addrs).view(np.uint8).reshape(-1, 16)
    out = np.empty(len(raw), dtype=object)
    v4 = np.asarray(versions) == 4
    if v4.any():
        words = np.ascontiguousarray(raw[v4, :4]).view("<u4").reshape(-1)
        out[v4] = fields.per_distinct(
            words, lambda w: socket.inet_ntoa(int(w).to_bytes(4, "little"))
        )
    if not v4.all():
        texts: dict[bytes, str] = {}
        out[~v4] = [
            texts.get(b) or texts.setdefault(b, socket.inet_ntop(socket.AF_INET6, b))
            for b in raw[~v4].view("V16").reshape(-1).tolist()
        ]
    return out


class _Ips:
    """Decoder of an address member of ``conn``."""

    def __init__(self, member: str) -> None:
        self.member = member

    def __call__(self, batch: Batch) -> Any:
        return ip_texts(batch.member(self.member), batch.member("conn.ipversion"))


def _nameservers(batch: Batch) -> Any:
    return np.where(batch.member("qr") != 0, batch["srcIP"], batch["dstIP"]).astype(object)


def _address(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    return str(addr.ipv4_mapped or addr)


_NO_ADDRESSES: list[str] = []


def _addresses(batch: Batch) -> Any:
    """Each row's addresses as a list; rows with the same addresses share one list object
    (and those without, one empty list), so the output encodes each distinct list once."""
    counts = np.minimum(batch.member("anaddrcount"), MAX_ADDRS)
    out = np.empty(len(batch), dtype=object)
    out[:] = [_NO_ADDRESSES] * len(batch)
    rows = np.nonzero(counts)[0]
    if not len(rows):
        return out
    raw = np.ascontiguousarray(batch.member("anaddr")).view(np.uint8).reshape(len(batch), -1)
    lists: dict[bytes, list[str]] = {}
    for row in rows.tolist():
        used = raw[row, : 16 * int(counts[row])].tobytes()
        listed = lists.get(used)
        if listed is None:
            listed = lists[used] = [_address(used[i : i + 16]) for i in range(0, len(used), 16)]
        out[row] = listed
    return out


_MULTIPLIERS = np.random.default_rng(0x1D5).integers(1, 2**63, size=64, dtype=np.uint64) | 1
"""Odd 64-bit factors of the row hash in :func:`distinct_rows`."""


def distinct_rows(rows: Any) -> tuple[Any, Any]:
    """The distinct rows of a ``(n, w)`` byte array (``w`` a multiple of 8, at most 512):
    the index of each one's first row, and each row's position among them. Rows are told
    apart by a 64-bit hash sorted as integers (fast), then every row is compared with the
    row it was matched to, byte for byte: a hash collision falls back to a dict, never to a
    wrong answer."""
    rows = np.ascontiguousarray(rows)
    words = rows.view("<u8").reshape(len(rows), -1)
    keys = (words * _MULTIPLIERS[: words.shape[1]]).sum(axis=1, dtype=np.uint64)
    _, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    codes = codes.reshape(-1)
    if bool((rows == rows[first[codes]]).all()):
        return first, codes
    index: dict[bytes, int] = {}
    keyed = rows.view(f"V{rows.shape[1]}").reshape(-1).tolist()
    codes = np.fromiter((index.setdefault(r, len(index)) for r in keyed), np.intp, len(rows))
    first = np.zeros(len(index), dtype=np.intp)
    first[codes[::-1]] = np.arange(len(rows) - 1, -1, -1)
    return first, codes


def _coded(rows: Any, text: Any) -> tuple[Any, Any]:
    """A table of ``text(row bytes)`` per distinct row and each row's position in it."""
    first, codes = distinct_rows(rows)
    table = np.empty(len(first), dtype=object)
    table[:] = [text(rows[i].tobytes()) for i in first.tolist()]
    return table, codes


def _ip_text(key: bytes) -> str:
    if key[16] == 6:
        return socket.inet_ntop(socket.AF_INET6, key[:16])
    return socket.inet_ntoa(key[:4])


def _ip_coded(batch: Batch, member: str) -> tuple[Any, Any]:
    raw = np.ascontiguousarray(batch.member(member)).view(np.uint8).reshape(len(batch), 16)
    version = batch.member("conn.ipversion").astype(np.uint8)
    if bool((version == 4).all()):  # IPv4 alone: distinct as 32-bit integers, a fast sort
        words, codes = np.unique(
            np.ascontiguousarray(raw[:, :4]).view("<u4").reshape(-1), return_inverse=True
        )
        table = np.empty(len(words), dtype=object)
        table[:] = [socket.inet_ntoa(int(w).to_bytes(4, "little")) for w in words.tolist()]
        return table, codes.reshape(-1)
    rows = np.zeros((len(batch), 24), dtype=np.uint8)
    rows[:, :16] = raw
    rows[:, 16] = version
    return _coded(rows, _ip_text)


def _address_list(key: bytes) -> list[str]:
    count = key[-8]
    return [_address(key[i : i + 16]) for i in range(0, 16 * count, 16)]


def _addresses_coded(batch: Batch) -> tuple[Any, Any]:
    raw = np.ascontiguousarray(batch.member("anaddr")).view(np.uint8).reshape(len(batch), -1)
    rows = np.zeros((len(batch), raw.shape[1] + 8), dtype=np.uint8)
    rows[:, : raw.shape[1]] = raw
    rows[:, raw.shape[1]] = np.minimum(batch.member("anaddrcount"), MAX_ADDRS)
    return _coded(rows, _address_list)


def _comm_text(key: bytes) -> str:
    if not key[16]:
        return UNKNOWN_OWNER
    return key[:16].partition(b"\0")[0].decode("utf-8", "replace")


def _comms_coded(batch: Batch) -> tuple[Any, Any]:
    comm = np.ascontiguousarray(batch.member("proc.comm")).view(np.uint8).reshape(len(batch), -1)
    rows = np.zeros((len(batch), 24), dtype=np.uint8)
    known = batch.member("owner_known") != 0
    rows[:, :16] = np.where(known[:, None], comm[:, :16], 0)
    rows[:, 16] = known
    return _coded(rows, _comm_text)


def _tables() -> dict[str, Any]:
    return {
        "qr": np.array(["Q", "R"], dtype=object),
        "type": np.array([*PACKET_TYPES, "UNKNOWN"], dtype=object),
        "proto": np.array([{6: "TCP", 17: "UDP"}.get(p, str(p)) for p in range(256)],
                          dtype=object),
        "rcode": np.array([RCODES.get(c, "UNKNOWN") for c in range(16)] + [""], dtype=object),
    }  # fmt: skip


TABLES: dict[str, Any] = {}
"""Constant tables (filled once): the same objects batch after batch, so the output encodes
them once for the whole stream."""


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
    ring_buffer_size = 8 * 1024 * 1024
    """16,384 events: a burst of some 50 ms at 300,000 events/s waits there for the reader."""
    params = (
        ParamDesc(
            PARAM_DNS_TIMEOUT,
            type_hint=TypeHint.DURATION,
            default="10s",
            description="how long to wait for the response to a query (no latency after that)",
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
            Field("srcIP", Kind.STR, "source address", decode=_Ips("conn.saddr"),
                  column=_HIDDEN, omit_empty=True),
            Field("dstIP", Kind.STR, "destination address", decode=_Ips("conn.daddr"),
                  column=_HIDDEN, omit_empty=True),
            Field("srcPort", Kind.UINT, "source port", member="conn.sport",
                  column=_HIDDEN_RIGHT, omit_empty=True),
            Field("dstPort", Kind.UINT, "destination port", member="conn.dport",
                  column=_HIDDEN_RIGHT, omit_empty=True),
            Field("proto", Kind.STR, "transport protocol (UDP or TCP)", json="protocol",
                  decode=protocols, column=Column(max_width=5, hidden=True), omit_empty=True),
            Field("id", Kind.STR, "the message's id, in hex", member="id_text",
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

    def transform(self, batch: Batch) -> Batch:
        """Every decoded field as a coded column (a table and each row's position): the
        output writes each distinct text once, not once per event."""
        if not len(batch):
            return batch
        qr = batch.member("qr").astype(np.int32) & 1
        batch.set_coded("qr", TABLES["qr"], qr)
        batch.set_coded("type", TABLES["type"], np.minimum(batch.member("pkt_type"), 8))
        batch.set_coded("proto", TABLES["proto"], batch.member("proto").astype(np.int32))
        qtypes, qtype_codes = np.unique(batch.member("qtype"), return_inverse=True)
        qtype_texts = np.empty(len(qtypes), dtype=object)
        qtype_texts[:] = [QTYPES.get(t, "UNASSIGNED") for t in qtypes.tolist()]
        batch.set_coded("qtype", qtype_texts, qtype_codes.reshape(-1))
        rcode = np.where(qr != 0, batch.member("rcode").astype(np.int32) & 15, 16)
        batch.set_coded("rcode", TABLES["rcode"], rcode)
        src, src_codes = _ip_coded(batch, "conn.saddr")
        dst, dst_codes = _ip_coded(batch, "conn.daddr")
        batch.set_coded("srcIP", src, src_codes)
        batch.set_coded("dstIP", dst, dst_codes)
        servers = np.concatenate([src, dst])
        batch.set_coded("nameserver", servers, np.where(qr != 0, src_codes, dst_codes + len(src)))
        names = np.ascontiguousarray(batch.member("name")).view(np.uint8).reshape(len(batch), -1)
        batch.set_coded("name", *_coded(names, label_text))
        batch.set_coded("addresses", *_addresses_coded(batch))
        batch.set_coded("comm", *_comms_coded(batch))
        return batch

    def init(self, ctx: GadgetContext) -> None:
        if not TABLES:
            TABLES.update(_tables())
        super().init(ctx)

    def constants(self, ctx: GadgetContext) -> dict[str, int | bool | bytes]:
        seconds = float(ctx.gadget_params.get(PARAM_DNS_TIMEOUT) or 10.0)
        return {"dns_timeout_ns": round(seconds * NS_PER_SECOND)}


@hookimpl
def igrun_register_gadgets(register: Any) -> None:
    register(TraceDns)
