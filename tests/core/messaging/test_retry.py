from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import UsageError
from kai_mesh.core.messaging.retry import RetryPolicy


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    policy = RetryPolicy(base=2, cap=15, jitter=0.25)
    assert [policy.delay(a, 0.0) for a in range(1, 6)] == [2, 4, 8, 15, 15]
    assert policy.delay(3, 0.5) == pytest.approx(8 * 0.875)
    assert policy.delay(10_000, 0.0) == 15  # no overflow however long it has been tried


@given(st.integers(1, 10_000), st.floats(0, 1, exclude_max=True))
def test_delay_stays_within_its_bounds(attempts: int, u: float) -> None:
    policy = RetryPolicy()
    assert policy.base * (1 - policy.jitter) <= policy.delay(attempts, u) <= policy.cap


def test_handoff_and_bad_settings() -> None:
    policy = RetryPolicy(handoff_after=60)
    assert not policy.handoff_due(100.0, 159.9)
    assert policy.handoff_due(100.0, 160.0)
    with pytest.raises(UsageError):
        RetryPolicy(base=0)
    with pytest.raises(UsageError):
        RetryPolicy(base=20, cap=10)
    with pytest.raises(UsageError):
        RetryPolicy(jitter=1)
    with pytest.raises(UsageError):
        RetryPolicy().delay(0, 0.1)
