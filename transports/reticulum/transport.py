"""Reticulum as a kai-mesh transport. With its private `_rns_*` modules and `transports.lxmf`, the
only code that imports RNS.

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
A HELLO is one link packet, which RNS never retransmits. If the responder's HELLO is lost, the
responder (it verified the initiator's) sends on a link the initiator still refuses: the
initiator then sends its HELLO again, a responder answers a HELLO on a link it verified with its
own, each at most every 2 s per link (`hello_resent`); a Resource refused that way is sent again
on another link (`resource_rejected`), and a closing link leaves the peer on another verified
one if there is one.

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
and closed after a while without traffic (2 minutes on a radio, by the end that opened them:
`_rns_retry.idle_close_after`). Links a stranger opens are bounded before their HELLO verifies:
a deadline (30 s, 120 s on a radio), at most 32 at once (the oldest gives way to a new one), no
Resource larger than a JOIN, and garbage frames do not keep them open; counted as
`hello_timeout`, `unverified_evicted`, `resource_unverified`, `unverified_frame`.

The class is built in layers, each a private module that uses only those below it: `_rns_state`
(constants, link and peer records, the shared state), `_rns_join` (HELLO and JOIN admission),
`_rns_callbacks` (RNS threads handing over to trio, frame dispatch), `_rns_links` (opening links;
when to ask again is `_rns_retry`'s pure timing) and this module on top: life cycle (RNS started
by `_rns_boot`), announces and the Transport interface.
"""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import RNS
import trio

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import KaiMeshError, NameMismatch, TransportError
from kai_mesh.core.mesh.identity import MemberRecord
from transports._bridge import ThreadBridge
from transports.base import (
    Abilities,
    InterfaceInfo,
    PeerInfo,
    PeerLost,
    PeerSeen,
    PingResult,
    TransportEvent,
)
from transports.reticulum._boot import start_reticulum
from transports.reticulum._inline import install as run_packet_callbacks_inline
from transports.reticulum._join import MAX_JOIN
from transports.reticulum._links import _RnsLinks
from transports.reticulum._retry import (
    FAST_LINK_WAIT,
    LINK_WAIT,
    PATH_WAIT,
    RADIO_BITRATE,
    answer_gap,
    idle_close_after,
)
from transports.reticulum._state import (
    APP_NAME,
    ASPECT,
    HELLO,
    HELLO_DEADLINE,
    HELLO_DEADLINE_RADIO,
    JOIN,
    MAX_PAYLOAD,
    MSG,
    PING,
    PONG,
    _Link,
    _Peer,
    identity_from_public,
)

__all__ = [
    "ANNOUNCE_FORMAT",
    "APP_NAME",
    "ASPECT",
    "FAST_LINK_WAIT",
    "HELLO",
    "JOIN",
    "LINK_WAIT",
    "MAX_JOIN",
    "MAX_PAYLOAD",
    "MSG",
    "PATH_WAIT",
    "PING",
    "PONG",
    "RADIO_BITRATE",
    "ReticulumTransport",
    "identity_from_public",
]

log = logging.getLogger(__name__)

BEACON_ASPECT = "heartbeat"
ANNOUNCE_FORMAT = 1
MAX_ANNOUNCE_DATA = 64  # longest field (or list) read from an announce's app_data
EVENT_BUFFER = 4096
IDLE_TICK = 2.0  # seconds between checks of HELLO deadlines (idle links: every 10 s)


class ReticulumTransport(_RnsLinks):
    """See the module docstring. Construct, `start_rns()` on the main thread, then `run()`."""

    name = "reticulum"
    abilities = Abilities(
        live_links=True,
        broadcast=True,
        link_reset=True,
        names=True,
        announces=True,
        run_number=True,
        announce_digest=True,
        admits_claims=True,
        packets=True,
    )

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
            "hello_timeout": 0,
            "hello_resent": 0,
            "resource_rejected": 0,
            "unverified_evicted": 0,
            "resource_unverified": 0,
        }
        self._peers: dict[bytes, _Peer] = {}
        self._links: dict[bytes, _Link] = {}  # RNS link id -> state
        self._verified_links: set[bytes] = set()
        self._pings: dict[bytes, trio.Event] = {}
        self._send_events, self._events = trio.open_memory_channel[TransportEvent](EVENT_BUFFER)
        self._bridge = ThreadBridge("Reticulum", lambda: self._count("dropped_callbacks"))
        self._rns: Any = None
        self._identity: Any = None
        self._destination: Any = None
        self._beacon_out: Any = None
        self._announce_early = trio.Event()
        self._last_announce = -math.inf
        self._last_idle_check = -math.inf
        self.boot = 0  # this node's run number (the node sets it from its store)

    # ---- life cycle -------------------------------------------------------------------------

    def start_rns(self) -> None:
        """Start Reticulum. Main thread, before `trio.run`. Raises `TransportError`."""
        self._rns = start_reticulum(self.configdir, self.config_text)
        run_packet_callbacks_inline()
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
        # at the configured interval, or early when a new peer appears (`_answer_announce`):
        # not all at once, and no sooner than `answer_gap` after the last one.
        for delay in (0.0, 1.0, 3.0):
            await trio.sleep(delay)
            await self._announce_now()
        while True:
            with trio.move_on_after(self.announce_interval):
                await self._announce_early.wait()
                gap = answer_gap(
                    getattr(i, "bitrate", None) for i in list(RNS.Transport.interfaces)
                )
                soonest = trio.current_time() + random.uniform(0.2, 2.0)
                await trio.sleep_until(max(soonest, self._last_announce + gap))
            await self._announce_now()

    async def _announce_now(self) -> None:
        # Whoever asked for an answer before this point hears this announce.
        self._announce_early = trio.Event()
        self._last_announce = trio.current_time()
        await self.announce()

    async def _idle_loop(self) -> None:
        while True:
            await trio.sleep(IDLE_TICK)
            self._check_links(trio.current_time())

    def _check_links(self, now: float) -> None:
        """Close links past their HELLO deadline (unverified) or idle too long."""
        self._reap_unverified(
            now, lambda s: HELLO_DEADLINE_RADIO if self._is_radio(s) else HELLO_DEADLINE
        )
        if now - self._last_idle_check >= 10:
            self._last_idle_check = now
            for state in list(self._links.values()):
                limit = idle_close_after(self._is_radio(state), state.outbound)
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

    def set_run_number(self, run: int) -> None:
        self.boot = run

    def set_announce_digest(
        self, ours: Callable[[], bytes], heard: Callable[[bytes, bytes], None]
    ) -> None:
        self.announce_digest = ours
        self.on_announce_digest = heard

    def set_claim_admission(
        self, claim: bytes | None, admit: Callable[[bytes], Awaitable[bool]]
    ) -> None:
        self.join_claim = claim
        self.admit_claim = admit

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

    def packet_room(self, node_id: bytes) -> int:
        """The peer's link MDU less our type byte (RNS's smallest before a link is up)."""
        peer = self._peers.get(node_id)
        state = None if peer is None else peer.link
        mdu = RNS.Link.MDU if state is None or state.closed else state.link.mdu
        return int(mdu) - 1

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
        peer = self._peers.get(node_id)
        if peer is None:  # forgotten (revoked) while the ping was out
            raise TransportError(f"node {node_id.hex()} is no longer a peer")
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

    # ---- announces heard: from an RNS thread, then on the trio thread -----------------------

    def _rns_announce(self, destination_hash: bytes, identity: Any, app_data: bytes | None) -> None:
        self._post(self._on_announce, destination_hash, app_data)

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
            peer.destination_hash, peer.last_heard = destination_hash, now
            peer.claimed_name = name[:32]  # as when first heard: a name resolves the same way
        peer.boot = boot
        self._emit(PeerSeen(peer=self._peer_info(peer)))
        heard = fields[5] if len(fields) > 5 else None
        if self.on_announce_digest is not None and isinstance(heard, bytes) and len(heard) == 8:
            self.on_announce_digest(node_id, heard)


class _AnnounceHandler:
    """RNS calls `received_announce` on one of its threads for announces of `aspect_filter`."""

    aspect_filter = f"{APP_NAME}.{ASPECT}"

    def __init__(self, transport: ReticulumTransport) -> None:
        self.transport = transport

    def received_announce(
        self, destination_hash: bytes, announced_identity: Any, app_data: bytes | None
    ) -> None:
        self.transport._rns_announce(destination_hash, announced_identity, app_data)


def _hex(value: bytes | None) -> str:
    return "?" if value is None else value.hex()
