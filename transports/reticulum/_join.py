"""Admitting the node at the other end of a Reticulum link: the HELLO check and JOIN.

A link carries nothing until the peer's HELLO (its signed member record) verifies: valid for this
mesh, an Ed25519 key the mesh trusts, and the Reticulum key the link proved (the responder learns
it from the initiator's `identify()`, which may arrive after the HELLO: that HELLO waits in
`pending_hello`). A node made by `kai-mesh join` sends JOIN instead, its record and an invite
claim: a node that does not trust the record yet checks that it names the link's key and the
claim's node and hands the claim to `admit_claim` (the node's governance) in a task of its own,
then admits the link as for a HELLO or closes it. A node that trusts the record ignores the claim.
Each refusal closes the link and counts why. One layer of `ReticulumTransport` (see `_rns_state`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import RNS
import trio

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import Malformed, ProtocolError, Untrusted
from kai_mesh.core.governance.wire import parse_redemption
from kai_mesh.core.mesh.identity import MemberRecord, admit_member
from transports.base import PeerSeen
from transports.reticulum._state import (
    APP_NAME,
    ASPECT,
    HELLO,
    HELLO_RESEND_GAP,
    JOIN,
    MAX_LINKS_PER_PEER,
    _Link,
    _Peer,
    _RnsState,
    identity_from_public,
)

# The public module's logger: this is a part of it, split out for size.
log = logging.getLogger("transports.reticulum.transport")

MAX_JOIN = 2048  # bytes of a JOIN body: a member record and a claim


class _RnsAdmission(_RnsState):
    """HELLO and JOIN, sent and received."""

    def _send_hello(self, state: _Link) -> None:
        state.hello_sent = True
        if self.join_claim is not None:
            body = pack([self.member.to_bytes(), self.join_claim])
            self._send_frame(state, JOIN, body, verified_only=False)
            return
        self._send_frame(state, HELLO, self.member.to_bytes(), verified_only=False)

    def _resend_hello(self, state: _Link) -> None:
        """Send our HELLO again on `state`, at most once per `HELLO_RESEND_GAP` s per link."""
        now = trio.current_time()
        if state.closed or now - state.hello_resent_at < HELLO_RESEND_GAP:
            return
        state.hello_resent_at = now
        self._count("hello_resent")
        self._send_hello(state)

    def _on_hello(self, state: _Link, body: bytes, kind: int = HELLO) -> None:
        if state.verified.is_set():
            # Again on a verified link: if the peer opened it, it lacks our HELLO (lost, or it
            # asks with its own: `_peer_lacks_our_hello`). The end that opened the link never
            # answers this way, so the two ends cannot keep each other sending.
            if not state.outbound:
                self._resend_hello(state)
            return
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
        state.verified_at = now
        self._adopt(peer, state)
        if not state.outbound:
            self._bound_inbound_links(node_id, state)
        if not state.hello_sent:
            self._send_hello(state)
        state.verified.set()
        self._verified_links.add(state.link.link_id)
        state.settled.set()
        self._emit(PeerSeen(peer=self._peer_info(peer)))
        if self.join_claim is not None and state.outbound:
            self._answer_announce()  # admitted, maybe just now: let the others hear of us

    def _bound_inbound_links(self, node_id: bytes, newest: _Link) -> None:
        """Close the oldest of `node_id`'s verified inbound links past `MAX_LINKS_PER_PEER`."""
        others = [
            s
            for s in self._links.values()
            if s.node_id == node_id and not s.outbound and not s.closed and s is not newest
        ]
        excess = len(others) + 1 - MAX_LINKS_PER_PEER
        for old in sorted(others, key=lambda s: s.opened_at)[: max(0, excess)]:
            self._count("links_over_peer_cap")
            old.link.teardown()
            # Forgotten now, as `_drop` does, not when RNS confirms the close on its thread.
            self._links.pop(old.link.link_id, None)
            self._verified_links.discard(old.link.link_id)
            old.closed = True
            old.established.set()
            old.settled.set()

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
