"""The pure parts: formatting, filters, the coalescing counter, the payload check."""

from __future__ import annotations

from tui.model import (
    LOG_LIMIT,
    NodeView,
    duration,
    heard_within,
    hops_histogram,
    message_bytes,
    payload_check,
    sparkline,
)


def test_duration_keeps_two_units() -> None:
    assert duration(5) == "5s"
    assert duration(65) == "1m 05s"
    assert duration(3 * 3600 + 60) == "3h 01m"
    assert duration(2 * 86400 + 7200) == "2d 2h"
    assert duration(None) == "—"


def test_filters_and_histogram() -> None:
    peers = [{"hops": 1, "last_heard_s_ago": 10.0}, {"hops": None, "last_heard_s_ago": 9000.0}]
    assert len(heard_within(peers, 3600.0)) == 1
    assert len(heard_within(peers, None)) == 2
    lines = hops_histogram(peers, width=4)
    assert lines[0].startswith(" 1 hop ") and lines[-1].startswith(" ? hops")


def test_events_coalesce_into_versions_and_the_log_is_bounded() -> None:
    view = NodeView()
    for n in range(LOG_LIMIT + 10):
        view.record_event("messages", {"event": "x", "n": n}, now=1.0)
    assert len(view.lines) == LOG_LIMIT
    assert view.lines_added == LOG_LIMIT + 10
    # Events move only the lines: the Log repaints on its tick, the other screens not at all.
    assert view.version == 0


def test_payload_check_and_weight() -> None:
    assert payload_check("") == (None, None)
    assert payload_check('{"a": 1}') == ({"a": 1}, None)
    value, problem = payload_check('{"a": ')
    assert value is None and problem is not None and "not JSON" in problem
    assert message_bytes("kai://a/echo", "echo", "x" * 600) > 500
    assert sparkline([0.0, 1.0]) == "▁█"
