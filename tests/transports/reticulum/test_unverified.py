"""Issue 15, finding 6: links a stranger opens are bounded before their HELLO verifies — a
deadline, a cap with the oldest giving way, no Resources, and garbage does not keep them open.
The trio-side handlers are driven with fake links and trio's mock clock (`test_trust.py`)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import trio
import trio.testing

from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from tests.transports.reticulum.test_trust import MESH, FakeLink, inbound, make
from transports.reticulum._join import MAX_JOIN
from transports.reticulum._state import HELLO_DEADLINE, MAX_LINKS_PER_PEER, MAX_UNVERIFIED
from transports.reticulum.transport import HELLO, MAX_PAYLOAD, MSG


@dataclass
class Advert:
    """What RNS hands the resource callback: an advertisement, its link and its size."""

    link: FakeLink
    size: int

    def get_data_size(self) -> int:
        return self.size


async def test_a_link_without_a_hello_is_closed_at_the_deadline_garbage_or_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    silent_state, silent = inbound(transport, None)
    _, chatty = inbound(transport, None)
    good_state, good = inbound(transport, friend.rns_public)
    transport._on_frame(
        good.link_id, bytes([HELLO]) + MemberRecord.create(friend, "f", MESH).to_bytes()
    )
    assert good_state.verified.is_set()
    start = trio.current_time()
    while trio.current_time() - start < HELLO_DEADLINE + 3:
        transport._on_frame(chatty.link_id, bytes([MSG]) + b"garbage")  # keeps nothing alive
        await trio.sleep(1)
        transport._check_links(trio.current_time())
    assert silent.torn_down and chatty.torn_down and not good.torn_down
    assert silent_state.closed and set(transport._links) == {good.link_id}
    assert transport.counters()["hello_timeout"] == 2


async def test_at_most_max_unverified_links_the_oldest_gives_way(
    autojump_clock: trio.testing.MockClock,
) -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    flood = []
    for _ in range(400):
        flood.append(inbound(transport, None)[1])
        await trio.sleep(0.01)
    assert len(transport._links) == MAX_UNVERIFIED
    assert all(f.torn_down for f in flood[:-MAX_UNVERIFIED])
    assert not any(f.torn_down for f in flood[-MAX_UNVERIFIED:])
    assert transport.counters()["unverified_evicted"] == 400 - MAX_UNVERIFIED
    # a real peer arriving in the middle of the flood keeps its slot once its HELLO verifies
    state, fake = inbound(transport, friend.rns_public)
    transport._on_frame(
        fake.link_id, bytes([HELLO]) + MemberRecord.create(friend, "f", MESH).to_bytes()
    )
    for _ in range(100):
        inbound(transport, None)
    assert state.verified.is_set() and not fake.torn_down and fake.link_id in transport._links


async def test_resources_are_refused_until_the_hello_verifies() -> None:
    """Before the HELLO verifies, only a JOIN-sized Resource is taken (a JOIN with its claim is
    larger than one packet); anything larger is refused at the advertisement."""
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    state, fake = inbound(transport, friend.rns_public)
    transport._bridge.post = lambda fn, *args: fn(*args)  # type: ignore[method-assign]
    assert transport._rns_resource_offered(Advert(fake, MAX_JOIN + 1)) is True
    assert transport._rns_resource_offered(Advert(fake, MAX_JOIN + 2)) is False
    assert transport._rns_resource_offered(Advert(fake, 256 * 1024)) is False
    assert transport.counters()["resource_unverified"] == 2
    transport._on_frame(
        fake.link_id, bytes([HELLO]) + MemberRecord.create(friend, "f", MESH).to_bytes()
    )
    assert transport._rns_resource_offered(Advert(fake, 1000)) is True
    assert transport._rns_resource_offered(Advert(fake, MAX_PAYLOAD + 2)) is False
    transport._on_closed(fake.link_id)
    assert transport._rns_resource_offered(Advert(fake, 10_000)) is False  # closed: forgotten
    assert state.closed


async def test_a_members_verified_inbound_links_are_bounded_the_oldest_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Issue 15's soak: a member whose retries kept resetting its link left ~400 verified links
    open on the target. Past MAX_LINKS_PER_PEER the oldest are closed; the newest carries on,
    and another member's link is not touched."""
    member, other = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    transport, _ = make([member, other])
    hello = bytes([HELLO]) + MemberRecord.create(member, "m", MESH).to_bytes()
    _, bystander = inbound(transport, other.rns_public)
    transport._on_frame(
        bystander.link_id, bytes([HELLO]) + MemberRecord.create(other, "o", MESH).to_bytes()
    )
    links = []
    for _ in range(10):
        state, fake = inbound(transport, member.rns_public)
        transport._on_frame(fake.link_id, hello)
        assert state.verified.is_set()
        links.append(fake)
        await trio.sleep(1)
    assert all(f.torn_down for f in links[:-MAX_LINKS_PER_PEER])
    assert not any(f.torn_down for f in links[-MAX_LINKS_PER_PEER:])
    assert not bystander.torn_down
    open_ = [s for s in transport._links.values() if s.node_id == member.node_id]
    assert len(open_) == MAX_LINKS_PER_PEER
    assert transport.counters()["links_over_peer_cap"] == 10 - MAX_LINKS_PER_PEER
