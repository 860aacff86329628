"""LXMF as a kai-mesh transport: store-and-forward between members, and guests.

LXMF shares the process's one Reticulum instance (started by `ReticulumTransport.start_rns()`);
its delivery identity is the node's Reticulum identity, so a node's LXMF address is stable and
derivable from its member record. `start_lxmf()` builds the `LXMRouter` on the main thread before
`trio.run` (it installs signal handlers, put back here, as for RNS); `shutdown_lxmf()` persists
LXMF's state after trio has finished and before Reticulum goes down. LXMF calls back on its own
threads: every callback is handed to trio with `TrioToken.run_sync_soon` and nothing may escape
it (LAB.md), so all state is touched on the trio thread only.

Members: an envelope travels as an LXMessage whose fields hold `FIELD_CUSTOM_TYPE = "kai-mesh/1"`,
`FIELD_CUSTOM_DATA = <envelope bytes>` and `FIELD_CUSTOM_META = <the sender's signed member
record>`. The receiver checks the record as the Reticulum HELLO does (this mesh, a trusted key)
and that LXMF's source is the record's Reticulum key and its signature verifies with that key;
only then is the envelope a `MessageReceived` from that node id. Carrying the record means two
nodes that never linked (the usual case for store-and-forward) can still prove who sent what.
`store_and_forward()` is the RemoteRouter's fallback when the direct Reticulum send fails: the
message goes `PROPAGATED` through the nearest propagation node this node has heard of.

Guests (LXMF clients that are not members): the message text is `AGENT INTENT [JSON]`; only the
intents in `guest_intents` are served, through the local bus, from `kai://<node>/guest`; the reply
(JSON text, or `error: …`) goes back as an LXMessage. Everything refused is counted, not raised.
`guest_intents` starts as the configured list and follows the governance policy's
`guest_intents` live (`set_guest_intents`, called from runtime/governance/policy.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import LXMF
import RNS
import trio
from LXMF import LXMessage, LXMRouter
from RNS.vendor import umsgpack

from kai_mesh.core.codec import unpack_exact
from kai_mesh.core.errors import KaiMeshError, ProtocolError, TransportError, Untrusted
from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.mesh.identity import MemberRecord, admit_member
from kai_mesh.core.messaging.envelope import MESSAGE_ID_BYTES, StandardMessage
from transports._bridge import ThreadBridge
from transports.base import (
    Abilities,
    InterfaceInfo,
    LocalHandler,
    MessageReceived,
    PeerInfo,
    PingResult,
    TransportBase,
    TransportEvent,
)
from transports.reticulum.transport import identity_from_public

log = logging.getLogger(__name__)


CUSTOM_TYPE = b"kai-mesh/1"
MAX_ENVELOPE = 256 * 1024
MAX_GUEST_TEXT = 4096
MAX_GUEST_INFLIGHT = 16
GUEST_TIMEOUT = 30.0
GUEST_TTL = 120
EVENT_BUFFER = 1024
SYNC_INTERVAL = 30.0
NODE_ASPECT = "kai_mesh.node"  # ReticulumTransport's announces: who claims which node id
USAGE = 'send "AGENT INTENT [JSON]", e.g. echo echo {"x": 1}'


class LxmfTransport(TransportBase):
    """See the module docstring. Construct, `start_lxmf()` on the main thread, then `run()`."""

    name = "lxmf"
    #: A fallback, not a live link: it confirms delivery itself (so a late reply is never asked
    #: for over it), keeps messages at a propagation node for an absent peer, and serves guests.
    abilities = Abilities(
        own_receipts=True, store_and_forward=True, relay_stores=True, announces=True, guests=True
    )

    def __init__(
        self,
        *,
        storagedir: Path,
        rns_private: bytes,
        mesh_id: bytes,
        node_id: bytes,
        member: MemberRecord,
        trusted_keys: Mapping[bytes, bytes],
        propagation_node: bool = False,
        stamp_cost: int = 13,
        node_announce_delay: float = 20.0,
        guest_intents: Iterable[str] = ("echo", "sysinfo"),
        announce_interval: float = 300.0,
        sync_interval: float = SYNC_INTERVAL,
    ) -> None:
        self.storagedir = storagedir
        self.rns_private = rns_private
        self.mesh_id = mesh_id
        self.node_id = node_id
        self.member = member
        self.trusted_keys = trusted_keys  # live: the governance fold changes it
        self.propagation_node = propagation_node
        self.stamp_cost = stamp_cost
        self.node_announce_delay = node_announce_delay
        self.configured_guest_intents = frozenset(guest_intents)
        self.guest_intents = self.configured_guest_intents
        self.announce_interval = announce_interval
        self.sync_interval = sync_interval
        self.local: LocalHandler | None = None
        self._counters: dict[str, int] = {
            "received": 0,
            "sent": 0,
            "queued_propagated": 0,
            "propagated": 0,
            "delivered": 0,
            "send_failed": 0,
            "guest_requests": 0,
            "guest_replies": 0,
            "guest_refused": 0,
            "guest_busy": 0,
            "unknown_source": 0,
            "bad_signature": 0,
            "bad_member_record": 0,
            "untrusted": 0,
            "malformed": 0,
            "oversize": 0,
            "dropped_events": 0,
            "dropped_callbacks": 0,
        }
        self._send_events, self._events = trio.open_memory_channel[TransportEvent](EVENT_BUFFER)
        self._bridge = ThreadBridge("LXMF", lambda: self._count("dropped_callbacks"))
        self._nursery: trio.Nursery | None = None
        self._router: Any = None
        self._identity: Any = None
        self._delivery: Any = None
        self._members: dict[bytes, bytes] = {}  # node id -> Reticulum public key, verified
        self._claimed: dict[bytes, bytes] = {}  # node id -> Reticulum public key, announced
        self._pns: dict[bytes, int] = {}  # propagation node destination hash -> hops
        self._guests_inflight = 0
        self._sync_now = trio.Event()

    # ---- life cycle -------------------------------------------------------------------------

    @property
    def _pn_file(self) -> Path:
        return self.storagedir / "lxmf" / "kai_propagation_node"

    def start_lxmf(self) -> None:
        """Build the LXMF router. Main thread, after `start_rns()`, before `trio.run`.

        Raises `TransportError` when LXMF cannot start (Reticulum not running, storage)."""
        if RNS.Reticulum.get_instance() is None:
            raise TransportError("LXMF needs Reticulum: start it first")
        LXMRouter.NODE_ANNOUNCE_DELAY = self.node_announce_delay
        self.storagedir.mkdir(parents=True, exist_ok=True, mode=0o700)
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._identity = RNS.Identity(create_keys=False)
            self._identity.load_private_key(self.rns_private)
            self._router = LXMRouter(
                identity=self._identity,
                storagepath=str(self.storagedir),
                propagation_cost=self.stamp_cost,
                autopeer=True,
            )
            self._delivery = self._router.register_delivery_identity(
                self._identity, display_name=self.member.name
            )
            self._router.register_delivery_callback(self._lxmf_delivered)
            if self.propagation_node:
                self._router.enable_propagation()
        except Exception as exc:
            raise TransportError(f"LXMF did not start: {exc}") from None
        finally:
            # LXMRouter installs SIGINT/SIGTERM handlers that end in os._exit (like RNS).
            for signum, handler in saved.items():
                signal.signal(signum, handler)
        RNS.Transport.register_announce_handler(_Announces(self, "lxmf.propagation"))
        RNS.Transport.register_announce_handler(_Announces(self, NODE_ASPECT))
        with contextlib.suppress(OSError, ValueError):
            remembered = bytes.fromhex(self._pn_file.read_text().strip())
            if len(remembered) == RNS.Identity.TRUNCATED_HASHLENGTH // 8:
                self._pns[remembered] = RNS.Transport.PATHFINDER_M
                self._router.set_outbound_propagation_node(remembered)

    def shutdown_lxmf(self) -> None:
        """Persist LXMF's state. After trio has finished, before `shutdown_rns()`."""
        if self._router is None:
            return
        try:
            self._router.exit_handler()
        except Exception:  # teardown must not turn a clean exit into a traceback
            log.debug("LXMF teardown raised", exc_info=True)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._router is None:
            raise TransportError("start_lxmf() must run before run()")
        self._bridge.bind()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._announce_loop)
            nursery.start_soon(self._sync_loop)
            if self.propagation_node:
                nursery.start_soon(self._propagation_announce_loop)
            task_status.started()
            await trio.sleep_forever()

    async def _announce_loop(self) -> None:
        for delay in (0.0, 1.0, 3.0):  # an announce sent before the peers are up is lost
            await trio.sleep(delay)
            await self.announce()
        while True:
            await trio.sleep(self.announce_interval)
            await self.announce()

    async def _propagation_announce_loop(self) -> None:
        # LXMF announces a propagation node once (after NODE_ANNOUNCE_DELAY); nodes that start
        # later or missed it would never learn of it: announce again, then at the interval.
        await trio.sleep(self.node_announce_delay)
        for delay in (2.0, 5.0):
            await trio.sleep(delay)
            self._announce_propagation()
        while True:
            await trio.sleep(self.announce_interval)
            self._announce_propagation()

    def _announce_propagation(self) -> None:
        router = self._router
        router.propagation_destination.announce(app_data=router.get_propagation_node_app_data())

    async def _sync_loop(self) -> None:
        """Fetch waiting messages from the propagation node: at start, when one is first heard,
        then every `sync_interval` seconds."""
        while True:
            self._sync()
            with trio.move_on_after(self.sync_interval):
                await self._sync_now.wait()
            self._sync_now = trio.Event()

    def _sync(self) -> None:
        router = self._router
        if router.get_outbound_propagation_node() is None:
            return
        busy = (
            LXMRouter.PR_PATH_REQUESTED,
            LXMRouter.PR_LINK_ESTABLISHING,
            LXMRouter.PR_LINK_ESTABLISHED,
            LXMRouter.PR_REQUEST_SENT,
            LXMRouter.PR_RECEIVING,
            LXMRouter.PR_RESPONSE_RECEIVED,
        )
        if router.propagation_transfer_state in busy:
            return
        try:
            router.request_messages_from_propagation_node(self._identity)
        except Exception:
            log.debug("request_messages_from_propagation_node raised", exc_info=True)

    # ---- the Transport interface ------------------------------------------------------------

    @property
    def events(self) -> trio.MemoryReceiveChannel[TransportEvent]:
        return self._events

    @property
    def max_payload(self) -> int:
        return MAX_ENVELOPE

    @property
    def address(self) -> str:
        """This node's LXMF address (delivery destination hash, hex): what guests message."""
        return "" if self._delivery is None else bytes(self._delivery.hash).hex()

    def bind_local(self, local: LocalHandler) -> None:
        """The node's bus, for guest requests (the RemoteRouter calls this)."""
        self.local = local

    def set_guest_intents(self, intents: Iterable[str] | None) -> None:
        """The intents guests may call from now on: the governance policy's list, or None for
        the configured one (the policy has none)."""
        self.guest_intents = (
            self.configured_guest_intents if intents is None else frozenset(intents)
        )

    def describe(self) -> dict[str, Any]:
        """Extra lines for `kai-mesh status`."""
        pn = None if self._router is None else self._router.get_outbound_propagation_node()
        return {
            "address": self.address,
            "propagation_node": self.propagation_node,
            "outbound_propagation_node": None if pn is None else bytes(pn).hex(),
            "guest_intents": sorted(self.guest_intents),
        }

    async def announce(self) -> None:
        self._router.announce(self._delivery.hash)

    async def send(self, node_id: bytes, data: bytes) -> None:
        """Send an envelope to a member, DIRECT (a link), falling back to the propagation node
        when LXMF gives up. Raises `TransportError` when the node's identity is unknown."""
        await self._send_member(node_id, data, propagated=False)

    async def store_and_forward(self, node_id: bytes, data: bytes) -> bool:
        """Leave `data` for `node_id` at a propagation node. False when none is known or the
        node's Reticulum identity is unknown; True once LXMF has taken the message."""
        if self._router is None or self._router.get_outbound_propagation_node() is None:
            return False
        try:
            await self._send_member(node_id, data, propagated=True)
        except TransportError as exc:
            log.info("store-and-forward to %s impossible: %s", node_id.hex(), exc)
            return False
        self._counters["queued_propagated"] += 1
        return True

    async def ping(self, node_id: bytes) -> PingResult:
        raise TransportError("LXMF does not ping: use the Reticulum transport")

    def interfaces(self) -> list[InterfaceInfo]:
        return []  # LXMF rides on Reticulum's interfaces

    def peers(self) -> list[PeerInfo]:
        return []  # peers are discovered by Reticulum; LXMF is only a fallback for them

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    # ---- sending ----------------------------------------------------------------------------

    def _member_public(self, node_id: bytes) -> bytes:
        public = self._members.get(node_id) or self._claimed.get(node_id)
        if public is None:
            raise TransportError(f"the Reticulum identity of node {node_id.hex()} is unknown")
        return public

    async def _send_member(self, node_id: bytes, data: bytes, *, propagated: bool) -> None:
        if len(data) > MAX_ENVELOPE:
            raise TransportError(f"{len(data)} bytes is more than a message may carry")
        destination = _delivery_destination(self._member_public(node_id))
        fields = {
            LXMF.FIELD_CUSTOM_TYPE: CUSTOM_TYPE,
            LXMF.FIELD_CUSTOM_DATA: data,
            LXMF.FIELD_CUSTOM_META: self.member.to_bytes(),
        }
        method = LXMessage.PROPAGATED if propagated else LXMessage.DIRECT
        message = LXMessage(destination, self._delivery, b"", b"", fields, desired_method=method)
        await self._hand_over(message, fallback=not propagated)

    async def _send_text(self, destination_hash: bytes, text: str) -> bool:
        identity = RNS.Identity.recall(destination_hash)
        if identity is None:
            return False
        destination = RNS.Destination(
            identity, RNS.Destination.OUT, RNS.Destination.SINGLE, "lxmf", "delivery"
        )
        message = LXMessage(
            destination, self._delivery, text, "kai-mesh", desired_method=LXMessage.DIRECT
        )
        await self._hand_over(message, fallback=True)
        return True

    async def _hand_over(self, message: Any, *, fallback: bool) -> None:
        message.register_delivery_callback(self._lxmf_outbound_done)
        message.register_failed_callback(
            self._lxmf_outbound_failed_fallback if fallback else self._lxmf_outbound_failed
        )
        try:
            # handle_outbound can wait on LXMF's outbound lock: not on the trio thread.
            await trio.to_thread.run_sync(self._router.handle_outbound, message)
        except Exception as exc:
            raise TransportError(f"LXMF refused the message: {exc}") from None
        self._counters["sent"] += 1

    # ---- from LXMF / RNS threads: hand over to trio, never raise ----------------------------

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        self._bridge.post(fn, *args)

    def _lxmf_delivered(self, message: Any) -> None:
        self._post(self._on_message, message)

    def _lxmf_outbound_done(self, message: Any) -> None:
        state = "propagated" if message.state == LXMessage.SENT else "delivered"
        self._post(self._count, state)

    def _lxmf_outbound_failed(self, message: Any) -> None:
        self._post(self._count, "send_failed")

    def _lxmf_outbound_failed_fallback(self, message: Any) -> None:
        self._post(self._on_outbound_failed, message)

    def _rns_announce(self, aspect: str, destination_hash: bytes, identity: Any, app: Any) -> None:
        self._post(self._on_announce, aspect, destination_hash, identity.get_public_key(), app)

    # ---- on the trio thread -----------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self._counters[reason] = self._counters.get(reason, 0) + 1

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._send_events.send_nowait(event)
        except trio.WouldBlock:
            self._count("dropped_events")

    def _on_outbound_failed(self, message: Any) -> None:
        """A DIRECT send gave up: try once more through the propagation node, if one is known."""
        if self._router.get_outbound_propagation_node() is None:
            self._count("send_failed")
            return
        retry = LXMessage(
            message.get_destination(),
            self._delivery,
            message.content,
            message.title,
            message.fields,
            desired_method=LXMessage.PROPAGATED,
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._retry, retry)

    async def _retry(self, message: Any) -> None:
        try:
            await self._hand_over(message, fallback=False)
        except TransportError as exc:
            self._count("send_failed")
            log.info("could not hand a message to the propagation node: %s", exc)
        else:
            self._count("queued_propagated")

    def _on_announce(self, aspect: str, destination_hash: bytes, public: bytes, app: Any) -> None:
        if aspect == NODE_ASPECT:
            self._on_node_announce(public, app)
        elif _is_propagation_node(app):
            self._on_propagation_node(destination_hash)

    def _on_node_announce(self, public: bytes, app_data: Any) -> None:
        # The same app_data ReticulumTransport reads: [1, mesh_id[:8], node_id, name]. It only
        # claims a node id: used to address a message, never to accept one.
        try:
            fields = unpack_exact(app_data or b"", 64)
        except KaiMeshError:
            return
        if (
            isinstance(fields, list)
            and len(fields) >= 3
            and fields[1] == self.mesh_id[:8]
            and isinstance(fields[2], bytes)
            and fields[2] in self.trusted_keys
            and fields[2] != self.node_id
        ):
            self._claimed[fields[2]] = public

    def _on_propagation_node(self, destination_hash: bytes) -> None:
        hops = RNS.Transport.hops_to(destination_hash)
        first = not self._pns
        self._pns[destination_hash] = hops
        best = min(self._pns, key=lambda h: self._pns[h])
        if best != self._router.get_outbound_propagation_node():
            log.info("LXMF propagation node: %s (%s hops)", best.hex(), self._pns[best])
            self._router.set_outbound_propagation_node(best)
            with contextlib.suppress(OSError):
                self._pn_file.write_text(best.hex() + "\n")
        if first or best == destination_hash:
            self._sync_now.set()

    def _on_message(self, message: Any) -> None:
        self._count("received")
        fields = message.fields if isinstance(message.fields, dict) else {}
        kind = fields.get(LXMF.FIELD_CUSTOM_TYPE)
        if kind in (CUSTOM_TYPE, CUSTOM_TYPE.decode()):
            self._on_member_message(message, fields)
        else:
            self._on_guest_message(message)

    def _on_member_message(self, message: Any, fields: dict[Any, Any]) -> None:
        data, record_bytes = fields.get(LXMF.FIELD_CUSTOM_DATA), fields.get(LXMF.FIELD_CUSTOM_META)
        if not isinstance(data, bytes) or not isinstance(record_bytes, bytes):
            self._count("malformed")
            return
        if len(data) > MAX_ENVELOPE:
            self._count("oversize")
            return
        try:
            record = admit_member(record_bytes, self.mesh_id, self.trusted_keys)
        except ProtocolError as exc:  # another mesh's record fails as bad_member_record
            self._count("untrusted" if isinstance(exc, Untrusted) else "bad_member_record")
            return
        node_id = record.node_id
        if node_id == self.node_id:
            self._count("untrusted")
            return
        if not _signed_by(message, record.rns_public):
            self._count("bad_signature")
            return
        self._members[node_id] = record.rns_public
        self._emit(MessageReceived(node_id=node_id, data=data, interface="lxmf"))

    def _on_guest_message(self, message: Any) -> None:
        source = bytes(message.source_hash)
        if not message.signature_validated:
            if message.unverified_reason == LXMessage.SIGNATURE_INVALID:
                self._count("bad_signature")
            else:
                # Its identity is unknown: nothing to check the signature with, nobody to
                # answer. Ask for it, so the guest's next message works.
                self._count("unknown_source")
                RNS.Transport.request_path(source)
            return
        self._count("guest_requests")
        if self._guests_inflight >= MAX_GUEST_INFLIGHT or self._nursery is None:
            self._count("guest_busy")
            return
        content = message.content if isinstance(message.content, bytes) else b""
        self._guests_inflight += 1
        self._nursery.start_soon(self._serve_guest, source, content)

    async def _serve_guest(self, source: bytes, content: bytes) -> None:
        try:
            text = await self._guest_answer(source, content)
            if await self._send_text(source, text):
                self._count("guest_replies")
        except TransportError as exc:
            log.info("could not answer guest %s: %s", source.hex(), exc)
        finally:
            self._guests_inflight -= 1

    async def _guest_answer(self, source: bytes, content: bytes) -> str:
        if len(content) > MAX_GUEST_TEXT:
            self._count("oversize")
            return f"error: oversize: at most {MAX_GUEST_TEXT} bytes"
        try:
            agent, intent, payload = parse_guest_text(content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            self._count("malformed")
            return f"error: bad_request: {exc}. {USAGE}"
        if intent not in self.guest_intents:
            self._count("guest_refused")
            allowed = ", ".join(sorted(self.guest_intents)) or "none"
            return f"error: refused: guests may not call intent {intent!r} (allowed: {allowed})"
        if self.local is None:
            return "error: unavailable: this node serves no guests yet"
        now = int(time.time())
        try:
            request = StandardMessage(
                sender=AgentAddress(NodeRef(node_id=self.node_id), "guest"),
                to=AgentAddress(NodeRef(node_id=self.node_id), agent),
                intent=intent,
                payload=payload,
                context={"guest": source.hex()},
                timestamp=now,
                message_id=os.urandom(MESSAGE_ID_BYTES),
                expires_at=now + GUEST_TTL,
            )
        except KaiMeshError as exc:
            self._count("malformed")
            return f"error: bad_request: {exc}"
        reply = await self.local(request, GUEST_TIMEOUT)
        if reply.intent == "error" and isinstance(reply.payload, dict):
            return f"error: {reply.payload.get('code')}: {reply.payload.get('message')}"
        return json.dumps(reply.payload, ensure_ascii=False, default=repr)


def parse_guest_text(text: str) -> tuple[str, str, Any]:
    """`AGENT INTENT [JSON]` → (agent, intent, payload); raises `ValueError` saying why not."""
    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("expected an agent and an intent")
    payload = None
    if len(parts) == 3:
        try:
            payload = json.loads(parts[2])
        except json.JSONDecodeError as exc:
            raise ValueError(f"the payload is not JSON: {exc.msg}") from None
    return parts[0].lower(), parts[1].lower(), payload


class _Announces:
    """RNS calls `received_announce` on one of its threads for announces of `aspect_filter`."""

    receive_path_responses = True

    def __init__(self, transport: LxmfTransport, aspect: str) -> None:
        self.transport = transport
        self.aspect_filter = aspect

    def received_announce(
        self, destination_hash: bytes, announced_identity: Any, app_data: bytes | None
    ) -> None:
        self.transport._rns_announce(
            self.aspect_filter, destination_hash, announced_identity, app_data
        )


def _delivery_destination(public_key: bytes) -> Any:
    return RNS.Destination(
        identity_from_public(public_key),
        RNS.Destination.OUT,
        RNS.Destination.SINGLE,
        "lxmf",
        "delivery",
    )


def _is_propagation_node(app_data: Any) -> bool:
    try:
        if not LXMF.pn_announce_data_is_valid(app_data):
            return False
        return bool(umsgpack.unpackb(app_data)[2] is True)
    except Exception:
        return False


def _signed_by(message: Any, public_key: bytes) -> bool:
    """Whether LXMF's source is `public_key`'s delivery destination and it signed `message`.

    LXMF validates the signature itself only when it already knows the source's identity; a
    stored-and-forwarded message often arrives before any announce from its sender, so the
    check is redone here with the key from the member record."""
    try:
        identity = identity_from_public(public_key)
        expected = RNS.Destination.hash(identity, "lxmf", "delivery")
        if bytes(message.source_hash) != bytes(expected):
            return False
        packed = bytes(message.packed)
        length = LXMessage.DESTINATION_LENGTH
        hashes = packed[: 2 * length]
        payload = packed[2 * length + LXMessage.SIGNATURE_LENGTH :]
        unpacked = umsgpack.unpackb(payload)
        if len(unpacked) > 4:  # a stamp is not part of what was signed
            payload = umsgpack.packb(unpacked[:4])
        hashed = hashes + payload
        signed = hashed + RNS.Identity.full_hash(hashed)
        return bool(identity.validate(bytes(message.signature), signed))
    except Exception:
        return False
