"""The one interface the node's runtime sees of any transport.

A transport carries opaque byte strings (encoded envelopes) between **peers**, named by their
16-byte node id. It discovers peers on its own (Reticulum announces, a simulated graph, …), tells
the runtime what happened through a stream of events, and refuses — counting, never raising — input
from outside the mesh. The runtime decides what the bytes mean; a transport never parses an
envelope.

Life cycle, as every long-running trio service here: `await nursery.start(transport.run)`; `run`
calls `task_status.started()` once the transport can send, and returns only when cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import trio


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


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastReceived:
    """Bytes broadcast by someone on a shared medium (`Broadcaster.broadcast`). The sender is
    NOT proven: the runtime checks what the bytes claim (a heartbeat is signed)."""

    data: bytes
    interface: str | None = None


TransportEvent = PeerSeen | PeerLost | MessageReceived | BroadcastReceived


@dataclass(frozen=True, slots=True, kw_only=True)
class PingResult:
    rtt: float  # seconds
    hops: int | None


class Transport(Protocol):
    """What the runtime needs of a transport. Methods raise `TransportError` when they fail."""

    name: str

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


class Broadcaster(Protocol):
    """Optional: a transport that can reach every neighbour with one frame (a radio, a LAN
    segment). Heartbeats use it so that an idle mesh costs one frame per node, not one per
    pair of nodes."""

    async def broadcast(self, data: bytes) -> None:
        """Send `data` once on every interface, to whoever hears it; no delivery promise."""
        ...


class LinkResetter(Protocol):
    """Optional: a transport with long-lived links that can drop the link to a peer, so that the
    next send opens a fresh one (a link that lost a message is not trusted again)."""

    def reset_link(self, node_id: bytes) -> None: ...
