"""Reticulum as a kai-mesh transport. The only module (with `transports.lxmf`) that imports RNS.

RNS is one instance per process, runs its own threads, installs signal handlers and calls
`os._exit` at teardown (LAB.md). So: `ReticulumTransport.start_rns()` runs on the main thread
before `trio.run`, writes the RNS config itself (`share_instance = No`, `enabled = yes` on every
interface), routes RNS logs into `logging` and puts the default SIGINT/SIGTERM handlers back;
`shutdown_rns()` runs after trio has finished. Every RNS callback arrives on an RNS thread and is
handed to trio with `TrioToken.run_sync_soon` — state is only ever touched on the trio thread, so
nothing here needs a lock — and an event channel that is full drops and counts instead of raising
(a raise there would be a TrioInternalError that kills the node).

Discovery: each node announces the destination `kai_mesh.node` of its Reticulum identity with a
small app_data `[1, mesh_id[:8], node_id, name, run, gov]` (~47 bytes; `run` counts the node's
restarts, so peers that see it change announce back at once instead of at their next
interval; `gov` is 8 bytes of governance's sync digest, so a node that starts or comes back
syncs governance from the first announce it hears, not at the next heartbeat). Announces of
another mesh or of a node id the mesh does not trust are ignored and counted.

Trust: an announce only claims a node id. Before a link carries any message, both sides prove who
they are: the initiator `identify()`s on the link, then each side sends a HELLO holding its signed
member record; the record must verify for this mesh, its Ed25519 key must be trusted, and its
Reticulum key must be the link's (remote identity for the responder, the destination's identity
for the initiator). Names therefore resolve through signed records, never first-come.

Heartbeats: `broadcast(data)` sends one unencrypted packet to the PLAIN destination
`kai_mesh.heartbeat`, which every neighbour on every interface hears and no transport node
forwards; it arrives as `BroadcastReceived`. The sender is not proven by RNS: the runtime's
heartbeats are signed.

Frames on a link: one type byte, then the body — HELLO (member record), JOIN (msgpack [member
record, invite claim]), MSG (an envelope), PING and PONG (an 8-byte nonce).

Joining: a node made by `kai-mesh join` is not yet a member anywhere, so its HELLO would be
refused. While it holds a claim (`join_claim`, a `gov_wire` redemption) it sends JOIN instead. A
receiver that does not trust the record yet checks that the record is valid for this mesh, names
the link's Reticulum key and is the claim's node, then hands the claim to `admit_claim` (the node:
governance takes it, pushes it to every peer, and says whether the node is a member now) and
admits the link as for a HELLO, or closes it (`join_refused`). A receiver that trusts the record
already ignores the claim, so a joined node keeps sending JOIN (about 210 bytes more per link
set-up) and is admitted even by a node that missed the claim's push.

An envelope that does not fit one packet goes as an RNS Resource. Links are opened on demand
and closed after `idle_timeout` without traffic (short on radio).
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import RNS
import trio

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import (
    KaiMeshError,
    Malformed,
    NameMismatch,
    ProtocolError,
    TransportError,
    Untrusted,
)
from kai_mesh.core.gov_wire import parse_redemption
from kai_mesh.core.identity import MemberRecord, admit_member
from transports._bridge import ThreadBridge
from transports.base import (
    BroadcastReceived,
    InterfaceInfo,
    MessageReceived,
    PeerInfo,
    PeerLost,
    PeerSeen,
    PingResult,
    TransportEvent,
)

log = logging.getLogger(__name__)

APP_NAME = "kai_mesh"
ASPECT = "node"
BEACON_ASPECT = "heartbeat"
ANNOUNCE_FORMAT = 1
MAX_ANNOUNCE_DATA = 64  # longest field (or list) read from an announce's app_data
HELLO, MSG, PING, PONG, JOIN = 1, 2, 3, 4, 5
MAX_JOIN = 2048  # bytes of a JOIN body: a member record and a claim
MAX_PAYLOAD = 256 * 1024
EVENT_BUFFER = 4096
ANSWER_GAP = 60.0  # seconds between two announces made to answer a new peer
RADIO_BITRATE = 1_000_000  # below this an interface counts as a radio: links closed sooner
LINK_WAIT = 20.0  # longest wait for a link to establish, then for its handshake
FAST_LINK_WAIT = 2.0  # first wait for a link on a fast one-hop path (then 3, then 4 s)
PATH_WAIT = 15.0  # longest wait for a path to a peer


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


class ReticulumTransport:
    """See the module docstring. Construct, `start_rns()` on the main thread, then `run()`."""

    name = "reticulum"

    def __init__(
        self,
        *,
        configdir: Path,
        config_text: str,
        rns_private: bytes,
        mesh_id: bytes,
        node_id: bytes,
        member: MemberRecord,
        trusted_keys: Mapping[bytes, bytes],
        announce_interval: float,
        capabilities: frozenset[str] = frozenset(),
    ) -> None:
        self.configdir = configdir
        self.config_text = config_text
        self.rns_private = rns_private
        self.mesh_id = mesh_id
        self.node_id = node_id
        self.member = member
        self.trusted_keys = trusted_keys  # node id -> Ed25519 key; live: the fold changes it
        self.announce_interval = announce_interval
        self.capabilities = capabilities
        #: 8 bytes every announce carries (governance's sync digest), and who hears a peer's.
        self.announce_digest: Callable[[], bytes] | None = None
        self.on_announce_digest: Callable[[bytes, bytes], None] | None = None
        #: The invite claim this node sends in JOIN frames (a node made by `kai-mesh join`).
        self.join_claim: bytes | None = None
        #: Takes a joiner's claim; True if its node is a member now (set by the node).
        self.admit_claim: Callable[[bytes], Awaitable[bool]] | None = None
        self._nursery: trio.Nursery | None = None
        self._counters: dict[str, int] = {
            "announces_heard": 0,
            "other_mesh": 0,
            "untrusted": 0,
            "malformed": 0,
            "bad_member_record": 0,
            "unverified_frame": 0,
            "oversize": 0,
            "dropped_events": 0,
            "dropped_callbacks": 0,
            "resource_failed": 0,
        }
        self._peers: dict[bytes, _Peer] = {}
        self._links: dict[bytes, _Link] = {}  # RNS link id -> state
        self._pings: dict[bytes, trio.Event] = {}
        self._send_events, self._events = trio.open_memory_channel[TransportEvent](EVENT_BUFFER)
        self._bridge = ThreadBridge("Reticulum", lambda: self._count("dropped_callbacks"))
        self._rns: Any = None
        self._identity: Any = None
        self._destination: Any = None
        self._beacon_out: Any = None
        self._announce_early = trio.Event()
        self._last_announce = -math.inf
        self.boot = 0  # this node's run number (the node sets it from its store)

    # ---- life cycle -------------------------------------------------------------------------

    def start_rns(self) -> None:
        """Start Reticulum. Main thread, before `trio.run`. Raises `TransportError`."""
        self.configdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.configdir / "config").write_text(self.config_text)
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        panic = RNS.panic
        # RNS answers an interface it cannot create (a port in use, a missing device) with
        # os._exit(255) and no word to the user: make that an exception we can explain.
        RNS.panic = _raise_panic
        try:
            self._rns = RNS.Reticulum(
                configdir=str(self.configdir), loglevel=RNS.LOG_NOTICE, logdest=_rns_log
            )
        except Exception as exc:
            detail = "; ".join(_RECENT_ERRORS) or str(exc)
            raise TransportError(f"Reticulum did not start: {detail}") from None
        finally:
            RNS.panic = panic
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        self._identity = RNS.Identity(create_keys=False)
        self._identity.load_private_key(self.rns_private)
        self._destination = RNS.Destination(
            self._identity, RNS.Destination.IN, RNS.Destination.SINGLE, APP_NAME, ASPECT
        )
        self._destination.set_link_established_callback(self._rns_inbound_link)
        self._destination.set_proof_strategy(RNS.Destination.PROVE_NONE)
        RNS.Transport.register_announce_handler(_AnnounceHandler(self))
        beacon_in = RNS.Destination(
            None, RNS.Destination.IN, RNS.Destination.PLAIN, APP_NAME, BEACON_ASPECT
        )
        beacon_in.set_packet_callback(self._rns_broadcast)
        self._beacon_out = RNS.Destination(
            None, RNS.Destination.OUT, RNS.Destination.PLAIN, APP_NAME, BEACON_ASPECT
        )

    @staticmethod
    def shutdown_rns() -> None:
        """Tear Reticulum down (after trio has finished). Never `RNS.exit()`: it `os._exit`s."""
        try:
            RNS.Reticulum.exit_handler()
        except Exception:  # teardown must not turn a clean exit into a traceback
            log.debug("Reticulum teardown raised", exc_info=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._destination is None:
            raise TransportError("start_rns() must run before run()")
        self._bridge.bind()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._announce_loop)
            nursery.start_soon(self._idle_loop)
            task_status.started()
            await trio.sleep_forever()

    async def _announce_loop(self) -> None:
        # An announce sent before the peers are up is lost (LAB.md): announce again soon, then
        # at the configured interval, or early when a new peer appears (`_answer_announce`).
        for delay in (0.0, 1.0, 3.0):
            await trio.sleep(delay)
            await self.announce()
        while True:
            self._announce_early = trio.Event()
            with trio.move_on_after(self.announce_interval):
                await self._announce_early.wait()
                await trio.sleep(random.uniform(0.2, 2.0))  # not all at once
            self._last_announce = trio.current_time()
            await self.announce()

    def _answer_announce(self) -> None:
        """A peer we did not know announced (it started, or came back): announce ourselves soon
        so that it learns of us now rather than at our next interval; at most once a minute, so
        on a radio this costs one announce per arrival, not a storm."""
        if trio.current_time() - self._last_announce >= ANSWER_GAP:
            self._announce_early.set()

    async def _idle_loop(self) -> None:
        while True:
            await trio.sleep(10)
            now = trio.current_time()
            for state in list(self._links.values()):
                limit = 120.0 if self._is_radio(state) else 900.0
                if not state.closed and now - state.last_activity > limit:
                    log.debug("closing idle link to %s", _hex(state.node_id))
                    state.link.teardown()

    def _is_radio(self, state: _Link) -> bool:
        interface = getattr(state.link, "attached_interface", None)
        bitrate = getattr(interface, "bitrate", None)
        return bitrate is not None and bitrate < RADIO_BITRATE

    # ---- the Transport interface ------------------------------------------------------------

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        return self._events

    @property
    def max_payload(self) -> int:
        return MAX_PAYLOAD

    async def announce(self) -> None:
        fields: list[Any] = [ANNOUNCE_FORMAT, self.mesh_id[:8], self.node_id, self.member.name]
        fields.append(self.boot)
        if self.announce_digest is not None:
            fields.append(self.announce_digest())
        app_data = pack(fields)
        self._destination.announce(app_data=app_data)

    async def broadcast(self, data: bytes) -> None:
        try:
            RNS.Packet(self._beacon_out, data).send()
        except Exception as exc:
            raise TransportError(f"Reticulum refused the broadcast: {exc}") from exc
        self._count("broadcasts_sent")

    def reset_link(self, node_id: bytes) -> None:
        """Close the link to `node_id`, if any: the next send opens (and verifies) a new one."""
        peer = self._peers.get(node_id)
        if peer is not None and peer.link is not None:
            state, peer.link = peer.link, None
            self._count("links_reset")
            state.link.teardown()

    def forget(self, node_id: bytes) -> None:
        """`node_id` is no longer a member: close every link to it and drop it as a peer. Its
        announces and handshakes are refused from now on, since `trusted_keys` lacks it."""
        self._peers.pop(node_id, None)
        for state in list(self._links.values()):
            if state.node_id == node_id and not state.closed:
                self._count("links_revoked")
                state.link.teardown()
        self._emit(PeerLost(node_id=node_id))

    async def send(self, node_id: bytes, data: bytes) -> None:
        if len(data) > MAX_PAYLOAD:
            raise TransportError(f"{len(data)} bytes is more than a message may carry")
        state = await self._link_to(node_id)
        if 1 + len(data) <= state.link.mdu:
            self._send_frame(state, MSG, data)
            return
        # Larger than a packet: an RNS Resource. Wait for it to conclude (the caller's deadline
        # bounds the wait) and try once more on a verified link if it failed.
        for _attempt in range(2):
            concluded = trio.Event()
            outcome: list[bool] = []
            self._send_resource(state, bytes([MSG]) + data, concluded, outcome)
            await concluded.wait()
            if outcome == [True]:
                return
            self._count("resource_failed")
            state = await self._link_to(node_id)
        raise TransportError(f"{len(data)} bytes did not get through to {node_id.hex()}")

    def _send_resource(
        self, state: _Link, frame: bytes, concluded: trio.Event, outcome: list[bool]
    ) -> None:
        def done(resource: Any) -> None:  # on an RNS thread
            self._post(_conclude, resource.status == RNS.Resource.COMPLETE)

        def _conclude(ok: bool) -> None:
            outcome.append(ok)
            concluded.set()

        state.last_activity = trio.current_time()
        try:
            RNS.Resource(frame, state.link, callback=done)
        except Exception as exc:
            raise TransportError(f"Reticulum refused to send: {exc}") from exc

    async def ping(self, node_id: bytes) -> PingResult:
        state = await self._link_to(node_id)
        nonce = os.urandom(8)
        answered = self._pings[nonce] = trio.Event()
        started = trio.current_time()
        try:
            self._send_frame(state, PING, nonce)
            with trio.move_on_after(15) as scope:
                await answered.wait()
        finally:
            del self._pings[nonce]
        if scope.cancelled_caught:
            raise TransportError(f"no answer from {node_id.hex()} within 15 s")
        rtt = trio.current_time() - started
        peer = self._peers[node_id]
        peer.rtt = rtt
        hops = RNS.Transport.hops_to(peer.destination_hash)
        return PingResult(rtt=rtt, hops=None if hops == RNS.Transport.PATHFINDER_M else hops)

    def interfaces(self) -> list[InterfaceInfo]:
        out = []
        for interface in list(RNS.Transport.interfaces):
            out.append(
                InterfaceInfo(
                    name=str(getattr(interface, "name", interface)),
                    kind=type(interface).__name__,
                    mtu=int(getattr(interface, "HW_MTU", None) or RNS.Reticulum.MTU),
                    bitrate=getattr(interface, "bitrate", None),
                    online=bool(getattr(interface, "online", False)),
                    tx_bytes=int(getattr(interface, "txb", 0)),
                    rx_bytes=int(getattr(interface, "rxb", 0)),
                )
            )
        return out

    def peers(self) -> list[PeerInfo]:
        out = []
        for peer in self._peers.values():
            hops = RNS.Transport.hops_to(peer.destination_hash)
            interface = RNS.Transport.next_hop_interface(peer.destination_hash)
            out.append(
                PeerInfo(
                    node_id=peer.node_id,
                    name=peer.name or peer.claimed_name,
                    hops=None if hops == RNS.Transport.PATHFINDER_M else hops,
                    interface=None if interface is None else str(getattr(interface, "name", "")),
                    last_heard=peer.last_heard,
                    rtt=peer.rtt,
                )
            )
        return out

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def resolve_name(self, name: str) -> bytes | None:
        """A node id for `name`: verified member records first, then announce claims (a claim
        is checked against the signed record before any message goes over the link)."""
        for peer in self._peers.values():
            if peer.name == name:
                return peer.node_id
        for peer in self._peers.values():
            if peer.claimed_name == name:
                return peer.node_id
        return None

    async def confirm_name(self, node_id: bytes, name: str) -> None:
        """Make sure `name` is `node_id`'s by its signed member record, not only by the name
        it announced: a name known only from an announce opens (and verifies) the link first.
        Raises `NameMismatch` when the record names the node otherwise. When no link opens now
        it returns: the send that follows fails or goes to store-and-forward as before."""
        peer = self._peers.get(node_id)
        if peer is None or peer.name == name:
            return
        try:
            await self._link_to(node_id)
        except TransportError:
            return
        if peer.name is not None and peer.name != name:
            self._count("name_mismatch")
            if peer.claimed_name == name:
                peer.claimed_name = peer.name  # never resolve that claim again
            raise NameMismatch(
                f"node {node_id.hex()} announced the name {name!r} but its member record names "
                f"it {peer.name!r}"
            )

    # ---- links ------------------------------------------------------------------------------

    async def _link_to(self, node_id: bytes) -> _Link:
        peer = self._peers.get(node_id)
        if peer is None:
            raise TransportError(f"no announce heard from node {node_id.hex()}: no route to it")
        for attempt in range(3):
            state = peer.link
            if state is not None and _usable(state):
                return state
            if peer.connecting is None:
                peer.connecting = trio.Event()
                try:
                    with trio.move_on_after(45):
                        await self._open_link(peer, attempt)
                finally:
                    peer.connecting.set()
                    peer.connecting = None
            else:
                with trio.move_on_after(45):
                    await peer.connecting.wait()
        state = peer.link
        if state is not None and _usable(state):
            return state
        raise TransportError(f"could not open a verified link to node {node_id.hex()}")

    @staticmethod
    def _establish_limit(link: Any, destination_hash: bytes, attempt: int) -> float:
        rns_limit = min(LINK_WAIT, float(getattr(link, "establishment_timeout", LINK_WAIT)))
        interface = RNS.Transport.next_hop_interface(destination_hash)
        bitrate = getattr(interface, "bitrate", None) or 0
        if bitrate >= RADIO_BITRATE and RNS.Transport.hops_to(destination_hash) <= 1:
            return min(rns_limit, FAST_LINK_WAIT + attempt)
        return max(2.0, rns_limit)

    async def _find_path(self, destination_hash: bytes) -> None:
        """Ask for a path and wait up to PATH_WAIT s for it. RNS drops the path of a link that
        closes, and a path request lost (in a partition) is never asked again: on fast
        interfaces ask again every 2 s, so a heal is seen at once; on a radio only once."""
        fast = all((i.bitrate or 0) >= RADIO_BITRATE for i in self.interfaces())
        again = FAST_LINK_WAIT if fast else PATH_WAIT
        deadline = trio.current_time() + PATH_WAIT
        while trio.current_time() < deadline:
            RNS.Transport.request_path(destination_hash)
            asked_at = trio.current_time()
            # RNS has no callback for a path arriving: poll its table.
            while trio.current_time() < min(deadline, asked_at + again):
                if RNS.Transport.has_path(destination_hash):
                    return
                await trio.sleep(0.05)

    async def _open_link(self, peer: _Peer, attempt: int = 0) -> None:
        destination_hash = peer.destination_hash
        if not RNS.Transport.has_path(destination_hash):
            await self._find_path(destination_hash)
            if not RNS.Transport.has_path(destination_hash):
                raise TransportError(f"no path to node {peer.node_id.hex()}")
        identity = RNS.Identity.recall(destination_hash)
        if identity is None:
            raise TransportError(f"identity of node {peer.node_id.hex()} is unknown")
        destination = RNS.Destination(
            identity, RNS.Destination.OUT, RNS.Destination.SINGLE, APP_NAME, ASPECT
        )
        link = RNS.Link(destination)
        state = _Link(link, outbound=True, remote_public=identity.get_public_key())
        state.last_activity = trio.current_time()
        self._links[link.link_id] = state
        self._wire_link(link)
        link.set_link_established_callback(self._rns_link_established)
        # A link request can be lost without a word (RNS discards the result of sending it; seen
        # on veth under load), and RNS gives up on it only after its own estimate, 12 s on a LAN.
        # On a fast one-hop path wait 2, 3, then 4 s before asking again; take the peer's own
        # link to us if it verifies meanwhile.
        limit = self._establish_limit(link, destination_hash, attempt)
        if not await self._wait_link(peer, state.established, limit) or state.closed:
            link.teardown()
            return
        link.identify(self._identity)
        self._send_hello(state)
        if not await self._wait_link(peer, state.settled, LINK_WAIT):
            link.teardown()
            return
        if state.verified.is_set() and state.node_id == peer.node_id:
            peer.link = state
        else:
            link.teardown()

    async def _wait_link(self, peer: _Peer, event: trio.Event, limit: float) -> bool:
        """Wait up to `limit` s for `event`; True if it is set. False as soon as the peer has a
        verified link of its own making (then the caller drops its half-open one)."""
        deadline = trio.current_time() + limit
        while not event.is_set():
            if _usable(peer.link) or trio.current_time() >= deadline:
                return False
            with trio.move_on_after(0.05):
                await event.wait()
        return True

    def _wire_link(self, link: Any) -> None:
        link.set_packet_callback(self._rns_packet)
        link.set_link_closed_callback(self._rns_link_closed)
        link.set_remote_identified_callback(self._rns_identified)
        link.set_resource_strategy(RNS.Link.ACCEPT_APP)
        link.set_resource_callback(self._rns_resource_offered)
        link.set_resource_concluded_callback(self._rns_resource_concluded)

    def _send_hello(self, state: _Link) -> None:
        state.hello_sent = True
        if self.join_claim is not None:
            body = pack([self.member.to_bytes(), self.join_claim])
            self._send_frame(state, JOIN, body, verified_only=False)
            return
        self._send_frame(state, HELLO, self.member.to_bytes(), verified_only=False)

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

    # ---- from RNS threads: hand over to trio, never raise -----------------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        self._bridge.post(fn, *args)

    def _rns_inbound_link(self, link: Any) -> None:
        # Wire the callbacks here, on the RNS thread: packets that arrive before trio has run
        # `_on_inbound_link` (the initiator's HELLO) would otherwise find no callback and vanish.
        self._wire_link(link)
        self._post(self._on_inbound_link, link)

    def _rns_link_established(self, link: Any) -> None:
        self._post(self._on_established, link.link_id)

    def _rns_link_closed(self, link: Any) -> None:
        self._post(self._on_closed, link.link_id)

    def _rns_identified(self, link: Any, identity: Any) -> None:
        self._post(self._on_identified, link.link_id, identity.get_public_key())

    def _rns_packet(self, message: bytes, packet: Any) -> None:
        self._post(self._on_frame, packet.link.link_id, bytes(message))

    def _rns_broadcast(self, message: bytes, packet: Any) -> None:
        interface = getattr(packet, "receiving_interface", None)
        name = None if interface is None else str(getattr(interface, "name", ""))
        self._post(self._emit, BroadcastReceived(data=bytes(message), interface=name))

    def _rns_resource_offered(self, resource: Any) -> bool:
        ok = resource.get_data_size() <= MAX_PAYLOAD + 1
        if not ok:
            self._post(self._count, "oversize")
        return bool(ok)

    def _rns_resource_concluded(self, resource: Any) -> None:
        if resource.status != RNS.Resource.COMPLETE:
            self._post(self._count, "resource_failed")
            return
        data = resource.data
        # The file behind a received resource is closed and removed when this returns.
        payload = data.read() if hasattr(data, "read") else bytes(data)
        self._post(self._on_frame, resource.link.link_id, payload)

    def _rns_announce(self, destination_hash: bytes, identity: Any, app_data: bytes | None) -> None:
        self._post(self._on_announce, destination_hash, app_data)

    # ---- on the trio thread -----------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self._counters[reason] = self._counters.get(reason, 0) + 1

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._send_events.send_nowait(event)
        except trio.WouldBlock:
            self._count("dropped_events")

    def _on_announce(self, destination_hash: bytes, app_data: bytes | None) -> None:
        self._count("announces_heard")
        try:
            fields = unpack_exact(app_data or b"", MAX_ANNOUNCE_DATA)
            ok = (
                isinstance(fields, list)
                and len(fields) >= 4
                and fields[0] == ANNOUNCE_FORMAT
                and isinstance(fields[1], bytes)
                and isinstance(fields[2], bytes)
                and isinstance(fields[3], str)
            )
        except KaiMeshError:
            ok = False
        if not ok:
            self._count("malformed")
            return
        _, mesh_prefix, node_id, name = fields[:4]
        boot = fields[4] if len(fields) > 4 and type(fields[4]) is int else None
        if mesh_prefix != self.mesh_id[:8]:
            self._count("other_mesh")
            return
        if node_id not in self.trusted_keys or node_id == self.node_id:
            if node_id != self.node_id:
                self._count("untrusted")
            return
        now = trio.current_time()
        peer = self._peers.get(node_id)
        if peer is None:
            peer = self._peers[node_id] = _Peer(node_id, destination_hash, name[:32], now)
            self._answer_announce()
        else:
            if boot is not None and boot != peer.boot:
                self._answer_announce()  # it restarted and knows nothing of us any more
                if peer.boot is not None:
                    # Nor of our link: what we send on it would be lost until RNS times it out.
                    self.reset_link(node_id)
            peer.destination_hash, peer.claimed_name, peer.last_heard = destination_hash, name, now
        peer.boot = boot
        self._emit(PeerSeen(peer=self._peer_info(peer)))
        heard = fields[5] if len(fields) > 5 else None
        if self.on_announce_digest is not None and isinstance(heard, bytes) and len(heard) == 8:
            self.on_announce_digest(node_id, heard)

    def _peer_info(self, peer: _Peer) -> PeerInfo:
        return PeerInfo(
            node_id=peer.node_id,
            name=peer.name or peer.claimed_name,
            hops=None,
            interface=None,
            last_heard=peer.last_heard,
            rtt=peer.rtt,
        )

    def _on_inbound_link(self, link: Any) -> None:
        state = _Link(link, outbound=False)
        state.last_activity = trio.current_time()
        state.established.set()
        self._links[link.link_id] = state

    def _on_established(self, link_id: bytes) -> None:
        state = self._links.get(link_id)
        if state is not None:
            state.established.set()

    def _on_closed(self, link_id: bytes) -> None:
        state = self._links.pop(link_id, None)
        if state is None:
            return
        state.closed = True
        state.established.set()  # wake anyone waiting: they see it closed
        state.settled.set()
        if state.node_id is not None:
            peer = self._peers.get(state.node_id)
            if peer is not None and peer.link is state:
                peer.link = None

    def _on_identified(self, link_id: bytes, public_key: bytes) -> None:
        state = self._links.get(link_id)
        if state is not None and not state.outbound:
            state.remote_public = public_key
            if state.pending_hello is not None:
                frame, state.pending_hello = state.pending_hello, None
                self._on_hello(state, frame[1:], frame[0])

    def _on_frame(self, link_id: bytes, frame: bytes) -> None:
        state = self._links.get(link_id)
        if state is None or not frame:
            return
        state.last_activity = trio.current_time()
        kind, body = frame[0], frame[1:]
        if kind in (HELLO, JOIN):
            self._on_hello(state, body, kind)
            return
        if not state.verified.is_set() or state.node_id is None:
            self._count("unverified_frame")
            return
        peer = self._peers.get(state.node_id)
        if peer is not None:
            peer.last_heard = state.last_activity
        if kind == MSG:
            self._emit(MessageReceived(node_id=state.node_id, data=body, interface=None))
        elif kind == PING and len(body) == 8:
            self._send_frame(state, PONG, body)
        elif kind == PONG and body in self._pings:
            self._pings[body].set()
        else:
            self._count("malformed")

    def _on_hello(self, state: _Link, body: bytes, kind: int = HELLO) -> None:
        if state.remote_public is None and not state.outbound:
            # RNS runs each packet's callback on a thread of its own, so the HELLO can reach us
            # before the identify that precedes it on the wire: ask the link, else wait for it.
            identity = state.link.get_remote_identity()
            if identity is None:
                state.pending_hello = bytes([kind]) + body
                return
            state.remote_public = identity.get_public_key()
        claim = None
        try:
            if kind == JOIN:
                body, claim = _split_join(body)
            record = admit_member(body, self.mesh_id, self.trusted_keys)
        except Untrusted:
            if claim is None or not self._start_join(state, body, claim):
                self._count("untrusted")
                state.link.teardown()
            return
        except ProtocolError:
            self._count("bad_member_record")
            state.link.teardown()
            return
        node_id = record.node_id
        if state.remote_public is None or state.remote_public != record.rns_public:
            # The record names a Reticulum key the link did not prove.
            self._count("bad_member_record")
            state.link.teardown()
            return
        state.node_id = node_id
        now = trio.current_time()
        peer = self._peers.get(node_id)
        if peer is None:
            destination_hash = RNS.Destination.hash_from_name_and_identity(
                f"{APP_NAME}.{ASPECT}", identity_from_public(record.rns_public)
            )
            peer = self._peers[node_id] = _Peer(node_id, destination_hash, record.name, now)
        peer.name, peer.last_heard = record.name, now
        if not state.outbound:
            peer.link = state
        if not state.hello_sent:
            self._send_hello(state)
        state.verified.set()
        state.settled.set()
        self._emit(PeerSeen(peer=self._peer_info(peer)))
        if self.join_claim is not None and state.outbound:
            self._answer_announce()  # admitted, maybe just now: let the others hear of us

    def _start_join(self, state: _Link, body: bytes, claim: bytes) -> bool:
        """A valid record of a node we do not trust, with a claim: if the record is the link's
        and the claim's node, hand the claim over (`_admit_join`); False to refuse at once."""
        record = MemberRecord.from_bytes(body)  # admit_member checked it already
        try:
            node_key = parse_redemption(claim).redemption.node_key
        except ProtocolError:
            return False
        if (
            self.admit_claim is None
            or self._nursery is None
            or state.remote_public != record.rns_public
            or node_key != record.verify_key
        ):
            return False
        self._nursery.start_soon(self._admit_join, state, body, claim, self.admit_claim)
        return True

    async def _admit_join(
        self, state: _Link, body: bytes, claim: bytes, admit: Callable[[bytes], Awaitable[bool]]
    ) -> None:
        try:
            admitted = await admit(claim)
        except Exception:  # the node's callback must not take the transport down
            log.exception("admitting a joining node failed")
            admitted = False
        if state.closed:
            return
        if not admitted:
            self._count("join_refused")
            state.link.teardown()
            return
        self._count("joins_admitted")
        self._on_hello(state, body)  # a member now: admitted exactly as by a HELLO


def _split_join(body: bytes) -> tuple[bytes, bytes]:
    """(member record, claim) of a JOIN body. Raises `ProtocolError`."""
    value = unpack_exact(body, MAX_JOIN)
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is bytes for v in value)):
        raise Malformed("JOIN: expected [member record, claim]")
    return value[0], value[1]


class _AnnounceHandler:
    """RNS calls `received_announce` on one of its threads for announces of `aspect_filter`."""

    aspect_filter = f"{APP_NAME}.{ASPECT}"

    def __init__(self, transport: ReticulumTransport) -> None:
        self.transport = transport

    def received_announce(
        self, destination_hash: bytes, announced_identity: Any, app_data: bytes | None
    ) -> None:
        self.transport._rns_announce(destination_hash, announced_identity, app_data)


def _usable(state: _Link | None) -> bool:
    return state is not None and state.verified.is_set() and not state.closed


def identity_from_public(public_key: bytes) -> Any:
    """An RNS identity that holds only the public key (to address or verify)."""
    identity = RNS.Identity(create_keys=False)
    identity.load_public_key(public_key)
    return identity


_RECENT_ERRORS: deque[str] = deque(maxlen=2)


class _RnsPanic(Exception):
    pass


def _raise_panic() -> None:
    raise _RnsPanic("Reticulum gave up")


def _rns_log(message: str) -> None:
    # RNS hands over finished lines: "[time] [Level]   text". Keep the last errors to explain a
    # failed start; pass everything on to logging at a level matching RNS's own.
    level = logging.INFO
    if "[Error]" in message or "[Critical]" in message:
        level = logging.ERROR
        text = message.split("]", 2)[-1].strip()
        if not text.startswith(("Traceback", "File ", "An unhandled")):
            _RECENT_ERRORS.append(text)
    elif "[Warning]" in message:
        level = logging.WARNING
    logging.getLogger("RNS").log(level, "%s", message)


def _hex(value: bytes | None) -> str:
    return "?" if value is None else value.hex()
