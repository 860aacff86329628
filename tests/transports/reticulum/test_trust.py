"""Who a Reticulum peer may be: announce filtering and the HELLO check, without a network.

The transport's trio-side handlers are driven directly with fake links, so each refusal rule is
tested on its own: another mesh, an untrusted node, a forged or mismatched member record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from kai_mesh.core.codec import pack
from kai_mesh.core.errors import NameMismatch
from kai_mesh.core.governance.wire import InviteSecret, Redemption, encode_redemption
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from transports.base import MessageReceived, PeerSeen
from transports.reticulum.transport import (
    ANNOUNCE_FORMAT,
    HELLO,
    JOIN,
    MSG,
    ReticulumTransport,
    _Link,
)

MESH = bytes(range(32))


@dataclass
class FakeLink:
    link_id: bytes = field(default_factory=lambda: os.urandom(16))
    torn_down: bool = False
    sent: list[bytes] = field(default_factory=list)

    def teardown(self) -> None:
        self.torn_down = True

    def get_remote_identity(self) -> None:
        return None  # not identified (yet)

    def __getattr__(self, name: str) -> object:
        if name.startswith("set_"):  # RNS callback registration: nothing to register here
            return lambda *args: None
        raise AttributeError(name)


def make(trusted: list[NodeSecrets]) -> tuple[ReticulumTransport, NodeSecrets]:
    me = NodeSecrets.generate(os.urandom)
    keys = {s.node_id: s.verify_key for s in [me, *trusted]}
    transport = ReticulumTransport(
        configdir=Path("/nonexistent"),
        config_text="",
        rns_private=me.rns_private,
        mesh_id=MESH,
        node_id=me.node_id,
        member=MemberRecord.create(me, "me", MESH),
        trusted_keys=keys,
        announce_interval=60,
    )
    return transport, me


def inbound(transport: ReticulumTransport, remote_public: bytes | None) -> tuple[_Link, FakeLink]:
    fake = FakeLink()
    transport._on_inbound_link(fake)
    state = transport._links[fake.link_id]
    state.remote_public = remote_public
    state.hello_sent = True  # do not try to send our own HELLO over the fake link
    return state, fake


def announce_data(mesh: bytes, node_id: bytes, name: str) -> bytes:
    return pack([ANNOUNCE_FORMAT, mesh[:8], node_id, name])


async def test_announces_of_other_meshes_and_untrusted_nodes_are_counted_not_kept() -> None:
    friend, stranger = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    transport._on_announce(b"d" * 16, announce_data(b"x" * 32, friend.node_id, "friend"))
    transport._on_announce(b"d" * 16, announce_data(MESH, stranger.node_id, "stranger"))
    transport._on_announce(b"d" * 16, b"\x93garbage")
    transport._on_announce(b"d" * 16, None)
    counters = transport.counters()
    assert (counters["other_mesh"], counters["untrusted"], counters["malformed"]) == (1, 1, 2)
    assert transport.peers() == [] and transport.resolve_name("friend") is None
    transport._on_announce(b"d" * 16, announce_data(MESH, friend.node_id, "friend"))
    assert transport.resolve_name("friend") == friend.node_id
    event = transport.events.receive_nowait()
    assert isinstance(event, PeerSeen) and event.peer.node_id == friend.node_id


async def test_a_long_claimed_name_is_cut_the_same_way_on_every_announce() -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    long_name = "n" * 40
    for _ in range(2):  # first heard, then heard again
        transport._on_announce(b"d" * 16, announce_data(MESH, friend.node_id, long_name))
        assert transport.resolve_name(long_name[:32]) == friend.node_id
        assert transport.resolve_name(long_name) is None


async def test_an_announce_carries_the_governance_digest_to_whoever_listens() -> None:
    friend, stranger = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    heard: list[tuple[bytes, bytes]] = []
    transport.on_announce_digest = lambda node_id, digest: heard.append((node_id, digest))

    def with_digest(node: NodeSecrets, digest: object) -> bytes:
        # The longest name and a large run number: the whole app_data must still be read.
        return pack([ANNOUNCE_FORMAT, MESH[:8], node.node_id, "n" * 32, 2**40, digest])

    transport._on_announce(b"d" * 16, with_digest(stranger, b"s" * 8))  # untrusted: not passed on
    transport._on_announce(b"d" * 16, announce_data(MESH, friend.node_id, "friend"))  # none
    transport._on_announce(b"e" * 16, with_digest(friend, b"short"))  # not 8 bytes: ignored
    transport._on_announce(b"e" * 16, with_digest(friend, b"g" * 8))
    assert heard == [(friend.node_id, b"g" * 8)]


async def test_a_verified_hello_binds_the_link_and_opens_it_for_messages() -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    state, fake = inbound(transport, friend.rns_public)
    transport._on_frame(fake.link_id, bytes([MSG]) + b"early")
    assert transport.counters()["unverified_frame"] == 1
    record = MemberRecord.create(friend, "friend", MESH)
    transport._on_frame(fake.link_id, bytes([HELLO]) + record.to_bytes())
    assert state.verified.is_set() and state.node_id == friend.node_id and not fake.torn_down
    assert transport.resolve_name("friend") == friend.node_id
    transport._on_frame(fake.link_id, bytes([MSG]) + b"envelope")
    events = [transport.events.receive_nowait() for _ in range(2)]
    assert isinstance(events[0], PeerSeen)
    assert events[1] == MessageReceived(node_id=friend.node_id, data=b"envelope")


async def test_a_name_from_an_announce_is_checked_against_the_member_record() -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    transport._on_announce(b"d" * 16, announce_data(MESH, friend.node_id, "alice"))
    assert transport.resolve_name("alice") == friend.node_id  # only a claim so far
    _, fake = inbound(transport, friend.rns_public)
    record = MemberRecord.create(friend, "bob", MESH)
    transport._on_frame(fake.link_id, bytes([HELLO]) + record.to_bytes())
    await transport.confirm_name(friend.node_id, "bob")  # what its record says: fine
    with pytest.raises(NameMismatch, match="'alice' but its member record names it 'bob'"):
        await transport.confirm_name(friend.node_id, "alice")
    assert transport.resolve_name("alice") is None  # the false claim is not used again
    assert transport.resolve_name("bob") == friend.node_id
    assert transport.counters()["name_mismatch"] == 1


async def test_hellos_that_prove_nothing_close_the_link() -> None:
    friend, stranger = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    good = MemberRecord.create(friend, "friend", MESH)
    cases = {
        "forged": (friend.rns_public, good.to_bytes()[:-1] + bytes([good.to_bytes()[-1] ^ 1])),
        "other mesh": (friend.rns_public, MemberRecord.create(friend, "f", b"y" * 32).to_bytes()),
        "untrusted": (stranger.rns_public, MemberRecord.create(stranger, "s", MESH).to_bytes()),
        "not the link's key": (stranger.rns_public, good.to_bytes()),
        "garbage": (friend.rns_public, b"\x01\x02\x03"),
    }
    for why, (remote_public, body) in cases.items():
        state, fake = inbound(transport, remote_public)
        transport._on_frame(fake.link_id, bytes([HELLO]) + body)
        assert fake.torn_down and not state.verified.is_set(), why
    counters = transport.counters()
    assert counters["bad_member_record"] == 4 and counters["untrusted"] == 1
    assert transport.peers() == []


async def test_a_full_event_channel_drops_and_counts(monkeypatch: object) -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    _, fake = inbound(transport, friend.rns_public)
    transport._on_frame(
        fake.link_id, bytes([HELLO]) + MemberRecord.create(friend, "f", MESH).to_bytes()
    )
    for _ in range(5000):
        transport._on_frame(fake.link_id, bytes([MSG]) + b"x")
    assert transport.counters()["dropped_events"] > 0
    await trio.lowlevel.checkpoint()


async def test_a_hello_that_overtakes_the_identify_waits_for_it() -> None:
    """RNS runs each packet's callback on its own thread: the HELLO may be handled first."""
    friend, stranger = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])
    hello = bytes([HELLO]) + MemberRecord.create(friend, "friend", MESH).to_bytes()
    state, fake = inbound(transport, None)
    transport._on_frame(fake.link_id, hello)
    assert not state.verified.is_set() and not fake.torn_down  # waiting, not refused
    transport._on_identified(fake.link_id, friend.rns_public)
    assert state.verified.is_set() and state.node_id == friend.node_id
    liar, liar_link = inbound(transport, None)
    transport._on_frame(liar_link.link_id, hello)
    transport._on_identified(liar_link.link_id, stranger.rns_public)  # not the record's key
    assert liar_link.torn_down and not liar.verified.is_set()


def join_frame(node: NodeSecrets, claim_for: NodeSecrets | None = None) -> bytes:
    """A JOIN: `node`'s member record and a claim of a fresh invite for `claim_for` (or `node`)."""
    holder = claim_for or node
    invite = InviteSecret(os.urandom(32))
    claim = encode_redemption(
        Redemption(invite.verify_key, holder.verify_key, 1), invite, holder, MESH
    )
    record = MemberRecord.create(node, "newbie", MESH).to_bytes()
    return bytes([JOIN]) + pack([record, claim])


async def test_a_join_is_admitted_once_the_node_takes_the_claim() -> None:
    newbie = NodeSecrets.generate(os.urandom)
    transport, _ = make([])
    handed: list[bytes] = []

    async def admit(claim: bytes) -> bool:
        handed.append(claim)
        transport.trusted_keys[newbie.node_id] = newbie.verify_key  # type: ignore[index]
        return True

    transport.admit_claim = admit
    async with trio.open_nursery() as nursery:
        transport._nursery = nursery
        state, fake = inbound(transport, newbie.rns_public)
        transport._on_frame(fake.link_id, join_frame(newbie))
        assert not state.verified.is_set() and not fake.torn_down  # waiting for the node
        with trio.fail_after(5):
            await state.verified.wait()
    assert len(handed) == 1 and state.node_id == newbie.node_id and not fake.torn_down
    assert transport.counters()["joins_admitted"] == 1
    assert transport.resolve_name("newbie") == newbie.node_id


async def test_joins_that_prove_nothing_or_are_refused_close_the_link() -> None:
    newbie, other = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    transport, _ = make([])
    handed: list[bytes] = []

    async def refuse(claim: bytes) -> bool:
        handed.append(claim)
        return False  # the invite is unknown or taken

    transport.admit_claim = refuse
    async with trio.open_nursery() as nursery:
        transport._nursery = nursery
        # Refused at once, the node never asked: another node's claim, another link key, junk.
        for remote, frame in (
            (newbie.rns_public, join_frame(newbie, claim_for=other)),
            (other.rns_public, join_frame(newbie)),
            (newbie.rns_public, bytes([JOIN]) + pack([b"x", b"y"])),
        ):
            state, fake = inbound(transport, remote)
            transport._on_frame(fake.link_id, frame)
            assert fake.torn_down and not state.verified.is_set()
        assert handed == []
        # Handed over, and refused by the node.
        state, fake = inbound(transport, newbie.rns_public)
        transport._on_frame(fake.link_id, join_frame(newbie))
        await trio.testing.wait_all_tasks_blocked()
    assert fake.torn_down and len(handed) == 1 and not state.verified.is_set()
    counters = transport.counters()
    assert counters["join_refused"] == 1 and counters["untrusted"] == 2
    assert counters["bad_member_record"] == 1


async def test_a_member_that_sends_join_is_admitted_without_its_claim() -> None:
    friend = NodeSecrets.generate(os.urandom)
    transport, _ = make([friend])

    async def never(claim: bytes) -> bool:
        raise AssertionError("a member's claim is not handed over")

    transport.admit_claim = never
    state, fake = inbound(transport, friend.rns_public)
    transport._on_frame(fake.link_id, join_frame(friend))
    assert state.verified.is_set() and state.node_id == friend.node_id and not fake.torn_down
