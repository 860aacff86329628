"""The failure detector's answer to each message, one detector driven by hand.

Where `test_membership.py` checks the protocol's outcomes in a simulated mesh, these pin what a
single message does: who a reply goes to, what it carries, and when a message is ignored. Each was
written against a mutant that the simulator let through (docs/mutation.md).
"""

from __future__ import annotations

import random

import pytest

from kai_mesh.core.errors import Malformed, UsageError
from kai_mesh.core.liveness.membership import (
    AliveReceived,
    DetectorConfig,
    FailureDetector,
    Heard,
    IndirectAckReceived,
    IndirectProbeRequested,
    NackReceived,
    PeerFailed,
    PeerRecovered,
    PeerState,
    PeerSuspected,
    ProbeAcked,
    ProbeReceived,
    SendAlive,
    SendIndirectAck,
    SendIndirectProbe,
    SendNack,
    SendProbe,
    SendSuspect,
    Status,
    SuspectReceived,
)

WIFI = DetectorConfig()
WIFI_LINK = (0.02, 1_000_000)
LORA_LINK = (1.0, 5_000)


def _detector(*peers: bytes, seed: int = 0) -> FailureDetector:
    det = FailureDetector(b"a", WIFI, random.Random(seed))
    for peer in peers:
        det.add_peer(peer, 0.0, *WIFI_LINK)
    return det


def _suspect(det: FailureDetector, node_id: bytes, accuser: bytes, now: float = 1.0) -> None:
    det.receive(SuspectReceived(node_id=node_id, incarnation=0, from_id=accuser), now)
    assert det.state_of(node_id).status is Status.SUSPECT


# -- queries and membership --


def test_an_unknown_peer_is_named_in_the_error() -> None:
    with pytest.raises(UsageError, match=b"nobody".hex()):
        _detector(b"b").state_of(b"nobody")


def test_no_peers_no_timer() -> None:
    det = _detector()
    assert det.get_timer() is None
    assert det.handle_timer(5.0) == []


def test_removing_the_last_peer_stops_the_timer_and_removing_a_stranger_changes_nothing() -> None:
    det = _detector(b"b")
    assert det.get_timer() == 0.0
    det.remove_peer(b"zz", 1.0)
    assert det.peers() == [b"b"] and det.get_timer() == 0.0
    det.remove_peer(b"b", 1.0)
    assert det.peers() == [] and det.get_timer() is None
    with pytest.raises(UsageError):
        det.state_of(b"b")


def test_removing_the_probed_peer_drops_its_probe() -> None:
    det = _detector(b"b", b"c")
    probe = next(o for o in det.handle_timer(0.0) if isinstance(o, SendProbe))
    other = b"c" if probe.to == b"b" else b"b"
    det.remove_peer(probe.to, 0.1)
    # No probe timeout is pending any more: the next timer is the end of the period.
    assert det.get_timer() == pytest.approx(WIFI.probe_interval(*WIFI_LINK))
    out = det.handle_timer(det.get_timer() or 0.0)
    assert not [o for o in out if isinstance(o, PeerSuspected | SendIndirectProbe)]
    assert [o.to for o in out if isinstance(o, SendProbe)] == [other]


@pytest.mark.parametrize("which", ["probed", "unprobed"])
@pytest.mark.parametrize("seed", range(6))
def test_after_a_removal_the_round_still_probes_every_remaining_peer_once(
    seed: int, which: str
) -> None:
    peers = [bytes([i]) * 2 for i in range(2, 7)]
    det = FailureDetector(b"a", WIFI, random.Random(seed))
    for peer in peers:
        det.add_peer(peer, 0.0, *WIFI_LINK)
    now, probed = 0.0, []

    def periods(n: int) -> list[bytes]:
        nonlocal now
        start = len(probed)
        for _ in range(n):
            for o in det.handle_timer(now):
                if isinstance(o, SendProbe):
                    probed.append(o.to)
                    det.receive(ProbeAcked(from_id=o.to, seq=o.seq), now + 0.01)
            now = det.get_timer() or now
        return probed[start:]

    periods(3)  # part of the way round
    unprobed = sorted(set(peers) - set(probed))
    gone = probed[0] if which == "probed" else unprobed[0]
    det.remove_peer(gone, now)
    rest = [p for p in unprobed if p != gone]
    # The rest of this round: the ones not yet probed, each once; then whole rounds again.
    assert sorted(periods(len(rest))) == rest
    remaining = sorted(p for p in peers if p != gone)
    assert sorted(periods(4)) == remaining
    assert sorted(periods(4)) == remaining


# -- timers --


def test_the_timer_is_the_earliest_of_relays_suspicions_and_the_period() -> None:
    det = _detector(b"b", b"c", b"d")
    det.handle_timer(0.0)  # the first probe goes out; the timer is its timeout
    _suspect(det, b"d", b"c", now=0.0)
    det.receive(IndirectProbeRequested(from_id=b"b", target=b"zz", seq=1), 0.0)
    # The relay's nack is due first (its probe timeout, like ours, but ours is for a peer).
    assert det.get_timer() == pytest.approx(WIFI.probe_timeout(None, None))
    det.handle_timer(det.get_timer() or 0.0)
    assert det.get_timer() == pytest.approx(WIFI.probe_interval(*WIFI_LINK))


# -- acks, and the indirect probes we run for others --


def test_an_ack_nobody_asked_for_is_ignored() -> None:
    det = _detector(b"b")
    assert det.receive(ProbeAcked(from_id=b"b", seq=99), 1.0) == []


def test_a_relay_passes_the_ack_back_and_counts_it_as_contact() -> None:
    det = _detector(b"b", b"c")
    _suspect(det, b"c", b"b")
    out = det.receive(IndirectProbeRequested(from_id=b"b", target=b"c", seq=7), 2.0)
    assert len(out) == 1 and isinstance(out[0], SendProbe)
    assert (out[0].to, out[0].suspect) == (b"c", True)  # a buddy probe: c refutes at once
    out = det.receive(ProbeAcked(from_id=b"c", seq=out[0].seq), 2.5)
    assert out == [
        SendIndirectAck(to=b"b", target=b"c", seq=7),
        PeerRecovered(node_id=b"c", incarnation=0),
    ]
    assert det.state_of(b"c") == PeerState(Status.ALIVE, 2.5, 0)


def test_a_relay_times_its_nack_by_the_targets_link() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(0))
    det.add_peer(b"c", 0.0, *LORA_LINK)
    det.handle_timer(0.0)  # probe c ourselves too; its timeout is the same LoRa one
    det.receive(ProbeAcked(from_id=b"c", seq=1), 0.1)
    out = det.receive(IndirectProbeRequested(from_id=b"b", target=b"c", seq=3), 1.0)
    assert out == [SendProbe(to=b"c", seq=2, suspect=False)]
    assert det.get_timer() == pytest.approx(1.0 + WIFI.probe_timeout(*LORA_LINK))


def test_a_relay_to_a_stranger_is_not_a_buddy_probe() -> None:
    det = _detector(b"b")
    out = det.receive(IndirectProbeRequested(from_id=b"b", target=b"zz", seq=3), 1.0)
    assert out == [SendProbe(to=b"zz", seq=1, suspect=False)]


def test_an_indirect_probe_of_ourselves_is_answered_at_once() -> None:
    det = _detector(b"b")
    out = det.receive(IndirectProbeRequested(from_id=b"b", target=b"a", seq=5), 1.0)
    assert out == [SendIndirectAck(to=b"b", target=b"a", seq=5)]


def test_at_most_256_relays_run_at_once() -> None:
    det = _detector(b"b")
    sent = [
        det.receive(IndirectProbeRequested(from_id=bytes([i % 16]), target=b"zz", seq=i), 1.0)
        for i in range(257)
    ]
    assert all(len(out) == 1 for out in sent[:256])
    assert sent[256] == []


def test_one_requester_gets_at_most_16_relays_and_others_still_get_theirs() -> None:
    """Issue 15: a member flooding PING-REQs cannot take every relay slot from honest peers."""
    det = _detector(b"b", b"c")
    flood = [
        det.receive(IndirectProbeRequested(from_id=b"evil", target=b"c", seq=i), 1.0)
        for i in range(40)
    ]
    assert sum(len(out) for out in flood) == 16
    honest = det.receive(IndirectProbeRequested(from_id=b"b", target=b"c", seq=99), 1.0)
    assert len(honest) == 1


# -- alive and suspect messages --


def test_an_alive_at_the_same_incarnation_does_not_refute() -> None:
    det = _detector(b"b", b"c")
    _suspect(det, b"b", b"c")
    assert det.receive(AliveReceived(node_id=b"b", incarnation=0), 2.0) == []
    assert det.state_of(b"b").status is Status.SUSPECT
    assert det.receive(AliveReceived(node_id=b"zz", incarnation=5), 2.0) == []  # a stranger
    out = det.receive(AliveReceived(node_id=b"b", incarnation=1), 3.0)
    assert out == [PeerRecovered(node_id=b"b", incarnation=1)]
    assert det.state_of(b"b") == PeerState(Status.ALIVE, 3.0, 1)


def test_a_suspicion_of_ourselves_at_our_incarnation_is_refuted_to_all_and_the_accuser() -> None:
    det = _detector(b"b", b"c")
    out = det.receive(SuspectReceived(node_id=b"a", incarnation=0, from_id=b"zz"), 1.0)
    assert len(out) == 1 and isinstance(out[0], SendAlive)
    assert sorted(out[0].to) == [b"b", b"c", b"zz"]  # the accuser is not a peer: told as well
    assert (out[0].node_id, out[0].incarnation) == (b"a", 1)
    out = det.receive(SuspectReceived(node_id=b"a", incarnation=1, from_id=b"b"), 2.0)
    assert len(out) == 1 and isinstance(out[0], SendAlive)
    assert sorted(out[0].to) == [b"b", b"c"]
    assert out[0].incarnation == det.incarnation == 2  # each refutation goes one higher


def test_an_old_suspicion_of_ourselves_gets_our_current_incarnation_back() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(0), incarnation=4)
    det.add_peer(b"b", 0.0, *WIFI_LINK)
    out = det.receive(SuspectReceived(node_id=b"a", incarnation=3, from_id=b"b"), 1.0)
    assert out == [SendAlive(to=(b"b",), node_id=b"a", incarnation=4)]
    assert det.incarnation == 4 and det.local_health == 0


def test_suspicion_of_a_stranger_is_ignored() -> None:
    det = _detector(b"b")
    assert det.receive(SuspectReceived(node_id=b"zz", incarnation=0, from_id=b"b"), 1.0) == []


def test_the_first_accuser_repeating_itself_is_no_news() -> None:
    det = _detector(b"b", b"c", b"d", b"e")
    _suspect(det, b"e", b"b", now=10.0)
    first = det.suspicion_deadline(b"e")
    det.receive(SuspectReceived(node_id=b"e", incarnation=0, from_id=b"b"), 11.0)
    assert det.suspicion_deadline(b"e") == first
    det.receive(SuspectReceived(node_id=b"e", incarnation=0, from_id=b"a"), 11.0)
    assert det.suspicion_deadline(b"e") == first  # gossip of our own id counts for nothing


def test_our_own_failed_probes_confirm_a_suspicion_once_and_tell_the_unfailed() -> None:
    # Long suspicions (min 20 s), so that several rounds fit before e is declared failed.
    det = FailureDetector(b"a", DetectorConfig(suspicion_mult=20.0), random.Random(1))
    for peer in (b"b", b"c", b"d", b"e"):
        det.add_peer(peer, 0.0, *WIFI_LINK)
    _suspect(det, b"d", b"b", now=0.0)
    now = det.suspicion_deadline(b"d") or 0.0
    _suspect(det, b"e", b"b", now=now)
    first = det.suspicion_deadline(b"e")
    suspects, probes_of_e, end = [], 0, now + 100.0
    while probes_of_e < 3 and now < end:
        before = det.suspicion_deadline(b"e")
        out = det.handle_timer(now)
        assert det.state_of(b"d").status is Status.FAILED  # not told of suspicions
        for o in out:
            if isinstance(o, SendProbe) and o.to in (b"b", b"c"):
                det.receive(ProbeAcked(from_id=o.to, seq=o.seq), now + 0.01)
            probes_of_e += isinstance(o, SendProbe) and o.to == b"e"
        if any(isinstance(o, SendSuspect) for o in out):
            # gossiped with the failure that first moved the deadline, not a later one
            assert before == first != det.suspicion_deadline(b"e") and not suspects
        suspects += [o for o in out if isinstance(o, SendSuspect)]
        now = det.get_timer() or now
    assert probes_of_e == 3 and det.state_of(b"e").status is Status.SUSPECT
    # Three of our probes of e failed; only the first was news, and only it was gossiped.
    assert len(suspects) == 1
    assert (suspects[0].node_id, suspects[0].incarnation) == (b"e", 0)
    assert sorted(suspects[0].to) == [b"b", b"c", b"e"]
    second = det.suspicion_deadline(b"e")
    assert first is not None and second is not None and second < first


# -- the round and its timers --


@pytest.mark.parametrize("link", [(2.0, None), (None, 5_000), LORA_LINK], ids=str)
def test_the_probe_timeout_and_period_follow_the_peers_link(
    link: tuple[float | None, int | None],
) -> None:
    det = FailureDetector(b"a", WIFI, random.Random(0))
    det.add_peer(b"b", 0.0, *link)
    assert det.handle_timer(0.0) == [SendProbe(to=b"b", seq=1, suspect=False)]
    timeout, interval = WIFI.probe_timeout(*link), WIFI.probe_interval(*link)
    assert timeout > WIFI.base_timeout and interval > WIFI.base_interval
    assert det.get_timer() == pytest.approx(timeout)
    det.receive(ProbeAcked(from_id=b"b", seq=1), 0.1)
    assert det.get_timer() == pytest.approx(interval)


def test_a_peer_heard_exactly_one_period_ago_is_probed() -> None:
    det = _detector(b"b")
    interval = WIFI.probe_interval(*WIFI_LINK)
    det.receive(Heard(from_id=b"b"), 0.0)
    assert det.handle_timer(interval) == [SendProbe(to=b"b", seq=1, suspect=False)]


def test_when_every_peer_spoke_the_round_waits_the_shortest_period() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(0))
    det.add_peer(b"b", 0.0, *LORA_LINK)  # a 32 s period
    det.add_peer(b"c", 0.0, 1.0, None)  # a 9 s period: its round trip, not its bitrate
    for peer in (b"b", b"c"):
        det.receive(Heard(from_id=peer), 0.0)
    assert det.handle_timer(1.0) == []
    assert det.get_timer() == pytest.approx(1.0 + WIFI.probe_interval(1.0, None)) == 10.0


def test_a_relay_nacks_on_its_deadline_and_a_suspicion_fails_on_its_own() -> None:
    det = _detector(b"b", b"c")
    det.receive(IndirectProbeRequested(from_id=b"b", target=b"zz", seq=4), 0.5)
    nack_at = 0.5 + WIFI.probe_timeout(None, None)
    out = det.handle_timer(nack_at)
    assert SendNack(to=b"b", target=b"zz", seq=4) in out
    _suspect(det, b"c", b"b", now=1.0)
    deadline = det.suspicion_deadline(b"c")
    assert deadline is not None
    assert PeerFailed(node_id=b"c", incarnation=0) in det.handle_timer(deadline)
    assert det.state_of(b"c") == PeerState(Status.FAILED, deadline, 0)


def test_local_health_rises_by_one_for_each_via_that_did_not_even_nack() -> None:
    det = _detector(b"b", b"c", b"d")
    probe = next(o for o in det.handle_timer(0.0) if isinstance(o, SendProbe))
    vias = [o for o in det.handle_timer(det.get_timer() or 0) if isinstance(o, SendIndirectProbe)]
    assert len(vias) == 2
    det.receive(NackReceived(from_id=vias[0].via, target=probe.to, seq=probe.seq), 0.5)
    # a nack for another probe is no nack for this one
    det.receive(NackReceived(from_id=vias[1].via, target=probe.to, seq=probe.seq + 9), 0.5)
    det.handle_timer(det.get_timer() or 0)
    assert det.state_of(probe.to).status is Status.SUSPECT
    assert det.local_health == 1


# -- joining, and what each contact does --


def test_a_detector_needs_an_id_and_no_peer_is_itself() -> None:
    with pytest.raises(Malformed) as caught:
        FailureDetector(b"", WIFI, random.Random(0))
    assert str(caught.value) == "self_id: must be a non-empty node id (bytes)"
    with pytest.raises(UsageError) as refused:
        _detector().add_peer(b"a", 0.0)
    assert str(refused.value) == "a node does not probe itself"


def test_adding_a_known_peer_again_updates_its_link_only() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(0))
    det.add_peer(b"b", 3.0, *LORA_LINK)
    assert det.state_of(b"b") == PeerState(Status.ALIVE, 3.0, 0)
    det.add_peer(b"b", 5.0, 2.0, None)
    assert det.peers() == [b"b"] and det.state_of(b"b").since == 3.0
    det.handle_timer(5.0)
    assert det.get_timer() == pytest.approx(5.0 + WIFI.probe_timeout(2.0, None))


@pytest.mark.parametrize("seed", range(20))
def test_the_first_round_and_a_round_with_a_newcomer_probe_every_old_peer_once(
    seed: int,
) -> None:
    det = FailureDetector(b"a", WIFI, random.Random(seed))
    peers = [bytes([i]) * 2 for i in range(2, 7)]
    for peer in peers:
        det.add_peer(peer, 0.0, *WIFI_LINK)
    now, probed = 0.0, []
    for period in range(2 * len(peers)):
        if period == len(peers) + 3:  # mid-round: newcomers join at random places
            for newcomer in (b"new1", b"new2", b"new3"):
                det.add_peer(newcomer, now, *WIFI_LINK)
        for o in det.handle_timer(now):
            if isinstance(o, SendProbe):
                probed.append(o.to)
                det.receive(ProbeAcked(from_id=o.to, seq=o.seq), now + 0.01)
        now = det.get_timer() or now
    assert sorted(probed[: len(peers)]) == sorted(peers)
    second = probed[len(peers) :]
    assert len(second) == len(peers) and len(set(second)) == len(second)  # nobody twice


def test_an_indirect_ack_revives_the_target_and_eases_our_health() -> None:
    det = _detector(b"b", b"c", b"d")
    for seq in (1, 2):  # suspected twice: health 2
        det.receive(ProbeReceived(from_id=b"b", seq=seq, suspect=True), 0.0)
    assert det.local_health == 2
    probe = next(o for o in det.handle_timer(0.0) if isinstance(o, SendProbe))
    _suspect(det, probe.to, next(p for p in (b"b", b"c", b"d") if p != probe.to), now=0.1)
    vias = [o for o in det.handle_timer(det.get_timer() or 0) if isinstance(o, SendIndirectProbe)]
    assert vias
    stale = NackReceived(from_id=vias[0].via, target=probe.to, seq=probe.seq + 100)
    assert det.receive(stale, 0.9) == []
    out = det.receive(IndirectAckReceived(from_id=vias[0].via, target=probe.to, seq=probe.seq), 1.0)
    assert out == [PeerRecovered(node_id=probe.to, incarnation=0)]
    assert det.state_of(probe.to) == PeerState(Status.ALIVE, 1.0, 0)
    assert det.local_health == 1  # one step down per answered probe


def test_hearing_the_probed_peer_answers_the_probe() -> None:
    det = _detector(b"b")
    det.handle_timer(0.0)
    det.receive(Heard(from_id=b"b"), 0.1)
    # No probe pending: no indirect round, no suspicion, the next timer is the period's end.
    assert det.get_timer() == pytest.approx(WIFI.probe_interval(*WIFI_LINK))
    assert [o for o in det.handle_timer(det.get_timer() or 0) if isinstance(o, PeerSuspected)] == []


def test_a_direct_ack_revives_as_of_its_arrival() -> None:
    det = _detector(b"b", b"c")
    _suspect(det, b"b", b"c", now=0.0)
    probe = next(o for o in det.handle_timer(0.0) if isinstance(o, SendProbe))
    det.receive(ProbeAcked(from_id=probe.to, seq=probe.seq), 0.2)
    if probe.to == b"b":
        assert det.state_of(b"b") == PeerState(Status.ALIVE, 0.2, 0)


def test_a_suspicion_waits_by_the_suspects_link_our_health_and_the_mesh_size() -> None:
    peers = [bytes([i]) * 2 for i in range(2, 12)]  # ten peers: eleven members
    det = FailureDetector(b"a", WIFI, random.Random(0))
    for peer in peers:
        det.add_peer(peer, 0.0, *WIFI_LINK)
    det.add_peer(b"rtt", 0.0, 2.0, None)
    det.add_peer(b"slow", 0.0, None, 5_000)
    det.receive(ProbeReceived(from_id=peers[0], seq=1, suspect=True), 0.0)  # health 1
    for target in (b"rtt", b"slow"):
        _suspect(det, target, peers[0], now=1.0)
    for target, link in ((b"rtt", (2.0, None)), (b"slow", (None, 5_000))):
        members = 1 + len(peers) + 2  # a suspect still counts; only failed peers do not
        interval = WIFI.probe_interval(*link) * 2  # 1 + health
        expected = 1.0 + WIFI.suspicion_timeout(members, interval, 0)
        assert det.suspicion_deadline(target) == pytest.approx(expected)
