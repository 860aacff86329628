"""The digest beacon: at once on the first change, a burst within the gap is one publication,
and a keepalive when nothing changes."""

from __future__ import annotations

import pytest

from kai_mesh.core.errors import UsageError
from kai_mesh.core.sync.beacon import Beacon


def test_first_then_bursts_coalesce_then_keepalive() -> None:
    b = Beacon(min_gap=1.0, keepalive=30.0)
    assert b.get_timer() == 0.0 and b.handle_timer(0.0)  # the first, at start
    assert b.get_timer() == 30.0
    b.changed()
    assert not b.handle_timer(0.2)
    b.changed()
    assert not b.handle_timer(0.5)  # within the gap: later, once
    assert b.get_timer() == 1.0
    assert not b.handle_timer(0.9)
    assert b.handle_timer(1.0)
    assert not b.handle_timer(1.5)  # nothing pending: the keepalive only
    assert b.get_timer() == 31.0
    b.changed()
    assert b.get_timer() == 2.0 and b.handle_timer(5.0)  # past the gap: at once
    assert not b.handle_timer(34.0) and b.handle_timer(35.0)  # keepalive


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError):
        Beacon(min_gap=-1)
    with pytest.raises(UsageError):
        Beacon(keepalive=0)
