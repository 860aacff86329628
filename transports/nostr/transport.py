"""Nostr as a kai-mesh transport: frames between members through ordinary relays.

Relays are untrusted carriers that store; they are not a live link to anyone (`Abilities`).

Who is who. Each node publishes a **hello** every `hello_interval` (and once more when it meets
a new member): an ephemeral event (kind `KIND_HELLO`) tagged `["m", mesh tag]`, whose content is
its signed member record, NIP-44 encrypted with a key derived from the mesh id (so a relay learns
neither names nor keys, only that some mesh talks). A hello is believed when the record is
admitted (`admit_member`: this mesh, a trusted Ed25519 key, all three signatures) and the record's
Nostr key is the event's signer; the node id is then bound to that Nostr key and the node is a
`PeerSeen`. Nothing else binds a key: a frame from an unbound key is dropped (`unknown_key`).

Frames. `send` publishes an ephemeral event (`KIND_FRAME`) with `["p", recipient]`,
`["m", mesh tag]` and a NIP-40 `expiration` `frame_ttl` ahead; its content is the frame, NIP-44
encrypted to the recipient's Nostr key (the plaintext is the frame's raw bytes: only kai-mesh
reads it). `store_and_forward` does the same with a regular kind (`KIND_STORED`) that relays keep
until `stored_ttl`. A reply carries `["e", request event id]` (NIP-46, ContextVM: a client
may subscribe to one request's replies): the runtime names the request it answers in
`transports.base.REPLYING_TO`, from the `ref` this transport put on the request's
`MessageReceived`. The inbound subscription asks for stored frames since `catch_up` seconds
ago, so a node that was away finds them (the runtime drops what it already had by message id).

Sync digests (`abilities.sync_digests`). No heartbeat crosses a relay, so the transport publishes
the node's state and governance digests itself: an ephemeral event (`KIND_DIGESTS`) to the mesh,
encrypted like a hello, when they change (`sync_changed`: at most once per second, a burst of
writes is one event) and every `digest_interval` seconds besides (`core.sync.beacon`). A digest
event is believed only from a key a hello bound; its digests go to the runtime's anti-entropy
(`heard`), which asks that peer for a round when they differ from ours, exactly as a heartbeat's
would. The rounds themselves are frames like any other. Digest events are asked for only from
the members a hello bound (`authors`, re-sent when that set changes): NIP-01 has no "every
author but me", and without the list the relay echoed each digest event back to its author,
about a third of all relay bytes (bench/islands.py); a digest from an unbound key was dropped
anyway. Past `MAX_AUTHORS` members the list is left out (relays cap filter sizes) and our own
echo is dropped on arrival, before any signature work.

Large frames. A frame whose event would not fit the smallest `max_message_length` the connected
relays declare (NIP-11, read at each connect) is split into content-addressed chunks
(`core.nostr.chunks`), each its own event of a chunk kind (`KIND_CHUNK`, or `KIND_STORED_CHUNK`
for store-and-forward), and reassembled on arrival with a bound on what is held half-done; the
frame counts as sent once a relay accepted every chunk.

Checks on what arrives, in order, each refusal counted by reason: shape (`malformed`), the LRU of
seen ids before any signature work (`duplicate`: a relay's replays and the same event from
two relays), id and signature (`bad_id`, `bad_signature`), NIP-40 (`expired`), the mesh tag
(`other_mesh`), the recipient (`not_for_us`), the signer (`unknown_key`: held, up to
`HELD_FRAMES`, until a hello binds it, since stored frames arrive before their sender's next
hello), decryption (`undecryptable`), then `MessageReceived`. A node's first hello after it starts
carries `["fresh", "1"]`, and members answer it with their own hello at once.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import trio

from kai_mesh.core.codec import digest, pack
from kai_mesh.core.errors import Malformed, ProtocolError, TransportError, Untrusted
from kai_mesh.core.mesh.identity import MemberRecord, admit_member
from kai_mesh.core.nostr import chunks, giftwrap, nip44
from kai_mesh.core.nostr.event import (
    Event,
    check_fresh,
    expiration,
    parse_event,
    public_key,
    sign_event,
    verify_event,
)
from kai_mesh.core.sync.beacon import Beacon
from transports.base import (
    REPLYING_TO,
    Abilities,
    InterfaceInfo,
    MessageReceived,
    PeerInfo,
    PeerSeen,
    PingResult,
    TransportBase,
    TransportEvent,
)
from transports.nostr import _policy
from transports.nostr._pool import RelayPool
from transports.nostr._relay import DEFAULT_MAX_MESSAGE, Published, Relay
from transports.nostr._wire import decode_digests, is_event_id, relay_state

log = logging.getLogger(__name__)

KIND_HELLO = 28930  # ephemeral: a member record for the mesh
KIND_FRAME = 28931  # ephemeral: one frame for one member
KIND_STORED = 4931  # regular, NIP-40 expiring: one frame kept for an absent member
KIND_DIGESTS = 28933  # ephemeral: this node's sync digests, for the mesh
KIND_CHUNK = 28932  # ephemeral: one chunk of a frame too large for one event
KIND_STORED_CHUNK = 4932  # regular, NIP-40 expiring: one chunk of a stored frame
KIND_AUTH = 22242  # NIP-42
FRAME_KINDS = frozenset({KIND_FRAME, KIND_STORED, KIND_CHUNK, KIND_STORED_CHUNK})
CHUNK_KINDS = frozenset({KIND_CHUNK, KIND_STORED_CHUNK})
WRAP_KINDS = frozenset({giftwrap.KIND_WRAP, giftwrap.KIND_EPHEMERAL_WRAP})
KINDS = frozenset({KIND_HELLO, KIND_DIGESTS}) | FRAME_KINDS | WRAP_KINDS
#: Largest frame: chunked past one event (a bus envelope is at most 64 KiB by default).
MAX_PAYLOAD = 256 * 1024
EVENT_BUFFER = 1024
INTERFACE = "nostr"
HELLO_ANSWER_GAP = 5.0  # seconds between two hellos sent in answer to one member
MAX_AUTHORS = 256  # members named in the digest subscription; past it, no author list
HELD_FRAMES = 256  # verified frames from a key no hello has bound yet, kept until one does


def mesh_tag(mesh_id: bytes) -> str:
    """What the `m` tag says: 16 bytes of a hash of the mesh id, hex."""
    return digest("nostr-mesh-tag", mesh_id)[:16].hex()


def hello_key(mesh_id: bytes) -> bytes:
    """The NIP-44 conversation key hellos are encrypted with: members know the mesh id."""
    return digest("nostr-hello-key", mesh_id)[:32]


class NostrTransport(TransportBase):
    """See the module docstring. `await nursery.start(transport.run)`."""

    name = "nostr"
    abilities = Abilities(store_and_forward=True, relay_stores=True, sync_digests=True)

    def __init__(
        self,
        *,
        relays: Iterable[str],
        markers: Mapping[str, str] | None = None,
        nostr_secret: bytes,
        mesh_id: bytes,
        node_id: bytes,
        member: MemberRecord,
        trusted_keys: Mapping[bytes, bytes],
        frame_ttl: int = 60,
        stored_ttl: int = 7 * 24 * 3600,
        catch_up: int = 24 * 3600,
        hello_interval: float = 300.0,
        digest_interval: float = 30.0,
        gift_wrap: bool = False,
        randbytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = nostr_secret
        self.pubkey = public_key(nostr_secret)
        self.mesh_id = mesh_id
        self.tag = mesh_tag(mesh_id)
        self.node_id = node_id
        self.member = member
        self.trusted_keys = trusted_keys  # live: the governance fold changes it
        self.frame_ttl = frame_ttl
        self.stored_ttl = stored_ttl
        self.catch_up = catch_up
        self.announce_interval = hello_interval
        self._randbytes = randbytes
        self._clock = clock
        self._hello_key = hello_key(mesh_id)
        self.pool = RelayPool(
            relays, handler=self._on_event, signer=self._sign_auth, markers=markers
        )
        self._counters: dict[str, int] = {"received": 0, "sent": 0, "dropped_events": 0}
        self._send_events, self._events = trio.open_memory_channel[TransportEvent](EVENT_BUFFER)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._keys: dict[bytes, str] = {}  # node id -> Nostr key, bound by an admitted hello
        self._nodes: dict[str, bytes] = {}  # Nostr key -> node id
        self._peers: dict[bytes, PeerInfo] = {}
        self._conversations: dict[str, bytes] = {}
        self._answered: dict[bytes, float] = {}  # node id -> when we last answered its hello
        # event id -> (sender's key, frame or gift wrap) from a key no hello has bound yet
        self._held: OrderedDict[str, tuple[str, Event]] = OrderedDict()
        self._chunks = chunks.Reassembler(max_payload=MAX_PAYLOAD, ttl=max(60.0, frame_ttl * 2))
        self._hellos_sent = 0
        self.gift_wrap = gift_wrap
        self._beacon = Beacon(min_gap=1.0, keepalive=digest_interval)  # on trio's clock
        self._beacon_moved = trio.Event()
        self._our_digests: Callable[[], dict[int, bytes]] | None = None
        self._heard_digests: Callable[[bytes, dict[int, bytes]], None] | None = None
        self._authors_moved = trio.Event()
        self._nursery: trio.Nursery | None = None

    # ---- life cycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.pool.run)
            # Subscribe before publishing (NIP-46/ContextVM's rule): an answer to our hello
            # must find the subscription in place.
            await self.pool.subscribe("kai-hello", {"kinds": [KIND_HELLO], "#m": [self.tag]})
            since = max(0, int(self._clock()) - self.catch_up)
            kinds = sorted(FRAME_KINDS | WRAP_KINDS)
            inbound = {"kinds": kinds, "#p": [self.pubkey], "since": since}
            await self.pool.subscribe("kai-in", inbound)
            nursery.start_soon(self._hello_loop)
            nursery.start_soon(self._digest_loop)
            nursery.start_soon(self._reconnect_loop)
            nursery.start_soon(self._digest_subscription_loop)
            task_status.started()
            await trio.sleep_forever()

    async def _hello_loop(self) -> None:
        while True:
            with trio.move_on_after(30):  # the first hello waits for a relay, not forever
                await self.pool.wait_writable()
            await self._publish_hello()
            await trio.sleep(self.announce_interval)

    async def _digest_loop(self) -> None:
        """Drive the beacon: publish our digests when it says so."""
        await self.pool.wait_writable()
        while True:
            due = self._beacon.get_timer()
            if self._our_digests is None or due is None:
                await self._beacon_moved.wait()  # not wired yet: nothing to publish
            else:
                with trio.move_on_at(due):
                    await self._beacon_moved.wait()
            self._beacon_moved = trio.Event()
            if self._our_digests is not None and self._beacon.handle_timer(self._now()):
                await self._publish_digests()

    async def _reconnect_loop(self) -> None:
        """A relay (back) after a drop gets our digests at once, not at the next keepalive: a
        gateway that was away is asked for what it lacks as soon as it is there."""
        before = len(self.pool.connected)
        while True:
            await self.pool.next_change()
            after = len(self.pool.connected)
            if after > before and self._our_digests is not None:
                self.sync_changed()
            before = after

    def digest_filter(self) -> dict[str, Any] | None:
        """The digest subscription's filter: from the members a hello bound, never from us;
        None while none is bound (an empty `authors` means nothing, or everything, by relay)."""
        authors = sorted(self._nodes)
        if not authors:
            return None
        flt: dict[str, Any] = {"kinds": [KIND_DIGESTS], "#m": [self.tag]}
        if len(authors) <= MAX_AUTHORS:
            flt["authors"] = authors
        return flt

    async def _digest_subscription_loop(self) -> None:
        """One task re-sends the digest REQ when the bound members change, so two changes close
        together never reach a relay in the wrong order."""
        sent: dict[str, Any] | None = None
        while True:
            await self._authors_moved.wait()
            self._authors_moved = trio.Event()
            flt = self.digest_filter()
            if flt is not None and flt != sent:
                await self.pool.subscribe("kai-digests", flt)
                sent = flt

    def _now(self) -> float:
        return trio.current_time()

    # ---- the Transport interface --------------------------------------------------------------

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        return self._events

    @property
    def max_payload(self) -> int:
        return MAX_PAYLOAD

    async def announce(self) -> None:
        await self._publish_hello()

    async def send(self, node_id: bytes, data: bytes) -> None:
        """Publish `data` for `node_id` as an ephemeral event. Returns once a relay accepted it.

        Raises:
            TransportError: the node's Nostr key is not known yet (no hello from it), `data` is
                larger than `max_payload`, or no relay accepted the event.
        """
        answers = await self._publish_frame(node_id, data, stored=False)
        if not any(a.accepted for a in answers):
            reasons = ", ".join(f"{a.relay}: {a.reason}" for a in answers) or "no answer"
            raise TransportError(f"no Nostr relay accepted the frame ({reasons})")

    async def store_and_forward(self, node_id: bytes, data: bytes) -> bool:
        """Leave `data` with the relays, kept until `stored_ttl`. True when one accepted it."""
        try:
            answers = await self._publish_frame(node_id, data, stored=True)
        except TransportError as exc:
            log.info("store-and-forward to %s over Nostr impossible: %s", node_id.hex(), exc)
            return False
        return any(a.accepted for a in answers)

    async def ping(self, node_id: bytes) -> PingResult:
        raise TransportError("Nostr relays are not a live link: nothing to ping")

    def interfaces(self) -> list[InterfaceInfo]:
        return [
            InterfaceInfo(
                name=relay.url,
                kind="nostr-relay",
                mtu=chunks.max_plaintext(relay.max_message_length),
                bitrate=None,
                online=relay.is_connected,
            )
            for relay in self.pool.relays
        ]

    def peers(self) -> list[PeerInfo]:
        return list(self._peers.values())

    def counters(self) -> dict[str, int]:
        return {**self._counters, **self._chunks.counters}

    def set_sync_digests(
        self,
        ours: Callable[[], dict[int, bytes]],
        heard: Callable[[bytes, dict[int, bytes]], None],
    ) -> None:
        self._our_digests, self._heard_digests = ours, heard
        self._beacon_moved.set()

    def sync_changed(self) -> None:
        self._beacon.changed()
        self._beacon_moved.set()  # the loop publishes, so this never blocks its caller

    def forget(self, node_id: bytes) -> None:
        key = self._keys.pop(node_id, None)
        if key is not None:
            self._nodes.pop(key, None)
            self._conversations.pop(key, None)
            self._authors_moved.set()
        self._peers.pop(node_id, None)
        self._answered.pop(node_id, None)

    def describe(self) -> dict[str, Any]:
        return {"pubkey": self.pubkey, "relays": [relay_state(r) for r in self.pool.relays]}

    # ---- sending ------------------------------------------------------------------------------

    def _conversation(self, pubkey: str) -> bytes:
        key = self._conversations.get(pubkey)
        if key is None:
            key = nip44.conversation_key(self.secret, bytes.fromhex(pubkey))
            self._conversations[pubkey] = key
        return key

    def _sign(self, kind: int, tags: list[list[str]], content: str) -> Event:
        return sign_event(
            self.secret,
            created_at=int(self._clock()),
            kind=kind,
            tags=tags,
            content=content,
            aux=self._randbytes(32),
        )

    def _sign_auth(self, url: str, challenge: str) -> Event:
        return self._sign(KIND_AUTH, [["relay", url], ["challenge", challenge]], "")

    def event_plaintext(self) -> int:
        """The largest plaintext one event carries to every connected write relay (NIP-11)."""
        limits = [r.max_message_length for r in self.pool.writers] or [
            r.max_message_length for r in self.pool.relays if r.write
        ]
        limit = min(limits, default=DEFAULT_MAX_MESSAGE)
        return giftwrap.max_plaintext(limit) if self.gift_wrap else chunks.max_plaintext(limit)

    async def _publish_frame(self, node_id: bytes, data: bytes, *, stored: bool) -> list[Published]:
        """Publish `data` for `node_id`: one event, or chunks when it does not fit one. The
        answers of a chunked frame are those of its least-accepted chunk."""
        pubkey = self._keys.get(node_id)
        if pubkey is None:
            raise TransportError(f"the Nostr key of node {node_id.hex()} is not known yet")
        if not data or len(data) > MAX_PAYLOAD:
            raise TransportError(f"a Nostr frame is 1..{MAX_PAYLOAD} bytes, not {len(data)}")
        ttl = self.stored_ttl if stored else self.frame_ttl
        request = REPLYING_TO.get()
        extra = [["e", request]] if request is not None and is_event_id(request) else []
        single = self.event_plaintext()
        if len(data) <= single:
            answers = await self._publish_one(
                pubkey, data, KIND_STORED if stored else KIND_FRAME, ttl, extra
            )
        else:
            kind = KIND_STORED_CHUNK if stored else KIND_CHUNK
            answers = []
            for piece in chunks.split(data, single):
                got = await self._publish_one(pubkey, piece, kind, ttl, extra)
                if not any(a.accepted for a in got):
                    answers = got  # one chunk lost is the frame lost
                    break
                answers = got
            self._counters["chunked"] = self._counters.get("chunked", 0) + 1
        self._counters["sent"] += 1
        return answers

    async def _publish_one(
        self, pubkey: str, plaintext: bytes, kind: int, ttl: int, extra: list[list[str]]
    ) -> list[Published]:
        expires = str(int(self._clock()) + ttl)
        if self.gift_wrap:
            event = self._wrap(
                pubkey, plaintext, kind, [["m", self.tag], ["expiration", expires], *extra]
            )
        else:
            content = nip44.encrypt(plaintext, self._conversation(pubkey), self._randbytes(32))
            tags = [["p", pubkey], ["m", self.tag], ["expiration", expires], *extra]
            event = self._sign(kind, tags, content)
        self._remember(event.id)  # our own event, echoed by a relay, is not news
        return await self.pool.publish(event)

    def _wrap(self, pubkey: str, plaintext: bytes, kind: int, tags: list[list[str]]) -> Event:
        """NIP-59: the frame event as a rumor (its content the plaintext in base64), sealed by
        us, wrapped by a one-time key; only `p` and `expiration` stay public. An ephemeral
        wrap is set back at most 30 s (strfry refuses ephemeral events 60 s old), a stored one
        at most half the catch-up window (the inbound subscription's `since`)."""
        ephemeral = kind in (KIND_FRAME, KIND_CHUNK)
        now = int(self._clock())
        return giftwrap.wrap(
            sender_secret=self.secret,
            recipient=pubkey,
            kind=kind,
            tags=tags,
            content=base64.b64encode(plaintext).decode(),
            now=now,
            randbytes=self._randbytes,
            wrap_kind=giftwrap.KIND_EPHEMERAL_WRAP if ephemeral else giftwrap.KIND_WRAP,
            backdate=30 if ephemeral else min(giftwrap.TWO_DAYS, self.catch_up // 2),
            public_tags=[t for t in tags if t[0] == "expiration"],
        )

    async def _publish_hello(self) -> None:
        content = nip44.encrypt(self.member.to_bytes(), self._hello_key, self._randbytes(32))
        expires = str(int(self._clock()) + max(60, int(self.announce_interval) * 2))
        tags = [["m", self.tag], ["expiration", expires]]
        if self._hellos_sent == 0:
            tags.append(["fresh", "1"])  # "I just started": known members answer too
        self._hellos_sent += 1
        event = self._sign(KIND_HELLO, tags, content)
        self._remember(event.id)
        try:
            await self.pool.publish(event)
        except TransportError as exc:
            log.debug("hello not published: %s", exc)

    async def _publish_digests(self) -> None:
        assert self._our_digests is not None
        digests = self._our_digests()
        if not digests:
            return
        body = pack({int(k): bytes(v) for k, v in digests.items()})
        content = nip44.encrypt(body, self._hello_key, self._randbytes(32))
        expires = str(int(self._clock()) + 60)
        event = self._sign(KIND_DIGESTS, [["m", self.tag], ["expiration", expires]], content)
        self._remember(event.id)
        try:
            await self.pool.publish(event)
        except TransportError as exc:
            log.debug("digests not published: %s", exc)
            return
        self._counters["digests_sent"] = self._counters.get("digests_sent", 0) + 1

    # ---- receiving (called from a relay's read loop: never raises, never blocks) -------------

    def _count(self, reason: str) -> None:
        self._counters[reason] = self._counters.get(reason, 0) + 1

    def _remember(self, event_id: str) -> None:
        self._seen[event_id] = None
        if len(self._seen) > _policy.SEEN_IDS:
            self._seen.popitem(last=False)

    def _on_event(self, relay: Relay, sub_id: str, obj: Any) -> None:
        self._counters["received"] += 1
        try:
            event = parse_event(obj)
            if event.kind not in KINDS:
                self._count("wrong_kind")
                return
            if event.pubkey == self.pubkey:  # our own hello, echoed: nothing to learn
                self._count("own_echo")
                return
            if event.id in self._seen:  # before any signature work (rust-nostr's order)
                self._seen.move_to_end(event.id)
                self._count("duplicate")
                return
            verify_event(event)
            self._remember(event.id)
            check_fresh(event, self._clock())
        except ProtocolError as exc:
            self._count(exc.reason)
            return
        if event.kind in WRAP_KINDS:
            self._on_wrap(event)  # its mesh tag is inside
        elif event.tag_values("m") != [self.tag]:
            self._count("other_mesh")
        elif event.kind == KIND_HELLO:
            self._on_hello(event)
        elif event.kind == KIND_DIGESTS:
            self._on_digests(event)
        else:
            self._on_frame(event)

    def _on_hello(self, event: Event) -> None:
        try:
            record_bytes = nip44.decrypt(event.content, self._hello_key)
            record = admit_member(record_bytes, self.mesh_id, self.trusted_keys)
        except ProtocolError as exc:  # another mesh's hello does not decrypt
            self._count("untrusted" if isinstance(exc, Untrusted) else exc.reason)
            return
        if record.nostr_public.hex() != event.pubkey:
            self._count("key_mismatch")
            return
        node_id = record.node_id
        if node_id == self.node_id:
            return
        new = self._keys.get(node_id) != event.pubkey
        old_key = self._keys.get(node_id)
        if old_key is not None and new:
            self._nodes.pop(old_key, None)
        self._keys[node_id], self._nodes[event.pubkey] = event.pubkey, node_id
        if new:
            self._authors_moved.set()  # ask for its digests from now on
            if self._our_digests is not None:
                self.sync_changed()  # and tell it ours: it has just bound us, or will
        peer = PeerInfo(
            node_id=node_id,
            name=record.name,
            hops=None,
            interface=INTERFACE,
            last_heard=trio.current_time(),
            rtt=None,
        )
        self._peers[node_id] = peer
        self._emit(PeerSeen(peer=peer))
        for held_id in [i for i, (key, _) in self._held.items() if key == event.pubkey]:
            _, held = self._held.pop(held_id)
            self._on_wrap(held) if held.kind in WRAP_KINDS else self._on_frame(held)
        now = trio.current_time()
        fresh = event.tag_values("fresh") == ["1"]
        # A restart's hello (fresh: sent once per start, and a replay of it is a duplicate id)
        # is always answered; a key we had not bound, at most once per gap.
        quiet = now - self._answered.get(node_id, -HELLO_ANSWER_GAP) >= HELLO_ANSWER_GAP
        if (fresh or (new and quiet)) and self._nursery is not None:
            self._answered[node_id] = now  # a newcomer learns of us now, not at our next hello
            self._nursery.start_soon(self._publish_hello)

    def _on_digests(self, event: Event) -> None:
        node_id = self._nodes.get(event.pubkey)
        if node_id is None:
            self._count("unknown_key")  # the next keepalive comes after its hello
            return
        try:
            digests = decode_digests(nip44.decrypt(event.content, self._hello_key))
        except ProtocolError as exc:
            self._count(exc.reason)
            return
        self._counters["digests_received"] = self._counters.get("digests_received", 0) + 1
        if self._heard_digests is not None:
            self._heard_digests(node_id, digests)

    def _on_frame(self, event: Event) -> None:
        if event.tag_values("p") != [self.pubkey]:
            self._count("not_for_us")
            return
        if expiration(event) is None:
            self._count("malformed")  # we always set one: without it a replay never dies
            return
        node_id = self._bound(event.pubkey, event)
        if node_id is None:
            return
        try:
            data = nip44.decrypt(event.content, self._conversation(event.pubkey))
        except ProtocolError as exc:
            self._count(exc.reason)
            return
        self._deliver(node_id, event.pubkey, event.kind, data, event.id)

    def _bound(self, sender: str, event: Event) -> bytes | None:
        """The node id a hello bound `sender` to; else None, and `event` is held (bounded):
        stored frames arrive as soon as we subscribe, before their sender's next hello."""
        node_id = self._nodes.get(sender)
        if node_id is None:
            self._count("held_unknown_key")
            self._held[event.id] = (sender, event)
            if len(self._held) > HELD_FRAMES:
                self._held.popitem(last=False)
                self._count("unknown_key")
        return node_id

    def _on_wrap(self, event: Event) -> None:
        """A NIP-59 gift wrap (its own signature checked): the sender is the seal's signer,
        and the rumor's tags are checked as a frame's are."""
        if event.tag_values("p") != [self.pubkey]:
            self._count("not_for_us")
            return
        try:
            sender, rumor = giftwrap.unwrap(event, self.secret)
            if rumor.kind not in FRAME_KINDS:
                raise Malformed(f"a wrapped frame of kind {rumor.kind}")
            inner = Event(
                id=rumor.id, pubkey=sender, created_at=rumor.created_at, kind=rumor.kind,
                tags=rumor.tags, content="", sig="",
            )  # fmt: skip
            check_fresh(inner, self._clock())
            if inner.tag_values("m") != [self.tag]:
                self._count("other_mesh")
                return
            if expiration(inner) is None:
                raise Malformed("a wrapped frame without an expiration")
            data = base64.b64decode(rumor.content.encode("ascii"), validate=True)
        except ProtocolError as exc:
            self._count(exc.reason)
            return
        except (ValueError, binascii.Error):
            self._count("malformed")
            return
        node_id = self._bound(sender, event)
        if node_id is not None:
            self._deliver(node_id, sender, rumor.kind, data, event.id)

    def _deliver(self, node_id: bytes, sender: str, kind: int, data: bytes, ref: str) -> None:
        if kind in CHUNK_KINDS:
            try:
                whole = self._chunks.add(sender, data, self._clock())
            except ProtocolError as exc:
                self._count(exc.reason)
                return
            if whole is None:
                return
            data = whole
        if len(data) > MAX_PAYLOAD:
            self._count("oversize")
            return
        # A chunked frame is named by its last chunk's event: any one of them names the request.
        self._emit(MessageReceived(node_id=node_id, data=data, interface=INTERFACE, ref=ref))

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._send_events.send_nowait(event)
        except trio.WouldBlock:
            self._count("dropped_events")
