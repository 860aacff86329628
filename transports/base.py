"""The one interface the node's runtime sees of any transport.

A transport carries opaque byte strings (encoded envelopes) between **peers**, named by their
16-byte node id. It discovers peers on its own (Reticulum announces, a simulated graph, …), tells
the runtime what happened through a stream of events, and refuses — counting, never raising — input
from outside the mesh. The runtime decides what the bytes mean; a transport never parses an
envelope.

Life cycle, as every long-running trio service here: `await nursery.start(transport.run)`; `run`
calls `task_status.started()` once the transport can send, and returns only when cancelled.

What a transport can do beyond the required methods is **declared**, as data (`Abilities`), and the
runtime reads that declaration; it never probes for methods. Every transport subclasses
`TransportBase`, so the optional methods always exist: an undeclared one raises
`TransportError` (an action) or does nothing (a setter for a hook the transport has no use for),
and the runtime calls an action only where the abilities say it may.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from kai_mesh.core.errors import TransportError
from kai_mesh.core.messaging.envelope import StandardMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class InterfaceInfo:
    """One network interface of a transport (a radio, a TCP socket, a simulated link)."""

    name: str
    kind: str
    mtu: int  # largest payload one packet carries, bytes
    bitrate: int | None  # bits per second, None when unknown
    online: bool
    tx_bytes: int = 0
    rx_bytes: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerInfo:
    """What a transport knows of one peer."""

    node_id: bytes
    name: str | None
    hops: int | None
    interface: str | None
    last_heard: float  # trio.current_time() of the last packet or announce from it
    rtt: float | None  # seconds, last measured
    capabilities: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSeen:
    """A trusted peer of this mesh announced itself or answered (first time, or again)."""

    peer: PeerInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerLost:
    """The transport no longer has a way to reach this peer."""

    node_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """Bytes from an authenticated peer: `node_id` is proven by the transport, not claimed."""

    node_id: bytes
    data: bytes
    interface: str | None = None
    #: The carrier's own id of what brought it (a Nostr event id), for `REPLYING_TO`; None
    #: where the carrier has none worth naming.
    ref: str | None = None


#: While the runtime sends a reply, the `ref` of the request it answers (None otherwise): a
#: transport that can name the request on the wire does (Nostr: an `e` tag on the reply, as
#: NIP-46 and ContextVM do, so a client may subscribe to the replies of one request). The
#: runtime sets it around the reply's send only; it never decides where anything goes.
REPLYING_TO: ContextVar[str | None] = ContextVar("REPLYING_TO", default=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastReceived:
    """Bytes broadcast by someone on a shared medium (`Transport.broadcast`). The sender is
    NOT proven: the runtime checks what the bytes claim (a heartbeat is signed)."""

    data: bytes
    interface: str | None = None


TransportEvent = PeerSeen | PeerLost | MessageReceived | BroadcastReceived


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    rtt: float  # seconds
    hops: int | None


#: The node's local bus: a message and the caller's reply deadline in, the reply out.
LocalHandler = Callable[[StandardMessage, float | None], Awaitable[StandardMessage]]


class Transport(Protocol):
    """What the runtime needs of a transport. Methods raise `TransportError` when they fail.

    The methods after `counters` are optional abilities: call one only where `abilities` declares
    it (`TransportBase` gives every transport all of them)."""

    name: str
    abilities: Abilities
    #: Seconds between announces, for a transport with `abilities.announces`; the runtime
    #: stretches it to fit a slow radio's airtime budget.
    announce_interval: float

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start; call `task_status.started()` when ready to send; run until cancelled."""
        ...

    async def send(self, node_id: bytes, data: bytes) -> None:
        """Hand `data` to the peer. Returns when the transport accepted it for sending (not on
        delivery: acknowledgement is the runtime's business). Raises `TransportError` when the
        peer is unknown or unreachable, or `data` is larger than `max_payload`."""
        ...

    async def announce(self) -> None:
        """Tell the network this node is here (Reticulum: an announce with app_data)."""
        ...

    async def ping(self, node_id: bytes) -> PingResult:
        """Round trip to the peer at the transport level; raises `TransportError`."""
        ...

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        """Events in the order they happened. Bounded: a transport states what it drops."""
        ...

    @property
    def max_payload(self) -> int:
        """Largest `data` `send` accepts, bytes."""
        ...

    def interfaces(self) -> list[InterfaceInfo]: ...

    def peers(self) -> list[PeerInfo]: ...

    def counters(self) -> dict[str, int]:
        """Refused and dropped input by reason (`untrusted`, `other_mesh`, `malformed`, …)."""
        ...

    # ---- optional abilities (see `Abilities`) ------------------------------------------------

    async def broadcast(self, data: bytes) -> None:
        """`abilities.broadcast`: `data` once on every interface, to whoever hears it; no
        delivery promise."""
        ...

    def reset_link(self, node_id: bytes) -> None:
        """`abilities.link_reset`: drop the live link to the peer, so the next send opens a
        fresh one (a link that lost a message is not trusted again)."""
        ...

    def forget(self, node_id: bytes) -> None:
        """Drop everything held for a peer that is no longer a member (links, paths, names).
        Every transport has it; one that holds nothing per peer does nothing."""
        ...

    async def store_and_forward(self, node_id: bytes, data: bytes) -> bool:
        """`abilities.store_and_forward`: leave `data` with a carrier that keeps it until the
        peer can take it. True when the carrier took it."""
        ...

    def resolve_name(self, name: str) -> bytes | None:
        """`abilities.names`: the node id a display name was announced with, or None."""
        ...

    async def confirm_name(self, node_id: bytes, name: str) -> None:
        """`abilities.names`: check the name against the peer's signed member record; raises
        `NameMismatch`."""
        ...

    def set_run_number(self, run: int) -> None:
        """`abilities.run_number`: the node's run number, which its announces carry (a peer
        that sees it change knows the node restarted)."""
        ...

    def set_announce_digest(
        self, ours: Callable[[], bytes], heard: Callable[[bytes, bytes], None]
    ) -> None:
        """`abilities.announce_digest`: announces carry `ours()` (8 bytes); `heard(node_id,
        digest)` gets each peer's."""
        ...

    def set_claim_admission(
        self, claim: bytes | None, admit: Callable[[bytes], Awaitable[bool]]
    ) -> None:
        """`abilities.admits_claims`: the node's own invite claim, sent on JOIN (None: no
        claim), and `admit(claim)`, which decides a joiner's claim."""
        ...

    def set_sync_digests(
        self,
        ours: Callable[[], dict[int, bytes]],
        heard: Callable[[bytes, dict[int, bytes]], None],
    ) -> None:
        """`abilities.sync_digests`: the transport publishes `ours()` (the state and governance
        digests by slot, as heartbeats carry them) to its peers, and hands each peer's to
        `heard(node_id, digests)`."""
        ...

    def sync_changed(self) -> None:
        """`abilities.sync_digests`: `ours()` changed; publish it soon."""
        ...

    def bind_local(self, local: LocalHandler) -> None:
        """`abilities.guests`: the local bus, which serves guests' requests."""
        ...

    def set_guest_intents(self, intents: Iterable[str] | None) -> None:
        """`abilities.guests`: the intents guests may call (None: the transport's configured)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Extra fields for `kai-mesh status` (e.g. an LXMF address); may be empty."""
        ...

    def packet_room(self, node_id: bytes) -> int:
        """`abilities.packets`: bytes of `data` that one packet to the peer carries now (on
        Reticulum, the link's MDU less our type byte; before a link exists, the smallest)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Abilities:
    """What a transport can do, declared once by the transport and read by the runtime.

    Each flag is a promise the runtime relies on, not a hint; two of them are often confused:
    `live_links` says a message goes to a reachable peer now and a peer is heard when it talks
    (so liveness watches it and a late reply is asked for), `store_and_forward` says a carrier
    keeps a message for an absent peer. A Nostr relay, for one, stores and is not a live link
    to anyone; LXMF stores and confirms delivery with its own receipts."""

    live_links: bool = False  # peers reached now over links or packets; liveness watches them
    own_receipts: bool = False  # delivery is confirmed by the transport (LXMF): never ask
    broadcast: bool = False  # `broadcast()`: one frame reaches every neighbour
    link_reset: bool = False  # `reset_link()`: a fresh link for the next send
    store_and_forward: bool = False  # `store_and_forward()`: a carrier keeps it for later
    relay_stores: bool = False  # the carrier (a relay, a propagation node) keeps what it carries
    names: bool = False  # `resolve_name()`, `confirm_name()`
    announces: bool = False  # announces every `announce_interval`, on the airtime budget
    run_number: bool = False  # `set_run_number()`: announces say when the node restarted
    announce_digest: bool = False  # `set_announce_digest()`: announces carry 8 bytes of sync
    admits_claims: bool = False  # `set_claim_admission()`: invite claims arrive on JOIN
    guests: bool = False  # `bind_local()`, `set_guest_intents()`: non-members call intents
    #: `set_sync_digests()`, `sync_changed()`: the transport carries the sync digests to its
    #: peers itself (no heartbeat reaches them: Nostr), and state and governance sync with them.
    sync_digests: bool = False
    #: `packet_room()`: `send` of up to that many bytes is one packet, and a packet has a cost
    #: worth sharing, so the runtime packs frames that queue for a peer into BATCH frames
    #: (`core.messaging.batch`); the peer's runtime unpacks them.
    packets: bool = False


class TransportBase:
    """The optional methods of `Transport`, for a transport that lacks the ability: actions
    raise `TransportError`, hooks the transport has no use for are ignored. Subclasses set
    `name` and `abilities` and override what they declare."""

    name: str = "transport"
    abilities: Abilities = Abilities()
    announce_interval: float = 0.0

    def _unable(self, what: str) -> TransportError:
        return TransportError(f"{self.name} cannot {what}")

    async def broadcast(self, data: bytes) -> None:
        raise self._unable("broadcast")

    def reset_link(self, node_id: bytes) -> None:
        raise self._unable("reset a link")

    def forget(self, node_id: bytes) -> None:
        return None

    async def store_and_forward(self, node_id: bytes, data: bytes) -> bool:
        raise self._unable("store and forward")

    def resolve_name(self, name: str) -> bytes | None:
        return None

    async def confirm_name(self, node_id: bytes, name: str) -> None:
        raise self._unable("confirm names")

    def set_run_number(self, run: int) -> None:
        return None

    def set_announce_digest(
        self, ours: Callable[[], bytes], heard: Callable[[bytes, bytes], None]
    ) -> None:
        return None

    def set_claim_admission(
        self, claim: bytes | None, admit: Callable[[bytes], Awaitable[bool]]
    ) -> None:
        return None

    def set_sync_digests(
        self,
        ours: Callable[[], dict[int, bytes]],
        heard: Callable[[bytes, dict[int, bytes]], None],
    ) -> None:
        return None

    def sync_changed(self) -> None:
        return None

    def bind_local(self, local: LocalHandler) -> None:
        return None

    def set_guest_intents(self, intents: Iterable[str] | None) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {}

    def packet_room(self, node_id: bytes) -> int:
        raise self._unable("say what one packet carries")
