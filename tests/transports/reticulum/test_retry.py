"""How long the Reticulum transport waits before asking RNS again, with plain numbers.

RNS reports neither a lost link request nor a lost path request, so the transport repeats them on
its own timing (`transports.reticulum._retry`).
The rules are checked here as pure functions; the last
tests check, on trio's mock clock with RNS's tables faked, that the transport really follows them.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

import transports.reticulum._links as rns_links
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from transports.reticulum._retry import (
    CROSSING_WINDOW,
    LINK_TRIES,
    RADIO_IDLE,
    RESPONDER_GRACE,
    answer_gap,
    establish_wait,
    idle_close_after,
    keep_current_link,
    path_request_interval,
)
from transports.reticulum._state import _Link, _Peer
from transports.reticulum.transport import ReticulumTransport

ETHERNET = 10_000_000  # bits per second
LORA = 1_200
LAN_ESTIMATE = 12.0  # RNS's own establishment timeout for one hop on a LAN


# ---- waiting for a link to establish ------------------------------------------------------------


def test_a_fast_one_hop_path_waits_2_then_3_s_and_the_last_try_rns_s_own_estimate() -> None:
    waits = [establish_wait(LAN_ESTIMATE, ETHERNET, 1, attempt) for attempt in range(LINK_TRIES)]
    assert waits == [2.0, 3.0, LAN_ESTIMATE]  # a link slow to set up is still made


def test_past_the_fast_retries_every_try_waits_rns_s_own_estimate() -> None:
    waits = [establish_wait(LAN_ESTIMATE, ETHERNET, 1, attempt) for attempt in range(2, 8)]
    assert waits == [LAN_ESTIMATE] * 6


def test_a_neighbour_with_no_hop_between_counts_as_one_hop() -> None:
    assert establish_wait(LAN_ESTIMATE, ETHERNET, 0, 0) == 2.0


@pytest.mark.parametrize("attempt", [0, 1, 2, 3])
def test_a_radio_next_hop_waits_rns_s_estimate_every_time(attempt: int) -> None:
    assert establish_wait(LAN_ESTIMATE, LORA, 1, attempt) == LAN_ESTIMATE
    assert establish_wait(LAN_ESTIMATE, 999_999, 1, attempt) == LAN_ESTIMATE  # just below fast


@pytest.mark.parametrize("attempt", [0, 1, 2, 3])
def test_a_path_of_two_hops_or_more_waits_rns_s_estimate(attempt: int) -> None:
    assert establish_wait(18.0, ETHERNET, 2, attempt) == 18.0
    assert establish_wait(18.0, ETHERNET, 128, attempt) == 18.0  # RNS: hops unknown


def test_an_unknown_bitrate_is_not_fast() -> None:
    assert establish_wait(LAN_ESTIMATE, None, 1, 0) == LAN_ESTIMATE
    assert establish_wait(LAN_ESTIMATE, 0, 1, 0) == LAN_ESTIMATE


def test_exactly_one_megabit_counts_as_fast() -> None:
    assert establish_wait(LAN_ESTIMATE, 1_000_000, 1, 0) == 2.0


def test_rns_s_estimate_is_capped_at_20_s() -> None:
    assert establish_wait(60.0, LORA, 3, 0) == 20.0
    assert establish_wait(60.0, ETHERNET, 1, 1) == 3.0  # the fast waits are not affected
    assert establish_wait(60.0, ETHERNET, 1, 30) == 20.0


def test_the_wait_is_never_longer_than_rns_s_estimate_nor_under_2_s_on_a_slow_path() -> None:
    assert establish_wait(2.5, ETHERNET, 1, 1) == 2.5  # RNS gives up first: no point waiting on
    assert establish_wait(1.0, LORA, 1, 0) == 2.0
    assert establish_wait(1.0, ETHERNET, 2, 0) == 2.0


# ---- asking again for a path ----------------------------------------------------------------


def test_on_fast_interfaces_a_path_is_asked_for_every_2_s() -> None:
    assert path_request_interval([ETHERNET, 1_000_000]) == 2.0


def test_with_a_radio_among_the_interfaces_a_path_is_asked_for_once() -> None:
    assert path_request_interval([ETHERNET, LORA]) == 15.0  # the whole wait: once
    assert path_request_interval([LORA]) == 15.0


def test_an_interface_of_unknown_bitrate_counts_as_a_radio() -> None:
    assert path_request_interval([ETHERNET, None]) == 15.0


def test_with_no_interface_the_fast_interval_applies() -> None:
    assert path_request_interval([]) == 2.0


def test_the_bitrates_may_come_from_a_generator() -> None:
    assert path_request_interval(b for b in (ETHERNET, LORA)) == 15.0


# ---- answering a new or restarted peer ---------------------------------------------------------


def test_early_announces_are_spaced_a_minute_with_a_radio_5_s_otherwise() -> None:
    assert answer_gap([ETHERNET]) == 5.0
    assert answer_gap([ETHERNET, LORA]) == 60.0
    assert answer_gap([None]) == 60.0


# ---- the transport follows the rules -----------------------------------------------------------


def make_transport() -> ReticulumTransport:
    me = NodeSecrets.generate(os.urandom)
    mesh = bytes(range(32))
    return ReticulumTransport(
        configdir=Path("/nonexistent"),
        config_text="",
        rns_private=me.rns_private,
        mesh_id=mesh,
        node_id=me.node_id,
        member=MemberRecord.create(me, "me", mesh),
        trusted_keys={me.node_id: me.verify_key},
        announce_interval=60,
    )


def fake_paths(
    monkeypatch: pytest.MonkeyPatch, bitrates: list[int | None], path_after: int | None = None
) -> list[float]:
    """Fake RNS's interfaces and path table; the times at which a path is requested. A path
    appears once `path_after` requests were made (never if None)."""
    asked: list[float] = []
    rns = rns_links.RNS.Transport
    interfaces = [SimpleNamespace(bitrate=b) for b in bitrates]
    monkeypatch.setattr(rns, "interfaces", interfaces)
    monkeypatch.setattr(rns, "request_path", lambda _: asked.append(trio.current_time()))

    def has_path(_: bytes) -> bool:
        return path_after is not None and len(asked) >= path_after

    monkeypatch.setattr(rns, "has_path", has_path)
    return asked


@pytest.mark.parametrize(
    ("bitrates", "requests"), [([ETHERNET], 8), ([ETHERNET, LORA], 1), ([None], 1)]
)
async def test_the_transport_asks_for_a_lost_path_as_the_interfaces_allow(
    autojump_clock: object,
    monkeypatch: pytest.MonkeyPatch,
    bitrates: list[int | None],
    requests: int,
) -> None:
    asked = fake_paths(monkeypatch, bitrates)
    started = trio.current_time()
    await make_transport()._find_path(b"d" * 16)
    assert len(asked) == requests  # at 0, 2, …, 14 s on fast interfaces: a heal is seen at once
    assert trio.current_time() - started == pytest.approx(15.0, abs=0.1)


async def test_the_transport_stops_asking_once_the_path_is_there(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = fake_paths(monkeypatch, [ETHERNET], path_after=3)
    started = trio.current_time()
    await make_transport()._find_path(b"d" * 16)
    assert [round(t - started) for t in asked] == [0, 2, 4]


@pytest.mark.parametrize(
    ("bitrate", "waits", "sixth"), [(ETHERNET, [2.0, 3.0, 12.0], 20.0), (LORA, [12.0] * 3, 20.0)]
)
def test_the_transport_waits_for_a_link_as_rns_s_path_says(
    monkeypatch: pytest.MonkeyPatch, bitrate: int, waits: list[float], sixth: float
) -> None:
    rns = rns_links.RNS.Transport
    monkeypatch.setattr(rns, "next_hop_interface", lambda _: SimpleNamespace(bitrate=bitrate))
    monkeypatch.setattr(rns, "hops_to", lambda _: 1)
    link = SimpleNamespace(establishment_timeout=LAN_ESTIMATE)
    limit = ReticulumTransport._establish_limit
    assert [limit(link, b"d" * 16, attempt) for attempt in range(3)] == waits
    assert limit(SimpleNamespace(), b"d" * 16, 5) == sixth  # no estimate from RNS: 20 s


@pytest.mark.parametrize(("bitrate", "gap"), [(ETHERNET, 5.0), (LORA, 60.0)])
async def test_an_answer_asked_for_within_the_gap_is_put_off_never_dropped(
    autojump_clock: object, monkeypatch: pytest.MonkeyPatch, bitrate: int, gap: float
) -> None:
    """A peer restarted just after we answered another must still be answered (it was
    dropped, and the peer stayed deaf until our next announce_interval)."""
    monkeypatch.setattr(rns_links.RNS.Transport, "interfaces", [SimpleNamespace(bitrate=bitrate)])
    transport = make_transport()
    transport.announce_interval = 3600
    sent: list[float] = []

    async def announce() -> None:
        sent.append(trio.current_time())

    monkeypatch.setattr(transport, "announce", announce)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(transport._announce_loop)
        await trio.sleep(4 + gap + 1)  # past the three made at start (0, 1, 4 s) and the gap
        asked = trio.current_time()
        transport._answer_announce()
        await trio.sleep(2.5)
        first = sent[3]
        transport._answer_announce()  # within the gap of the first answer
        await trio.sleep(gap + 3)
        nursery.cancel_scope.cancel()
    assert len(sent) == 5
    assert asked + 0.2 <= first <= asked + 2.0  # the first answer: after 0.2-2 s
    assert first + gap <= sent[4] <= first + gap + 2.5  # the second: at the gap's end


# ---- closing idle links ------------------------------------------------------------------------


def test_on_a_radio_only_the_opener_closes_an_idle_link_first() -> None:
    assert idle_close_after(radio=True, outbound=True) == RADIO_IDLE
    assert idle_close_after(radio=True, outbound=False) == RADIO_IDLE + RESPONDER_GRACE
    assert RESPONDER_GRACE >= 30  # the opener's close crosses even a slow radio in time
    assert idle_close_after(radio=False, outbound=True) == idle_close_after(False, False)


async def test_the_transport_closes_an_idle_radio_link_from_one_end(autojump_clock: object) -> None:
    """Both ends of a link idle since the same moment: the opener tears it down at about two
    minutes, the other end not before another minute (by then it has heard the close)."""
    transport = make_transport()
    torn: dict[str, float] = {}

    def link(name: str) -> SimpleNamespace:
        def teardown() -> None:
            torn.setdefault(name, trio.current_time())

        return SimpleNamespace(attached_interface=SimpleNamespace(bitrate=LORA), teardown=teardown)

    now = trio.current_time()
    transport._links = {
        b"o" * 16: _Link(link("opener"), outbound=True, last_activity=now),
        b"r" * 16: _Link(link("responder"), outbound=False, last_activity=now),
    }
    for link_id, state in transport._links.items():
        state.link.link_id = link_id
        state.verified.set()  # past their HELLO: only the idle rule applies
    with trio.move_on_after(400):
        await transport._idle_loop()
    assert RADIO_IDLE <= torn["opener"] - now <= RADIO_IDLE + 10
    assert torn["responder"] - now >= RADIO_IDLE + RESPONDER_GRACE


# ---- two links that crossed ------------------------------------------------------------------

SMALL, LARGE = b"\x01" * 16, b"\x02" * 16


def test_links_that_crossed_settle_on_the_one_the_smaller_node_id_opened_at_both_ends() -> None:
    # At the smaller node: its own link is current, the larger's has just verified.
    assert keep_current_link(SMALL, 100.0, LARGE, 101.0) is True
    # At either node, the other order: the larger's link is current, the smaller's arrives.
    assert keep_current_link(LARGE, 100.0, SMALL, 101.0) is False


def test_a_link_newer_than_the_crossing_window_replaces_the_current_one() -> None:
    """The peer restarted (its new link is the only one it knows) or the old link went quiet:
    the newer link wins whoever opened it."""
    assert keep_current_link(SMALL, 100.0, LARGE, 100.0 + CROSSING_WINDOW + 0.1) is False
    assert keep_current_link(SMALL, 100.0, LARGE, 100.0 + CROSSING_WINDOW) is True


def test_a_second_link_from_the_same_opener_replaces_the_first() -> None:
    assert keep_current_link(LARGE, 100.0, LARGE, 101.0) is False


def _verified_link(opener_outbound: bool, node_id: bytes, verified_at: float) -> _Link:
    torn: list[bool] = []
    state = _Link(SimpleNamespace(teardown=lambda: torn.append(True)), outbound=opener_outbound)
    state.node_id, state.verified_at = node_id, verified_at
    state.verified.set()
    state.torn = torn  # type: ignore[attr-defined]
    return state


@pytest.mark.parametrize("order", ["own_first", "peer_first"])
async def test_two_nodes_whose_links_crossed_send_on_the_same_link_and_close_neither(
    autojump_clock: object, order: str
) -> None:
    """Both ends see both links verify, in either order: both end up sending on the link the
    smaller node id opened, and neither link is torn down (closing them is what lost both close
    frames on a half-duplex radio and left each end sending on a link the other had closed)."""
    small, large = make_transport(), make_transport()
    if small.node_id > large.node_id:
        small, large = large, small
    now = trio.current_time()
    chosen = {}
    for me, other in ((small, large), (large, small)):
        peer = _Peer(other.node_id, b"d" * 16, None, now)
        own = _verified_link(True, other.node_id, now)  # opened by `me`
        theirs = _verified_link(False, other.node_id, now)  # opened by `other`
        for state in (own, theirs) if order == "own_first" else (theirs, own):
            me._adopt(peer, state)
        chosen[me.node_id] = "own" if peer.link is own else "theirs"
        assert not own.torn and not theirs.torn  # type: ignore[attr-defined]
    assert chosen == {small.node_id: "own", large.node_id: "theirs"}
