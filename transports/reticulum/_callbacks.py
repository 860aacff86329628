"""What RNS calls on its threads, and the trio-side handlers those calls are handed to.

Every `_rns_*` method runs on an RNS thread: it reads what it needs from RNS's objects and
`_post`s a handler to the trio thread, and never raises. A link's packet callback runs on RNS's
reader thread itself, not on a thread RNS starts for each packet (`_inline`: why, and what RNS
does): posting never blocks. Only two things happen on the RNS
thread itself: `_rns_inbound_link` wires a new link's callbacks at once, so a packet that beats
the trio handler is not lost, and `_rns_resource_offered` answers RNS's question (take this
resource?) there. The `_on_*` handlers then run on the trio thread,
which alone touches the link and peer tables: link life (inbound, established, closed,
identified) and frame dispatch (`_on_frame`: HELLO and JOIN to `_rns_join`, then, on a verified
link only, MSG, PING and PONG). Unverified inbound links are bounded here (`_rns_state`: a HELLO
deadline, a cap, no Resources). Announces are the exception, handled by
`transports.reticulum.transport`.
One layer of `ReticulumTransport` (see `_rns_state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import RNS
import trio

from transports.base import BroadcastReceived, MessageReceived
from transports.reticulum._inline import inline
from transports.reticulum._join import MAX_JOIN, _RnsAdmission
from transports.reticulum._state import (
    HELLO,
    JOIN,
    MAX_PAYLOAD,
    MAX_UNVERIFIED,
    MSG,
    PING,
    PONG,
    _Link,
    _usable,
)


class _RnsCallbacks(_RnsAdmission):
    """RNS threads hand over to trio here; frames and link events are handled here."""

    # ---- from RNS threads: hand over to trio, never raise -----------------------------------

    def _wire_link(self, link: Any) -> None:
        link.set_packet_callback(inline(self._rns_packet))
        link.set_link_closed_callback(self._rns_link_closed)
        link.set_remote_identified_callback(self._rns_identified)
        link.set_resource_strategy(RNS.Link.ACCEPT_APP)
        link.set_resource_callback(self._rns_resource_offered)
        link.set_resource_concluded_callback(self._rns_resource_concluded)

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
        # An advertisement, not yet the data: refusing here costs the sender one packet.
        if resource.link.link_id not in self._verified_links:
            # Before the HELLO verifies, only what admission needs may come as a Resource: a
            # JOIN (member record and invite claim) is larger than one link packet.
            if resource.get_data_size() > MAX_JOIN + 1:
                self._post(self._count, "resource_unverified")
                self._post(self._peer_lacks_our_hello, resource.link.link_id)
                return False
            return True
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

    # ---- on the trio thread -----------------------------------------------------------------

    def _on_inbound_link(self, link: Any) -> None:
        state = _Link(link, outbound=False)
        state.opened_at = state.last_activity = trio.current_time()
        state.established.set()
        self._links[link.link_id] = state
        waiting = [s for s in self._links.values() if _unverified_inbound(s)]
        if len(waiting) > MAX_UNVERIFIED:  # the oldest gives way (see `_rns_state`)
            self._drop(min(waiting, key=lambda s: s.opened_at), "unverified_evicted")

    def _drop(self, state: _Link, reason: str) -> None:
        """Close a link now, counted as `reason`; forgotten at once, not when RNS says so."""
        self._count(reason)
        state.link.teardown()
        self._on_closed(state.link.link_id)

    def _reap_unverified(self, now: float, deadline: Callable[[_Link], float]) -> None:
        """Close inbound links whose HELLO has not verified `deadline(link)` s after opening."""
        for state in list(self._links.values()):
            if _unverified_inbound(state) and now - state.opened_at > deadline(state):
                self._drop(state, "hello_timeout")

    def _on_established(self, link_id: bytes) -> None:
        state = self._links.get(link_id)
        if state is not None:
            state.established.set()

    def _peer_lacks_our_hello(self, link_id: bytes) -> None:
        """A frame or Resource came on a link we opened and have not verified: the peer sends
        as on a verified link, so it verified our HELLO and its HELLO to us was lost (a link
        packet is not retransmitted). Our HELLO again asks for its (see `_on_hello`)."""
        state = self._links.get(link_id)
        if state is not None and state.outbound and state.hello_sent:
            self._resend_hello(state)

    def _on_closed(self, link_id: bytes) -> None:
        state = self._links.pop(link_id, None)
        if state is None:
            return
        state.closed = True
        self._verified_links.discard(link_id)
        state.established.set()  # wake anyone waiting: they see it closed
        state.settled.set()
        if state.node_id is not None:
            peer = self._peers.get(state.node_id)
            if peer is not None and peer.link is state:
                # Another verified link to the peer (crossing links are both kept) carries on.
                others = [s for s in self._links.values() if s.node_id == peer.node_id]
                usable = [s for s in others if _usable(s)]
                peer.link = max(usable, key=lambda s: s.verified_at) if usable else None

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
        kind, body = frame[0], frame[1:]
        if kind in (HELLO, JOIN):
            state.last_activity = trio.current_time()
            self._on_hello(state, body, kind)
            return
        if not state.verified.is_set() or state.node_id is None:
            self._count("unverified_frame")  # and it does not keep the link open
            self._peer_lacks_our_hello(link_id)
            return
        state.last_activity = trio.current_time()
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


def _unverified_inbound(state: _Link) -> bool:
    return not state.outbound and not state.closed and not state.verified.is_set()
