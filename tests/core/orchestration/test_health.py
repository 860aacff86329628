"""The replica health machine: Kubernetes probe semantics, restarts, giving up."""

from __future__ import annotations

import pytest

from kai_mesh.core.errors import UsageError
from kai_mesh.core.orchestration.health import (
    GiveUp,
    Probe,
    ProbePolicy,
    ReplicaHealth,
    Restart,
)


def _probe(h: ReplicaHealth, now: float, ok: bool) -> Restart | GiveUp | None:
    assert h.get_timer() is not None and h.get_timer() <= now  # type: ignore[operator]
    assert isinstance(h.handle_timer(now), Probe)
    return h.probe_result(ok, now, "boom" if not ok else "")


def test_not_ready_until_a_probe_passes_and_probes_pause_while_the_agent_is_down() -> None:
    h = ReplicaHealth(ProbePolicy(interval=10))
    assert h.get_timer() is None and h.state == "starting"
    h.agent(True, 100.0)
    assert h.get_timer() == 100.0  # at once
    assert not h.ready
    assert _probe(h, 100.0, True) is None
    assert h.ready and h.get_timer() == 110.0
    assert h.handle_timer(105.0) is None  # not due
    h.agent(False, 107.0)
    assert h.state == "starting" and h.get_timer() is None


def test_no_second_probe_while_one_is_out() -> None:
    h = ReplicaHealth(ProbePolicy(interval=10))
    h.agent(True, 0.0)
    assert isinstance(h.handle_timer(0.0), Probe)
    assert h.get_timer() is None and h.handle_timer(50.0) is None


def test_unready_and_restarted_after_failure_threshold_failures_in_a_row() -> None:
    h = ReplicaHealth(ProbePolicy(interval=10, failure_threshold=3))
    h.agent(True, 0.0)
    _probe(h, 0.0, True)
    assert _probe(h, 10.0, False) is None and h.ready  # one failure: still ready
    assert _probe(h, 20.0, True) is None  # a pass resets the run
    assert _probe(h, 30.0, False) is None
    assert _probe(h, 40.0, False) is None and h.ready
    action = _probe(h, 50.0, False)
    assert isinstance(action, Restart) and "boom" in action.reason
    assert h.state == "unready" and not h.ready


def test_gives_up_after_restarts_that_never_bring_it_back_and_a_pass_clears_the_count() -> None:
    policy = ProbePolicy(interval=1, failure_threshold=2, give_up_after=2)
    h = ReplicaHealth(policy)
    now = 0.0
    actions = []
    for _ in range(3):  # three lives, each failing twice
        h.agent(True, now)
        for _ in range(2):
            actions.append(_probe(h, now, False))
            now += 1
        h.agent(False, now)  # the node restarts it
    assert [type(a).__name__ for a in actions] == [
        "NoneType", "Restart", "NoneType", "Restart", "NoneType", "GiveUp",
    ]  # fmt: skip
    assert h.state == "failed" and h.get_timer() is None
    h.agent(True, now)  # a failed replica stays failed: the owner moves it
    assert h.state == "failed" and h.get_timer() is None

    h2 = ReplicaHealth(policy)
    h2.agent(True, 0.0)
    _probe(h2, 0.0, False)
    assert isinstance(_probe(h2, 1.0, False), Restart)
    h2.agent(False, 2.0)
    h2.agent(True, 3.0)
    _probe(h2, 3.0, True)  # it came back: the count starts over
    assert h2.restarts == 0 and h2.ready


def test_an_answer_from_a_previous_life_is_ignored() -> None:
    h = ReplicaHealth(ProbePolicy(interval=10))
    h.agent(True, 0.0)
    assert isinstance(h.handle_timer(0.0), Probe)
    h.agent(False, 1.0)
    assert h.probe_result(True, 2.0) is None and h.state == "starting"


def test_probe_timeout_fits_in_the_period_and_bad_policies_are_refused() -> None:
    assert ProbePolicy(interval=2).probe_timeout == 2
    assert ProbePolicy(interval=30).probe_timeout == 5
    with pytest.raises(UsageError):
        ProbePolicy(interval=0)
    with pytest.raises(UsageError):
        ProbePolicy(interval=1, failure_threshold=0)
