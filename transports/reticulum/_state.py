"""The state every layer of the Reticulum transport shares, and the few primitives they all use.

`ReticulumTransport` is one class split for size into layers, each a private module that uses
only the layers below it: this one (the wire constants, the link and peer records, the shared
state and counting, emitting, posting from RNS threads and sending a frame), then `_rns_join`
(HELLO and JOIN admission), `_rns_callbacks` (what RNS calls on its threads, and the trio-side
handlers), `_rns_links` (opening links) and `transports.reticulum.transport` on top (life cycle,
announces, the Transport interface). `_RnsState` only declares the attributes:
`ReticulumTransport.__init__` sets them. Everything here runs on the trio thread except `_post`,
which is what RNS threads call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import RNS
import trio

from kai_mesh.core.errors import TransportError
from kai_mesh.core.mesh.identity import MemberRecord
from transports._bridge import ThreadBridge
from transports.base import PeerInfo, TransportBase, TransportEvent
from transports.reticulum._retry import keep_current_link

APP_NAME = "kai_mesh"
ASPECT = "node"
HELLO, MSG, PING, PONG, JOIN = 1, 2, 3, 4, 5
MAX_PAYLOAD = 256 * 1024
# Links a stranger opens to us carry nothing until their HELLO verifies (`_rns_join`). They are
# bounded: closed if unverified `HELLO_DEADLINE` s after opening (`HELLO_DEADLINE_RADIO` on a
# radio, where a link and a JOIN's governance round take longer), and at most `MAX_UNVERIFIED`
# at once: a new one beyond that closes the oldest unverified one (a flood churns through the
# slots, while a real peer needs its slot only for one HELLO round trip). They get no Resource
# (refused at the advertisement, before a byte of it is fetched) and their frames other than
# HELLO or JOIN do not keep them open.
HELLO_DEADLINE = 30.0
HELLO_DEADLINE_RADIO = 120.0
MAX_UNVERIFIED = 32
# A member's verified inbound links are bounded too (issue 15's soak: a flooding member whose
# retries reset its link left ~400 open on the target, each with an RNS watchdog thread): when a
# new one verifies beyond `MAX_LINKS_PER_PEER`, its oldest are closed. The newest wins because a
# peer that resets or restarts sends on its new link; one link per peer is the rule, the rest
# is room for links crossing at start-up and a reset racing the old link's close.
MAX_LINKS_PER_PEER = 4
# A HELLO is one link packet, never retransmitted by RNS: a lost one leaves the end that opened
# the link unverified while the other end sends on it. Asked for again at most this often per
# link (`_RnsAdmission._resend_hello`): bounded bytes, even on a link that keeps losing.
HELLO_RESEND_GAP = 2.0


@dataclass(eq=False)
class _Link:
    """One RNS link and what we know of the node at the other end."""

    link: Any
    outbound: bool
    node_id: bytes | None = None  # set once the peer's HELLO verified
    remote_public: bytes | None = None  # RNS public key proven by identify / the destination
    established: trio.Event = field(default_factory=trio.Event)
    settled: trio.Event = field(default_factory=trio.Event)  # verified, or closed: stop waiting
    verified: trio.Event = field(default_factory=trio.Event)
    hello_sent: bool = False
    pending_hello: bytes | None = None  # a HELLO/JOIN frame that overtook the identify
    closed: bool = False
    last_activity: float = 0.0
    opened_at: float = 0.0
    verified_at: float = 0.0
    hello_resent_at: float = float("-inf")  # `_resend_hello`'s rate limit


@dataclass(eq=False)
class _Peer:
    node_id: bytes
    destination_hash: bytes
    claimed_name: str | None
    last_heard: float
    name: str | None = None  # from the verified member record
    link: _Link | None = None
    connecting: trio.Event | None = None
    rtt: float | None = None
    interface: str | None = None
    boot: int | None = None  # the run number its announces carry: a change means a restart


class _RnsState(TransportBase):
    """The attributes the layers share (set by `ReticulumTransport.__init__`) and their
    primitives."""

    node_id: bytes
    mesh_id: bytes
    member: MemberRecord
    trusted_keys: Mapping[bytes, bytes]
    join_claim: bytes | None
    admit_claim: Callable[[bytes], Awaitable[bool]] | None
    _nursery: trio.Nursery | None
    _counters: dict[str, int]
    _peers: dict[bytes, _Peer]
    _links: dict[bytes, _Link]
    #: Ids of verified links. Written on the trio thread; read on RNS threads (a set lookup)
    #: to refuse Resources on links whose HELLO has not verified.
    _verified_links: set[bytes]
    _pings: dict[bytes, trio.Event]
    _send_events: trio.MemorySendChannel[TransportEvent]
    _bridge: ThreadBridge
    _identity: Any
    _announce_early: trio.Event
    _last_announce: float

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        self._bridge.post(fn, *args)

    def _count(self, reason: str) -> None:
        self._counters[reason] = self._counters.get(reason, 0) + 1

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._send_events.send_nowait(event)
        except trio.WouldBlock:
            self._count("dropped_events")

    def _peer_info(self, peer: _Peer) -> PeerInfo:
        return PeerInfo(
            node_id=peer.node_id,
            name=peer.name or peer.claimed_name,
            hops=None,
            interface=None,
            last_heard=peer.last_heard,
            rtt=peer.rtt,
        )

    def _answer_announce(self) -> None:
        """A peer we did not know announced (it started, or came back): announce ourselves soon
        so that it learns of us now rather than at our next interval. Answers are spaced
        (`_rns_retry.answer_gap`: on a radio a minute, so arrivals cost one announce a minute,
        not a storm); one asked for inside the gap goes out at its end, never dropped."""
        self._announce_early.set()

    def _opener(self, state: _Link) -> bytes:
        """Node id of the end that opened a verified link."""
        assert state.node_id is not None
        return self.node_id if state.outbound else state.node_id

    def _adopt(self, peer: _Peer, state: _Link) -> None:
        """`state` to `peer` has just verified: send on it from now on, unless the current link
        is one both ends keep instead (`_rns_retry.keep_current_link`). The other is not closed:
        the peer may be sending on it; unused, it idles out."""
        current = peer.link
        if current is not None and current is not state and _usable(current):
            now = trio.current_time()
            if keep_current_link(
                self._opener(current), current.verified_at, self._opener(state), now
            ):
                return
        peer.link = state

    def _send_frame(self, state: _Link, kind: int, body: bytes, verified_only: bool = True) -> None:
        if verified_only and not state.verified.is_set():
            raise TransportError("link not verified")
        frame = bytes([kind]) + body
        state.last_activity = trio.current_time()
        try:
            if len(frame) <= state.link.mdu:
                RNS.Packet(state.link, frame).send()
            else:
                RNS.Resource(frame, state.link)
        except Exception as exc:
            raise TransportError(f"Reticulum refused to send: {exc}") from exc


def _usable(state: _Link | None) -> bool:
    return state is not None and state.verified.is_set() and not state.closed


def identity_from_public(public_key: bytes) -> Any:
    """An RNS identity that holds only the public key (to address or verify)."""
    identity = RNS.Identity(create_keys=False)
    identity.load_public_key(public_key)
    return identity
