"""Hypothesis profiles for the parser fuzzers.

``ci`` (the default) is small, fast and seeded (``derandomize``), so a failure reproduces on
every machine and the whole folder runs in well under a minute. ``fuzz`` searches much
longer with fresh randomness each run; choose it with ``SLMOPS_FUZZ_PROFILE=fuzz``.
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

# The workspace fixtures are function-scoped on purpose (one workspace per test); the
# fuzzers that store things check their own invariants per example instead.
_SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

settings.register_profile(
    "ci",
    max_examples=50,
    derandomize=True,
    deadline=timedelta(seconds=5),
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=2000,
    derandomize=False,
    deadline=timedelta(seconds=5),
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)
settings.load_profile(os.environ.get("SLMOPS_FUZZ_PROFILE", "ci"))
