"""A HELLO is one link packet and RNS does not retransmit it. When the HELLO of the end that
did not open a link is lost, that end (it verified the opener's HELLO) sends on the link while
the opener refuses every frame and Resource on it as unverified: in CI a 20 KB send at 5 kbit/s
failed twice in a second this way. The opener now asks again with its own HELLO, the other end
answers a HELLO on a link it verified with its own, both at most once per `HELLO_RESEND_GAP` s;
and a link that closes leaves the peer on another verified link to it, if there is one."""

from __future__ import annotations

import os

import trio
import trio.testing

from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from tests.transports.reticulum.test_trust import MESH, FakeLink, inbound, make
from tests.transports.reticulum.test_unverified import Advert
from transports.reticulum._state import HELLO_RESEND_GAP, _Link
from transports.reticulum.transport import HELLO, MSG, ReticulumTransport


def _hellos(transport: ReticulumTransport) -> list[_Link]:
    sent: list[_Link] = []
    transport._send_hello = sent.append  # type: ignore[method-assign]
    transport._bridge.post = lambda fn, *args: fn(*args)  # type: ignore[method-assign]
    return sent


def _opened(transport: ReticulumTransport, remote_public: bytes) -> tuple[_Link, FakeLink]:
    """A link this node opened, established, its HELLO sent, the peer's not (yet) heard."""
    fake = FakeLink()
    state = _Link(fake, outbound=True, remote_public=remote_public)
    state.established.set()
    state.hello_sent = True
    transport._links[fake.link_id] = state
    return state, fake


async def test_the_opener_asks_again_when_the_peer_sends_on_a_link_it_has_not_verified(
    autojump_clock: trio.testing.MockClock,
) -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    sent = _hellos(transport)
    state, fake = _opened(transport, friend.rns_public)
    transport._on_frame(fake.link_id, bytes([MSG]) + b"x")
    assert sent == [state]
    transport._on_frame(fake.link_id, bytes([MSG]) + b"x")
    assert transport._rns_resource_offered(Advert(fake, 20_000)) is False
    assert sent == [state]  # rate-limited
    await trio.sleep(HELLO_RESEND_GAP)
    assert transport._rns_resource_offered(Advert(fake, 20_000)) is False
    assert sent == [state, state]
    assert transport.counters()["hello_resent"] == 2
    # The peer's HELLO arrives at last: verified, and frames are taken.
    transport._on_frame(
        fake.link_id, bytes([HELLO]) + MemberRecord.create(friend, "f", MESH).to_bytes()
    )
    assert state.verified.is_set()
    assert transport._rns_resource_offered(Advert(fake, 20_000)) is True
    assert len(sent) == 2  # the opener never answers a HELLO with one


async def test_an_inbound_link_never_asks_and_a_stranger_gets_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    sent = _hellos(transport)
    _, fake = inbound(transport, None)  # a stranger's link, never verified
    for _ in range(5):
        transport._on_frame(fake.link_id, bytes([MSG]) + b"x")
        transport._rns_resource_offered(Advert(fake, 20_000))
    assert sent == []


async def test_a_hello_again_on_a_verified_inbound_link_is_answered_at_most_every_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    sent = _hellos(transport)
    state, fake = inbound(transport, friend.rns_public)
    hello = bytes([HELLO]) + MemberRecord.create(friend, "f", MESH).to_bytes()
    transport._on_frame(fake.link_id, hello)
    assert state.verified.is_set() and sent == []  # our HELLO went with admission (faked)
    transport._on_frame(fake.link_id, hello)
    transport._on_frame(fake.link_id, hello)
    assert sent == [state]
    await trio.sleep(HELLO_RESEND_GAP)
    transport._on_frame(fake.link_id, hello)
    assert sent == [state, state]


async def test_a_closed_link_leaves_the_peer_on_its_other_verified_link(
    autojump_clock: trio.testing.MockClock,
) -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    _hellos(transport)
    hello = bytes([HELLO]) + MemberRecord.create(friend, "f", MESH).to_bytes()
    first, first_fake = inbound(transport, friend.rns_public)
    transport._on_frame(first_fake.link_id, hello)
    await trio.sleep(1)
    second, second_fake = inbound(transport, friend.rns_public)
    transport._on_frame(second_fake.link_id, hello)
    peer = transport._peers[friend.node_id]
    assert peer.link in (first, second)
    current = peer.link
    other = second if current is first else first
    transport._on_closed(current.link.link_id)
    assert peer.link is other
    transport._on_closed(other.link.link_id)
    assert peer.link is None
