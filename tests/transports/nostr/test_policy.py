"""The pool's timing and health rules (rust-nostr's numbers), as plain numbers."""

from __future__ import annotations

import pytest

from transports.nostr import _policy
from transports.nostr._policy import RateLimitBackoff, demoted, retry_interval, success_rate


@pytest.mark.parametrize(
    ("attempts", "successes", "expected"),
    [
        (1, 1, 10.0),  # connected, then dropped: the base interval
        (1, 0, 10.0),  # diff 1: 1 + 1 // 2 = 1
        (2, 0, 20.0),
        (3, 0, 20.0),
        (4, 0, 30.0),
        (10, 0, 60.0),
        (1000, 0, 60.0),  # capped
        (12, 10, 20.0),
    ],
)
def test_retry_interval_without_jitter(attempts: int, successes: int, expected: float) -> None:
    assert retry_interval(attempts, successes, 0.0) == expected


def test_jitter_is_added_after_the_cap() -> None:
    assert retry_interval(1000, 0, 1.0) == 63.0
    assert retry_interval(1000, 0, -1.0) == 57.0
    assert retry_interval(1000, 0, 5.0) == 63.0  # a draw outside -1..1 is clamped
    assert retry_interval(1, 1, -1.0) == 7.0


def test_demotion_below_ninety_percent() -> None:
    assert success_rate(0, 0) == 1.0 and not demoted(0, 0)
    assert not demoted(10, 9)
    assert demoted(10, 8)
    assert demoted(1, 0)


def test_rate_limit_backoff_doubles_to_a_cap_and_resets() -> None:
    b = RateLimitBackoff()
    assert b.wait(0.0) == 0.0
    waits = []
    for _ in range(8):
        b.limited(100.0)
        waits.append(b.wait(100.0))
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert b.wait(200.0) == 0.0
    b.accepted()
    b.limited(0.0)
    assert b.wait(0.0) == _policy.RATE_LIMIT_FIRST
