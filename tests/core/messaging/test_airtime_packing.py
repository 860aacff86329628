"""`InterfaceQueue.pop_packets`: frames for one peer leave packed into one packet, charged once,
critical first, and never past the budget for a non-critical rider."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kai_mesh.core.messaging.airtime import EU868_DUTY, AirtimeBudget, InterfaceQueue
from kai_mesh.core.messaging.batch import batch_size
from kai_mesh.core.messaging.envelope import Priority

ROOM = 430


@dataclass(frozen=True)
class Frame:
    ident: int
    peer: str
    size: int

    def __len__(self) -> int:
        return self.size


def peer_of(frame: Frame) -> str:
    return frame.peer


def room(frame: Frame) -> int:
    return ROOM


def test_frames_for_one_peer_share_a_packet_charged_once() -> None:
    budget = AirtimeBudget(5000, EU868_DUTY)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 50, {})
    frames = [Frame(k, "x" if k % 2 == 0 else "y", 100) for k in range(6)]
    for f in frames:
        queue.push(f, Priority.NORMAL, False, 0.0)
    packets = queue.pop_packets(0.0, peer_of, room)
    assert [[f.ident for f in p] for p in packets] == [[0, 2, 4], [1, 3, 5]]
    assert len(queue) == 0
    one_packet = budget.frame_bits(batch_size([100, 100, 100]))
    assert budget.used(0.0) == pytest.approx(2 * one_packet / 5000)  # two headers, not six
    assert queue.stats.sent[Priority.NORMAL] == 6


def test_critical_leads_and_riders_respect_room_and_budget() -> None:
    # A budget with room for about one full packet in its short window.
    budget = AirtimeBudget(5000, 1.0, short_window=1.0, short_duty_cycle=0.9)
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 50, {})
    for k in range(5):
        queue.push(Frame(k, "x", 150), Priority.LOW, False, 0.0)
    queue.push(Frame(9, "x", 150), Priority.CRITICAL, False, 0.0)
    first = queue.pop_packets(0.0, peer_of, room)
    assert first[0][0].ident == 9  # critical first
    assert [f.ident for f in first[0]] == [9, 0]  # two 150-byte frames fill a 430-byte packet
    assert budget.frame_bits(batch_size([150, 150])) <= 4500  # it fitted the 0.9 s window
    # The window is spent now: the rest waits for it, nothing rides over budget.
    assert all(len(p) <= 2 for p in first)
    assert sum(len(p) for p in first) < 6
    assert len(queue) == 6 - sum(len(p) for p in first)


def test_a_critical_frame_over_budget_takes_no_non_critical_rider() -> None:
    budget = AirtimeBudget(5000, 1.0, short_window=1.0, short_duty_cycle=0.9)
    budget.spend(400, 0.0)  # the short window is full
    queue: InterfaceQueue[Frame] = InterfaceQueue(budget, 50, {})
    queue.push(Frame(1, "x", 50), Priority.NORMAL, False, 0.0)
    queue.push(Frame(2, "x", 50), Priority.CRITICAL, False, 0.0)
    queue.push(Frame(3, "x", 50), Priority.CRITICAL, False, 0.0)
    packets = queue.pop_packets(0.0, peer_of, room)
    assert [[f.ident for f in p] for p in packets] == [[2, 3]]  # criticals go, together
    assert [f.ident for f in queue.pop_packets(10.0, peer_of, room)[0]] == [1]
