"""The pure parts: formatting, filters, the coalescing counter, the payload check."""

from __future__ import annotations

import segno

from tui.model import (
    LINK_EVERY,
    LINK_LIMIT,
    LOG_LIMIT,
    NodeView,
    duration,
    heard_within,
    hops_histogram,
    link_trend,
    message_bytes,
    payload_check,
    peer_key,
    sparkline,
)
from tui.qr import QUIET, qr_lines, qr_matrix


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


def test_link_history_takes_one_sample_a_minute_and_marks_peers_not_alive() -> None:
    view = NodeView()
    alive = {"node_id": "aa", "transport": "reticulum", "status": "alive", "rtt_ms": 100.0}
    view.set_peers([alive], now=0.0)
    view.set_peers([{**alive, "rtt_ms": 900.0}], now=30.0)  # within the minute: not sampled
    view.set_peers([{**alive, "rtt_ms": 400.0}], now=LINK_EVERY)
    view.set_peers([{**alive, "status": "suspect"}], now=2 * LINK_EVERY)
    assert list(view.link_history[peer_key(alive)]) == [100.0, 400.0, None]
    assert view.peers[0]["status"] == "suspect"  # the rows themselves are always the newest
    for n in range(LINK_LIMIT + 5):
        view.set_peers([alive], now=(3 + n) * LINK_EVERY)
    assert len(view.link_history[peer_key(alive)]) == LINK_LIMIT


def test_link_trend_scales_to_the_slowest_and_shows_gaps() -> None:
    assert link_trend([100.0, 800.0, None, 400.0]) == "▁█✗▄"
    assert link_trend([]) == ""
    assert link_trend([None, None]) == "✗✗"
    assert len(link_trend([1.0] * 20, width=8)) == 8


def test_a_node_on_two_transports_is_two_rows() -> None:
    one = {"node_id": "aa", "transport": "reticulum"}
    assert peer_key(one) != peer_key({**one, "transport": "nostr"})


def test_qr_lines_carry_every_module_of_the_code() -> None:
    token = "kaimesh1:" + "Az09-_" * 70  # an invite token's length and alphabet (~430)
    lines = qr_lines(token)
    code = segno.make(token, error="l", micro=False, boost_error=False)
    expected = [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=QUIET)]
    got = qr_matrix(lines)
    assert got[: len(expected)] == expected
    assert not any(any(row) for row in got[len(expected) :])  # the padding row is blank
    assert len(lines) == (len(expected) + 1) // 2 and {len(line) for line in lines} == {
        len(expected[0])
    }
    assert code.version == 14  # why the dialog says it needs more than 24 lines
