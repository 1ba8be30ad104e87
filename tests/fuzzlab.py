"""Settings shared by the fuzz tests (``tests/test_fuzz_*.py``).

Each test runs a modest number of examples, so that the whole fuzz set adds well under a
minute to a test run; ``IGRUN_FUZZ_SCALE=20`` runs twenty times as many, for a deeper search
before a release or after changing what a fuzz test covers. Examples are drawn afresh each
run (no database is kept): a failure prints the example that reproduces it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def fuzz_settings(examples: int) -> settings:
    scale = float(os.environ.get("IGRUN_FUZZ_SCALE", "1"))
    return settings(
        max_examples=max(1, round(examples * scale)),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
