"""Shared test settings.

Hypothesis: no per-example deadline (a loaded 2-core CI machine makes timings noisy; tests assert
behaviour, not speed); the `ci` profile runs more examples.

`KAI_MESH_REQUIRE_PRIVILEGED_TESTS=1` (set by .ci/run) turns a skip for missing root or namespace
support into a failure, so CI can never pass by skipping the tests that need them.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "ci", deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def skip_unless_privileged(reason: str) -> None:
    """Skip with `reason`, or fail when CI demands the privileged tests run."""
    if os.environ.get("KAI_MESH_REQUIRE_PRIVILEGED_TESTS") == "1":
        pytest.fail(f"required in CI but cannot run: {reason}")
    pytest.skip(reason)
