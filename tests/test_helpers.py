"""The helpers gadgets share: byte order, addresses, protocols, C strings, time."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from igrun.core.events import helpers


def test_byte_order() -> None:
    little = sys.byteorder == "little"
    assert helpers.htonl(0x01020304) == (0x04030201 if little else 0x01020304)
    assert helpers.htons(0x0102) == (0x0201 if little else 0x0102)


def test_addresses_round_trip() -> None:
    v4 = helpers.ip_string_to_bytes("10.231.0.1")
    assert v4 == bytes([10, 231, 0, 1]) + bytes(12)
    assert helpers.ip_string_from_bytes(v4, 4) == "10.231.0.1"
    v6 = helpers.ip_string_to_bytes("fe80::1")
    assert len(v6) == 16 and helpers.ip_string_from_bytes(v6, 6) == "fe80::1"
    assert helpers.ip_string_from_bytes(v6, 0) == ""
    as_int = helpers.ip_string_to_uint32("127.0.0.1")
    assert as_int.to_bytes(4, sys.byteorder) == bytes([127, 0, 0, 1])
    with pytest.raises(ValueError):
        helpers.ip_string_to_uint32("::1")


def test_vectorised_addresses_match_scalar() -> None:
    words = np.array([helpers.ip_string_to_uint32(a) for a in ("1.2.3.4", "127.0.0.1")], "<u4")
    assert list(helpers.ipv4_strings(words)) == ["1.2.3.4", "127.0.0.1"]
    buffers = np.frombuffer(
        helpers.ip_string_to_bytes("192.168.0.9") + helpers.ip_string_to_bytes("::1"), "S16"
    )
    assert list(helpers.ip_strings(buffers, np.array([4, 6]))) == ["192.168.0.9", "::1"]


def test_protocols_and_families() -> None:
    assert helpers.proto_string(6) == "TCP"
    assert helpers.proto_string(17) == "UDP"
    assert helpers.proto_string(200) == "proto200"
    assert helpers.ip_version_from_af(2) == 4
    assert helpers.ip_version_from_af(10) == 6
    assert helpers.ip_version_from_af(1) == 0


def test_cstrings() -> None:
    assert helpers.from_cstring(b"bash\0junk") == "bash"
    assert helpers.from_cstring(b"full") == "full"
    assert helpers.from_cstring_n(b"abcdef\0", 3) == "abc"


def test_wall_time_from_boot_time() -> None:
    boot = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    wall = helpers.wall_time_from_boot_time(boot)
    assert abs(wall - time.time_ns()) < 50_000_000
    arr = helpers.wall_times_from_boot_times(np.array([boot, 0], dtype=np.uint64))
    assert abs(int(arr[0]) - wall) < 50_000_000
    assert abs(int(arr[1]) - time.time_ns()) < 50_000_000  # no timestamp: now


def test_rfc3339_keeps_nanoseconds() -> None:
    text = helpers.format_rfc3339_ns(1_700_000_000_123_456_789)
    assert text[10] == "T" and ".123456789" in text
    assert text[-6] in "+-" and text[-3] == ":"


@pytest.mark.bpf
def test_ktime_get_boot_ns_is_available() -> None:
    assert helpers.has_bpf_ktime_get_boot_ns() is True
