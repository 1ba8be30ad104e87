"""trace dns's user-space decoding: names from wire labels, and distinct rows by hash."""

from __future__ import annotations

import numpy as np
import pytest

import igrun.plugins.trace_dns as dns


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"\x03www\x07example\x03com\x00", "www.example.com."),
        (b"\x03www\x07exam", "www."),  # a label past the end is not read
        (b"\x00", ""),
        (b"", ""),
        (b"\x01a" * 127 + b"\x00", "a." * 127),
    ],
)
def test_label_text(raw: bytes, text: str) -> None:
    assert dns.label_text(raw) == text


def test_distinct_rows_and_a_hash_that_collides(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = np.zeros((6, 16), dtype=np.uint8)
    rows[1, 0] = rows[3, 0] = 1
    rows[4, 5] = 7
    first, codes = dns.distinct_rows(rows)
    assert (rows[first[codes]] == rows).all() and len(first) == 3
    monkeypatch.setattr(dns, "_MULTIPLIERS", np.zeros(64, dtype=np.uint64))  # every hash is 0
    first, codes = dns.distinct_rows(rows)
    assert (rows[first[codes]] == rows).all() and len(first) == 3
    assert codes.tolist() == [0, 1, 0, 1, 2, 0]
