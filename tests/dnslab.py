"""A small DNS server and client for the DNS tests, written with raw bytes (no resolver library):
run as a script inside a network namespace.

    python3 dnslab.py serve                       # UDP and TCP port 53, IPv4 and IPv6
    python3 dnslab.py query SERVER NAME TYPE ID [tcp]
    python3 dnslab.py query-later SERVER NAME ID  # connect now, ask after a line on stdin
    python3 dnslab.py raw SERVER HEX              # one UDP datagram of those bytes

The server knows ``host1.igrun.test`` (two A records, one AAAA record, compressed names) and
answers NXDOMAIN for anything else. The client prints its pid, then the response's rcode and
answer count.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading

ZONE = {
    ("host1.igrun.test", 1): [bytes([10, 9, 8, 7]), bytes([10, 9, 8, 6])],
    ("host1.igrun.test", 28): [socket.inet_pton(socket.AF_INET6, "fd00:53::7")],
}
TYPES = {"A": 1, "AAAA": 28, "MX": 15}


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"


def query(qid: int, name: str, qtype: int) -> bytes:
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
        + encode_name(name)
        + struct.pack("!HH", qtype, 1)
    )


def decode_question(msg: bytes) -> tuple[str, int, int]:
    """The question's name, its end offset and its type (ValueError when malformed)."""
    labels, pos = [], 12
    while True:
        if pos >= len(msg):
            raise ValueError("name runs out")
        n = msg[pos]
        if n == 0:
            break
        if n & 0xC0 or pos + 1 + n > len(msg):
            raise ValueError("bad label")
        labels.append(msg[pos + 1 : pos + 1 + n].decode())
        pos += 1 + n
    (qtype,) = struct.unpack("!H", msg[pos + 1 : pos + 3])
    return ".".join(labels), pos + 5, qtype


def answer(msg: bytes) -> bytes | None:
    if len(msg) < 12 or msg[2] & 0x80:  # no query: never answered
        return None
    try:
        name, end, qtype = decode_question(msg)
    except (ValueError, struct.error):
        return None
    records = ZONE.get((name.lower(), qtype))
    rcode = 0 if records is not None else 3
    records = records or []
    header = struct.pack("!HHHHHH", struct.unpack("!H", msg[:2])[0], 0x8180 | rcode, 1,
                         len(records), 0, 0)  # fmt: skip
    body = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(r)) + r for r in records)
    return header + msg[12:end] + body


def serve_udp(family: int, addr: str) -> None:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((addr, 53))
    while True:
        msg, peer = sock.recvfrom(4096)
        reply = answer(msg)
        if reply is not None:
            sock.sendto(reply, peer)


def serve_tcp() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 53))
    sock.listen(16)
    while True:
        conn, _ = sock.accept()
        with conn:
            data = b""
            while len(data) < 2 or len(data) < 2 + struct.unpack("!H", data[:2])[0]:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            reply = answer(data[2:])
            if reply is not None:
                conn.sendall(struct.pack("!H", len(reply)) + reply)


def serve() -> None:
    threads = [
        threading.Thread(target=serve_udp, args=(socket.AF_INET, "0.0.0.0"), daemon=True),
        threading.Thread(target=serve_udp, args=(socket.AF_INET6, "::"), daemon=True),
        threading.Thread(target=serve_tcp, daemon=True),
    ]
    for t in threads:
        t.start()
    print("serving", flush=True)
    threading.Event().wait()


def ask(server: str, name: str, qtype: str, qid: int, tcp: bool) -> None:
    print(os.getpid(), flush=True)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    msg = query(qid, name, TYPES[qtype])
    if tcp:
        with socket.create_connection((server, 53), timeout=5) as sock:
            sock.sendall(struct.pack("!H", len(msg)) + msg)
            reply = sock.recv(4096)[2:]
    else:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.sendto(msg, (server, 53))
        reply = sock.recv(4096)
    flags, _, ancount = struct.unpack("!HHH", reply[2:8])
    print(flags & 0xF, ancount, flush=True)


def ask_later(server: str, name: str, qid: int) -> None:
    """A UDP socket connected now; the query goes (with send(), not sendto()) once a line
    arrives on stdin."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.connect((server, 53))
    print(os.getpid(), flush=True)
    sys.stdin.readline()
    sock.send(query(qid, name, 1))
    flags, _, ancount = struct.unpack("!HHH", sock.recv(4096)[2:8])
    print(flags & 0xF, ancount, flush=True)


def raw(server: str, payload: str) -> None:
    print(os.getpid(), flush=True)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sendto(bytes.fromhex(payload), (server, 53))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "serve":
        serve()
    elif command == "query":
        ask(args[0], args[1], args[2], int(args[3], 0), len(args) > 4 and args[4] == "tcp")
    elif command == "query-later":
        ask_later(args[0], args[1], int(args[2], 0))
    elif command == "raw":
        raw(args[0], args[1])
