"""The SWIM + Lifeguard failure detector, driven by a small deterministic simulator.

`Sim` wires N detectors through one message queue with explicit time: each command becomes the
matching input at its destination after the link's delay, unless the loss rule drops it. Killed
nodes neither send nor receive. No I/O, no clock: hours of mesh time in well under a second.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.errors import Malformed, UsageError
from kai_mesh.core.liveness.membership import (
    AliveReceived,
    DetectorConfig,
    FailureDetector,
    Heard,
    IndirectAckReceived,
    IndirectProbeRequested,
    Input,
    NackReceived,
    Output,
    PeerFailed,
    PeerRecovered,
    PeerState,
    PeerSuspected,
    ProbeAcked,
    ProbeReceived,
    SendAck,
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
WIFI_LINK = (0.02, 1_000_000)  # rtt seconds, bitrate
LORA_LINK = (1.0, 5_000)  # 5 kbit/s, as in the slowest CI test
Drop = Callable[[bytes, bytes, Input], bool]


def _as_inputs(src: bytes, cmd: Output) -> list[tuple[bytes, Input]]:
    match cmd:
        case SendProbe():
            return [(cmd.to, ProbeReceived(from_id=src, seq=cmd.seq, suspect=cmd.suspect))]
        case SendAck():
            return [(cmd.to, ProbeAcked(from_id=src, seq=cmd.seq))]
        case SendIndirectProbe():
            return [(cmd.via, IndirectProbeRequested(from_id=src, target=cmd.target, seq=cmd.seq))]
        case SendIndirectAck():
            return [(cmd.to, IndirectAckReceived(from_id=src, target=cmd.target, seq=cmd.seq))]
        case SendNack():
            return [(cmd.to, NackReceived(from_id=src, target=cmd.target, seq=cmd.seq))]
        case SendAlive():
            alive = AliveReceived(node_id=cmd.node_id, incarnation=cmd.incarnation)
            return [(to, alive) for to in cmd.to]
        case SendSuspect():
            return [
                (to, SuspectReceived(node_id=cmd.node_id, incarnation=cmd.incarnation, from_id=src))
                for to in cmd.to
            ]
    return []


@dataclass
class Sim:
    n: int
    seed: int
    loss: float = 0.0
    config: DetectorConfig = WIFI
    link: tuple[float, int] = WIFI_LINK
    drop: Drop | None = None
    now: float = 0.0
    nodes: dict[bytes, FailureDetector] = field(default_factory=dict)
    dead: set[bytes] = field(default_factory=set)
    events: list[tuple[float, bytes, Output]] = field(default_factory=list)
    sent: list[tuple[float, bytes, Output]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.net = random.Random(self.seed)
        self.queue: list[tuple[float, int, bytes, Input]] = []
        self.counter = itertools.count()
        ids = [bytes([i + 1]) * 16 for i in range(self.n)]
        rtt, bitrate = self.link
        for i, node_id in enumerate(ids):
            det = FailureDetector(node_id, self.config, random.Random(self.seed * 1000 + i))
            for other in ids:
                if other != node_id:
                    det.add_peer(other, 0.0, rtt, bitrate)
            self.nodes[node_id] = det
        self.ids = ids

    def delay(self) -> float:
        rtt, bitrate = self.link
        return self.config.frame_airtime(bitrate) + rtt / 2 * (0.5 + self.net.random())

    def emit(self, src: bytes, outputs: list[Output]) -> None:
        for out in outputs:
            if isinstance(out, PeerSuspected | PeerFailed | PeerRecovered):
                self.events.append((self.now, src, out))
                continue
            self.sent.append((self.now, src, out))
            for dst, msg in _as_inputs(src, out):
                if self.net.random() < self.loss or (self.drop and self.drop(src, dst, msg)):
                    continue
                heapq.heappush(self.queue, (self.now + self.delay(), next(self.counter), dst, msg))

    def run_until(self, end: float) -> None:
        while True:
            due = [
                (t, i)
                for i, d in self.nodes.items()
                if i not in self.dead and (t := d.get_timer()) is not None
            ]
            t_timer, who = min(due) if due else (float("inf"), b"")
            t_msg = self.queue[0][0] if self.queue else float("inf")
            if min(t_timer, t_msg) > end:
                self.now = end
                return
            if t_msg <= t_timer:
                self.now, _, dst, msg = heapq.heappop(self.queue)
                if dst in self.nodes and dst not in self.dead:
                    self.emit(dst, self.nodes[dst].receive(msg, self.now))
            else:
                self.now = t_timer
                self.emit(who, self.nodes[who].handle_timer(self.now))

    def of(self, kind: type, node_id: bytes | None = None) -> list[tuple[float, bytes, Output]]:
        return [
            (t, src, e)
            for t, src, e in self.events
            if isinstance(e, kind) and (node_id is None or getattr(e, "node_id", None) == node_id)
        ]

    def false_failures(self) -> list[tuple[float, bytes, Output]]:
        return [x for x in self.of(PeerFailed) if getattr(x[2], "node_id", None) not in self.dead]


# -- the formulas --


def test_timeouts_scale_with_the_link() -> None:
    cfg = DetectorConfig()
    assert cfg.probe_timeout(*WIFI_LINK) == cfg.base_timeout
    assert cfg.probe_interval(*WIFI_LINK) == cfg.base_interval
    # 5 kbit/s: a 100-byte frame is 0.16 s; 1 % airtime for two frames a period is 32 s.
    assert cfg.probe_timeout(*LORA_LINK) == pytest.approx(3 * (0.32 + 1.0))
    assert cfg.probe_interval(*LORA_LINK) == pytest.approx(32.0)
    assert cfg.probe_interval(None, 1_000) == pytest.approx(160.0)  # minutes on slow LoRa


def test_suspicion_timeout_shrinks_log_scaled_towards_min() -> None:
    cfg = DetectorConfig()
    low, high = cfg.suspicion_bounds(5, 1.0)
    assert (low, high) == (4.0, 24.0)
    steps = [cfg.suspicion_timeout(5, 1.0, c) for c in range(5)]
    assert steps[0] == high and steps[3] == steps[4] == low
    assert steps == sorted(steps, reverse=True) and len(set(steps[:4])) == 4
    assert cfg.suspicion_timeout(2, 1.0, 0) == low  # nobody else could confirm


def test_bad_config_and_inputs_are_refused() -> None:
    with pytest.raises(UsageError):
        DetectorConfig(period_factor=1.5)
    with pytest.raises(UsageError):
        DetectorConfig(airtime_share=0)
    with pytest.raises(Malformed):
        ProbeAcked(from_id=b"", seq=1)
    with pytest.raises(Malformed):
        SuspectReceived(node_id=b"x", incarnation=-1, from_id=b"y")
    det = FailureDetector(b"a", WIFI, random.Random(0))
    with pytest.raises(UsageError):
        det.add_peer(b"a", 0.0)
    with pytest.raises(UsageError):
        det.state_of(b"nobody")


# -- behaviour in the simulator --


@pytest.mark.parametrize(("link", "kill_at"), [(WIFI_LINK, 30.0), (LORA_LINK, 1000.0)])
@pytest.mark.parametrize("seed", range(4))
def test_a_killed_peer_is_declared_failed_within_the_bound(
    link: tuple[float, int], kill_at: float, seed: int
) -> None:
    sim = Sim(5, seed, link=link)
    bound = sim.config.detection_bound(members=5, link_rtt=link[0], bitrate=link[1])
    victim = sim.ids[seed % 5]
    sim.run_until(kill_at)
    sim.dead.add(victim)
    sim.run_until(kill_at + bound + 1)
    failed = {src: t for t, src, _ in sim.of(PeerFailed, victim)}
    assert set(failed) == set(sim.ids) - {victim}
    assert max(failed.values()) - kill_at <= bound
    assert not sim.false_failures()
    assert all(d.local_health == 0 for d in sim.nodes.values())  # the vias nacked: not our fault


def test_an_indirect_probe_rescues_a_peer_behind_a_dead_direct_link() -> None:
    a, b = bytes([1]) * 16, bytes([2]) * 16

    def cut(src: bytes, dst: bytes, _msg: Input) -> bool:
        return {src, dst} == {a, b}

    sim = Sim(4, 7, drop=cut)
    sim.run_until(600.0)
    assert not sim.of(PeerSuspected), "indirect probes should keep a and b alive to each other"
    rescued = [e for _, src, e in sim.sent if src == a and isinstance(e, SendIndirectProbe)]
    assert rescued and all(e.target == b for e in rescued)

    control = Sim(4, 7, drop=cut, config=DetectorConfig(indirect_probes=0))
    control.run_until(600.0)
    assert control.of(PeerSuspected, b)


def test_a_suspected_live_peer_refutes_through_the_buddy_probe() -> None:
    a, b = bytes([1]) * 16, bytes([2]) * 16
    window = {"deaf": True}

    def drop(src: bytes, dst: bytes, msg: Input) -> bool:
        if isinstance(msg, SuspectReceived):
            return True  # b must learn of the suspicion from the probe itself
        return window["deaf"] and dst == a and src == b

    sim = Sim(2, 3, drop=drop)
    sim.run_until(WIFI.base_interval * 1.5)  # a's first probe of b goes unanswered
    assert [e for _, src, e in sim.of(PeerSuspected, b) if src == a]
    window["deaf"] = False
    deadline = sim.nodes[a].suspicion_deadline(b)
    assert deadline is not None
    sim.run_until(deadline - 0.01)
    buddy = [e for _, src, e in sim.sent if src == a and isinstance(e, SendProbe) and e.suspect]
    assert buddy, "a probe of a suspect peer must say so"
    assert sim.of(PeerRecovered, b)
    state = sim.nodes[a].state_of(b)
    assert state.status is Status.ALIVE and state.incarnation == sim.nodes[b].incarnation >= 1
    assert not sim.of(PeerFailed)


@pytest.mark.parametrize("seed", range(5))
def test_five_percent_loss_for_an_hour_declares_no_live_node_failed(seed: int) -> None:
    sim = Sim(5, seed, loss=0.05)
    sim.run_until(3600.0)
    assert not sim.false_failures()
    # the loss is real: suspicions are raised, and all of them refuted
    assert all(d.state_of(p).status is Status.ALIVE for d in sim.nodes.values() for p in d.peers())


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), loss=st.floats(0.0, 0.05))
def test_lossy_slow_links_for_six_hours_declare_no_live_node_failed(seed: int, loss: float) -> None:
    sim = Sim(5, seed, loss=loss, link=LORA_LINK)
    sim.run_until(6 * 3600.0)
    assert not sim.false_failures()


# -- Lifeguard, on one detector driven by hand --


def _probe_round(det: FailureDetector, now: float, answer: bool) -> tuple[float, float]:
    """Run one period; return (probe timeout, interval) as the detector scheduled them."""
    out = det.handle_timer(now)
    probe = next(o for o in out if isinstance(o, SendProbe))
    timeout_at = det.get_timer()
    assert timeout_at is not None
    if answer:
        det.receive(ProbeAcked(from_id=probe.to, seq=probe.seq), now + 0.01)
    else:
        det.handle_timer(timeout_at)  # the direct probe times out; no vias to ask
    end = det.get_timer()
    assert end is not None
    return timeout_at - now, end - now


def test_local_health_rises_on_lost_acks_stretches_timeouts_and_recovers() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(1))
    det.add_peer(b"b", 0.0, *WIFI_LINK)
    now, healths, timings = 0.0, [], []
    for answer in [False] * 3 + [True] * 3:
        timeout, interval = _probe_round(det, now, answer)
        timings.append((timeout, interval))
        now += interval
        healths.append(det.local_health)
        det.receive(AliveReceived(node_id=b"b", incarnation=len(healths)), now)
    # A miss counts when its period ends (at the start of the next round), an ack at once; each
    # round is scheduled with the health at its start: 0, 1, 2, 3, then 2 and 1 after acks.
    assert healths == [0, 1, 2, 2, 1, 0]
    base_t, base_i = WIFI.probe_timeout(*WIFI_LINK), WIFI.probe_interval(*WIFI_LINK)
    for timing, scale in zip(timings, [1, 2, 3, 4, 3, 2], strict=True):
        assert timing == pytest.approx((scale * base_t, scale * base_i))


def test_local_health_rises_when_we_must_refute_and_only_for_missing_nacks() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(2))
    for p in (b"b", b"c", b"d"):
        det.add_peer(p, 0.0, *WIFI_LINK)
    out = det.receive(ProbeReceived(from_id=b"b", seq=9, suspect=True), 0.0)
    assert SendAck(to=b"b", seq=9) in out
    alive = [o for o in out if isinstance(o, SendAlive)]
    assert len(alive) == 1 and set(alive[0].to) == {b"b", b"c", b"d"}
    assert (alive[0].node_id, alive[0].incarnation) == (b"a", 1)
    assert det.local_health == 1 and det.incarnation == 1
    # a target that is really gone, with vias that nack: no blame on us
    out = det.handle_timer(1.0)
    probe = next(o for o in out if isinstance(o, SendProbe))
    vias = [o for o in det.handle_timer(det.get_timer() or 0) if isinstance(o, SendIndirectProbe)]
    assert len(vias) == 2
    for v in vias:
        det.receive(NackReceived(from_id=v.via, target=probe.to, seq=probe.seq), 1.5)
    out = det.handle_timer(det.get_timer() or 0)
    assert PeerSuspected(node_id=probe.to, incarnation=0) in out
    assert det.local_health == 1


def test_suspicion_deadline_shrinks_with_independent_confirmations() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(3))
    for p in (b"b", b"c", b"d", b"e"):
        det.add_peer(p, 0.0, *WIFI_LINK)
    out = det.receive(SuspectReceived(node_id=b"e", incarnation=0, from_id=b"b"), 10.0)
    assert out == [PeerSuspected(node_id=b"e", incarnation=0)]
    deadlines = [det.suspicion_deadline(b"e")]
    for accuser in (b"c", b"c", b"d", b"a"):
        det.receive(SuspectReceived(node_id=b"e", incarnation=0, from_id=accuser), 11.0)
        deadlines.append(det.suspicion_deadline(b"e"))
    interval = WIFI.probe_interval(*WIFI_LINK)
    expected = [10.0 + WIFI.suspicion_timeout(5, interval, c) for c in (0, 1, 1, 2, 2)]
    assert deadlines == pytest.approx(expected)  # a repeat, or our own id as gossip, is no news
    assert expected[0] == 10.0 + WIFI.suspicion_bounds(5, interval)[1]
    assert det.suspicion_deadline(b"e") == deadlines[-1]
    out = det.handle_timer(expected[-1])
    assert PeerFailed(node_id=b"e", incarnation=0) in out
    assert det.state_of(b"e").status is Status.FAILED
    # a failed peer that comes back with a newer incarnation is alive again
    out = det.receive(AliveReceived(node_id=b"e", incarnation=1), 30.0)
    assert out == [PeerRecovered(node_id=b"e", incarnation=1)]
    assert det.suspicion_deadline(b"e") is None


def test_a_peer_heard_within_its_period_is_not_probed() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(3))
    det.add_peer(b"b", 0.0, *WIFI_LINK)
    interval = WIFI.probe_interval(*WIFI_LINK)
    now = 0.0
    for _ in range(20):  # heard every period (its heartbeats): not one probe in 20 periods
        det.receive(Heard(from_id=b"b"), now)
        out = det.handle_timer(now + 0.1)
        assert not [o for o in out if isinstance(o, SendProbe)]
        now += interval
    # Silence for longer than a period: the next round probes it again.
    out = det.handle_timer(now + interval)
    assert [o.to for o in out if isinstance(o, SendProbe)] == [b"b"]


def test_hearing_a_suspect_or_failed_peer_brings_it_back() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(4))
    det.add_peer(b"b", 0.0, *WIFI_LINK)
    det.add_peer(b"c", 0.0, *WIFI_LINK)
    det.receive(SuspectReceived(node_id=b"b", incarnation=0, from_id=b"c"), 1.0)
    assert det.state_of(b"b").status is Status.SUSPECT
    out = det.receive(Heard(from_id=b"b"), 2.0)
    assert det.state_of(b"b").status is Status.ALIVE
    assert any(isinstance(o, PeerRecovered) for o in out)
    assert det.receive(Heard(from_id=b"zz"), 3.0) == []  # not a peer: ignored


def _failed(det: FailureDetector, node_id: bytes, accuser: bytes) -> float:
    """Have `accuser` suspect `node_id` and let the suspicion expire; return when it failed."""
    det.receive(SuspectReceived(node_id=node_id, incarnation=0, from_id=accuser), 1.0)
    deadline = det.suspicion_deadline(node_id)
    assert deadline is not None
    assert PeerFailed(node_id=node_id, incarnation=0) in det.handle_timer(deadline)
    assert det.state_of(node_id).status is Status.FAILED
    return deadline


@pytest.mark.parametrize(
    "contact",
    [
        Heard(from_id=b"b"),
        ProbeReceived(from_id=b"b", seq=7, suspect=False),
    ],
    ids=["heard", "probed-by-it"],
)
def test_direct_contact_from_a_failed_peer_brings_it_back(contact: Input) -> None:
    # Same incarnation, no alive message: only the contact itself can revive it (a healed
    # partition, where the peer never learnt it was suspected).
    det = FailureDetector(b"a", WIFI, random.Random(4))
    det.add_peer(b"b", 0.0, *WIFI_LINK)
    det.add_peer(b"c", 0.0, *WIFI_LINK)
    failed_at = _failed(det, b"b", b"c")
    out = det.receive(contact, failed_at + 5.0)
    assert PeerRecovered(node_id=b"b", incarnation=0) in out
    assert det.state_of(b"b") == PeerState(Status.ALIVE, failed_at + 5.0, 0)


def test_a_failed_peer_that_answers_its_direct_probe_is_alive_again() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(4))
    det.add_peer(b"b", 0.0, *WIFI_LINK)
    det.add_peer(b"c", 0.0, *WIFI_LINK)
    now = _failed(det, b"b", b"c")
    for _ in range(10):  # the round reaches b within a few periods; it is probed, buddy-style
        probes = [o for o in det.handle_timer(now) if isinstance(o, SendProbe) and o.to == b"b"]
        if probes:
            break
        now = det.get_timer() or now
    assert probes and probes[0].suspect
    out = det.receive(ProbeAcked(from_id=b"b", seq=probes[0].seq), now + 0.01)
    assert out == [PeerRecovered(node_id=b"b", incarnation=0)]
    assert det.state_of(b"b").status is Status.ALIVE


def test_the_round_skips_heard_peers_and_probes_the_silent_one_at_once() -> None:
    det = FailureDetector(b"a", WIFI, random.Random(5))
    for peer in (b"b", b"c", b"d"):
        det.add_peer(peer, 0.0, *WIFI_LINK)
    interval = WIFI.probe_interval(*WIFI_LINK)
    now, probed = 0.0, []
    for _ in range(12):
        for talker in (b"b", b"c"):  # b and c send heartbeats; d has gone quiet
            det.receive(Heard(from_id=talker), now)
        probes = [o for o in det.handle_timer(now) if isinstance(o, SendProbe)]
        probed += [p.to for p in probes]
        for probe in probes:  # d still answers its probes
            det.receive(ProbeAcked(from_id=probe.to, seq=probe.seq), now + 0.01)
        assert det.local_health == 0
        now += interval
    # Every period probes d, never b or c: the round does not spend periods on peers it hears.
    assert probed == [b"d"] * 12
