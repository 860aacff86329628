"""Opening a verified Reticulum link to a peer, on demand, and sending a Resource over it.

`_link_to` returns the peer's verified link, or opens one: one task opens while the others wait
on `connecting`, and it tries `LINK_TRIES` times. Each try finds a path if RNS has none
(`_find_path`), opens an RNS link and waits for it to establish (`_establish_limit`), then
identifies, sends our HELLO and waits for the peer's to verify (`_rns_join`). RNS reports
neither a lost link request nor a lost path request, so how long to wait before asking again is
decided in `_rns_retry`, as pure functions of what RNS knows of the path; this module only reads
RNS and waits. Whatever the try, a verified link the peer opened to us meanwhile is taken
instead (`_wait_link`).
One layer of `ReticulumTransport` (see `_rns_state`).
"""

from __future__ import annotations

from typing import Any

import RNS
import trio

from kai_mesh.core.errors import TransportError
from transports.reticulum._callbacks import _RnsCallbacks
from transports.reticulum._retry import (
    LINK_TRIES,
    LINK_WAIT,
    PATH_WAIT,
    establish_wait,
    path_request_interval,
)
from transports.reticulum._state import APP_NAME, ASPECT, _Link, _Peer, _usable


class _RnsLinks(_RnsCallbacks):
    """Links opened on demand, with their path and link-request retries."""

    async def _link_to(self, node_id: bytes) -> _Link:
        peer = self._peers.get(node_id)
        if peer is None:
            raise TransportError(f"no announce heard from node {node_id.hex()}: no route to it")
        for attempt in range(LINK_TRIES):
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
        rns_estimate = float(getattr(link, "establishment_timeout", LINK_WAIT))
        interface = RNS.Transport.next_hop_interface(destination_hash)
        bitrate = getattr(interface, "bitrate", None)
        hops = RNS.Transport.hops_to(destination_hash)
        return establish_wait(rns_estimate, bitrate, hops, attempt)

    async def _find_path(self, destination_hash: bytes) -> None:
        """Ask for a path and wait up to PATH_WAIT s for it, asking again as `_rns_retry` says."""
        again = path_request_interval(
            getattr(interface, "bitrate", None) for interface in list(RNS.Transport.interfaces)
        )
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
        # A link request can be lost without a word: wait as `_rns_retry` says before asking
        # again; take the peer's own link to us if it verifies meanwhile.
        limit = self._establish_limit(link, destination_hash, attempt)
        if not await self._wait_link(peer, state.established, limit) or state.closed:
            link.teardown()
            return
        link.identify(self._identity)
        self._send_hello(state)
        # Established: the peer knows this link now. If the peer's own link to us verifies
        # meanwhile, use that one and leave ours to finish its handshake (`_rns_join` adopts it
        # or not): closing it is what left both ends sending on links the other had closed
        # (`_rns_retry`, crossing links).
        if not await self._wait_link(peer, state.settled, LINK_WAIT):
            if not _usable(peer.link):
                link.teardown()
            return
        if not state.verified.is_set() or state.closed or state.node_id != peer.node_id:
            link.teardown()

    async def _wait_link(self, peer: _Peer, event: trio.Event, limit: float) -> bool:
        """Wait up to `limit` s for `event`; True if it is set. False as soon as the peer has a
        verified link of its own making (then the caller drops its link request: a link not yet
        established closes without a frame)."""
        deadline = trio.current_time() + limit
        while not event.is_set():
            if _usable(peer.link) or trio.current_time() >= deadline:
                return False
            with trio.move_on_after(0.05):
                await event.wait()
        return True

    def _send_resource(
        self, state: _Link, frame: bytes, concluded: trio.Event, outcome: list[bool]
    ) -> None:
        def done(resource: Any) -> None:  # on an RNS thread
            self._post(_conclude, resource.status)

        def _conclude(status: int) -> None:
            outcome.append(status == RNS.Resource.COMPLETE)
            if status == RNS.Resource.REJECTED and not state.closed:
                # Refused at once by a peer that takes Resources on every link it verified:
                # it has not verified this one (our HELLO to it was lost, see `_resend_hello`).
                # Leave the link, so the retry goes on another one or a new one.
                self._drop(state, "resource_rejected")
            concluded.set()

        state.last_activity = trio.current_time()
        try:
            RNS.Resource(frame, state.link, callback=done)
        except Exception as exc:
            raise TransportError(f"Reticulum refused to send: {exc}") from exc
