"""Wiring the outbox, heartbeats and failure detection into a router, tuned to its links.

One function, used by the node daemon and by the tests that build routers by hand, so both run
the same arrangement. The slowest interface decides the pace: its airtime budget (duty cycle and
bitrate) sets the detector's period, the heartbeat interval and how far announces are stretched.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from kai_mesh.core.errors import TransportError
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.airtime import adaptive_interval
from kai_mesh.core.messaging.envelope import Priority
from kai_mesh.core.messaging.name_claims import claim_name
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.runtime.governance.service import GOV_DIGEST, GovernanceService
from kai_mesh.runtime.liveness.service import Liveness, detector_config, heartbeat_interval
from kai_mesh.runtime.messaging.outbox import Outbox
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import Store

GOVERNANCE_BROADCAST_WAIT = 10.0  # seconds a governance broadcast may wait for airtime
# A state push waits less: links are the fallback, and a burst of writes queues behind it.
STATE_BROADCAST_WAIT = 5.0
ANNOUNCE_BYTES = 200  # an RNS announce with kai-mesh's app_data, on the air (LAB.md: 199)

log = logging.getLogger(__name__)


def alive_peers(remote: RemoteRouter) -> list[bytes]:
    """The peers the detector holds alive (none before liveness is wired)."""
    liveness = remote.liveness
    if liveness is None:
        return []
    return [
        n
        for n in liveness.detector.peers()
        if liveness.detector.state_of(n).status.value == "alive"
    ]


def liveness_generation(remote: RemoteRouter) -> object:
    """Changes whenever `alive_peers(remote)` may have: the detector (once wired) and its count
    of peer and status changes. Compared with `!=` by caches of what the live set decides."""
    liveness = remote.liveness
    if liveness is None:
        return None
    return (id(liveness.detector), liveness.detector.generation)


def sync_peers(remote: RemoteRouter) -> list[bytes]:
    """The peers the replicated state and governance sync with: those the detector holds alive,
    and those of transports that carry the sync digests themselves (Nostr relays: no liveness
    watches them, their digests say when a round is due)."""
    peers = dict.fromkeys(alive_peers(remote))
    for transport in remote.transports:
        if transport.abilities.sync_digests:
            peers.update(dict.fromkeys(p.node_id for p in transport.peers()))
    peers.pop(remote.node_id, None)
    return list(peers)


def wire_delivery(
    remote: RemoteRouter,
    store: Store,
    *,
    secrets: NodeSecrets,
    mesh_id: bytes,
    keys: Mapping[bytes, bytes],
    emit: Callable[[str, dict[str, Any]], None],
    policy: RetryPolicy,
    liveness_share: float,
    announce_share: float,
    names: Callable[[bytes], str | None] = lambda node_id: None,
    name: str | None = None,
    rng: random.Random | None = None,
    state: StateService | None = None,
    governance: GovernanceService | None = None,
) -> Liveness:
    """Give `remote` an outbox on `store` and a liveness service (returned), and route the
    replicated state's and governance's frames and heartbeat digests (when `state`,
    `governance` are given). Call before `remote.run()`."""
    remote.store = store
    remote.members = keys
    # This node's own signed name, and the members' it learns, for sends by name to a member
    # not heard now (runtime/messaging/names.py).
    remote.attach_names(mesh_id, None if name is None else claim_name(secrets, name, mesh_id))
    if state is not None:
        state.register_frames(remote.frames)
    if governance is not None:
        governance.register_frames(remote.frames)
    outbox = Outbox(
        send=remote.send_frame,
        reset_link=remote.reset_link,
        emit=emit,
        policy=policy,
        store_and_forward=remote.store_and_forward,
        rng=rng,
    )
    outbox.attach(store)
    remote.outbox = outbox
    remote.services.append(outbox.run)
    live = [t for t in remote.transports if t.abilities.live_links]
    for transport in live:
        if transport.abilities.run_number:
            transport.set_run_number(store.runs)  # announces say when we restarted
    interfaces = [(t, i) for t in live for i in t.interfaces()]
    slowest = min(interfaces, key=lambda ti: ti[1].bitrate or 1 << 62, default=None)
    duty, bitrate = 1.0, None
    if slowest is not None:
        bitrate = slowest[1].bitrate
        budget = remote.egress.budget_for(*slowest)
        if budget is not None:
            duty = budget.duty_cycle
            # Every transport's announces (Reticulum's and LXMF's) share the same radio, and
            # the announce share between them.
            announcers = [t for t in remote.transports if t.abilities.announces]
            for transport in announcers:
                share = announce_share / len(announcers)
                base = transport.announce_interval
                stretched = adaptive_interval(base, ANNOUNCE_BYTES, budget, share)
                transport.announce_interval = stretched
    tuning = detector_config(duty, liveness_share)

    async def send_swim(node_id: bytes, frame: bytes) -> None:
        await remote.send_frame(node_id, frame, Priority.HIGH, background=True)

    beat = heartbeat_interval(tuning, bitrate)
    if state is not None:
        # On a slow radio a round costs airtime: no more than one per peer per heartbeat.
        state.min_round_gap = max(state.min_round_gap, beat)
        state.round_interval = max(state.round_interval, 4 * beat)
    if governance is not None:
        governance.min_round_gap = max(governance.min_round_gap, beat)
        _announce_governance(remote, governance)
        _broadcast_governance(remote, governance)
    if state is not None:
        _broadcast_state(remote, state)

    def digests() -> dict[int, bytes]:
        out = {} if state is None else state.digests()
        if governance is not None:
            out.update(governance.digests())
        return out

    def on_digests(node_id: bytes, heard: Mapping[int, bytes]) -> None:
        if state is not None:
            state.on_digests(node_id, heard)
        if governance is not None:
            governance.on_digests(node_id, heard)

    _digests_over_transports(remote, digests, on_digests, state, governance)
    liveness = Liveness(
        secrets=secrets,
        mesh_id=mesh_id,
        keys=keys,
        config=tuning,
        heartbeat_interval=beat,
        send=send_swim,
        # Heartbeats are paced to the liveness share by their interval: hold them to the whole
        # budget, not the background share, which Reticulum's own traffic (announces, link
        # set-ups, charged from the transmit counter) can spend alone; a node that stops
        # heartbeating because it was busy is probed over links by every peer, costing more.
        broadcasts=remote.broadcasts(background=False),
        emit=emit,
        run_number=store.runs,
        on_contact=outbox.heard_from,
        names=names,
        rng=rng,
        digests=digests,
        on_digests=on_digests,
    )
    liveness.register_frames(remote.frames)
    remote.peer_seen.append(liveness.watch)
    remote.services.append(liveness.run)
    remote.liveness = liveness
    return liveness


def _digests_over_transports(
    remote: RemoteRouter,
    digests: Callable[[], dict[int, bytes]],
    on_digests: Callable[[bytes, Mapping[int, bytes]], None],
    state: StateService | None,
    governance: GovernanceService | None,
) -> None:
    """Transports that carry the sync digests themselves (Nostr) get ours, hear theirs, and are
    told when ours changed: a state entry or a governance record kept, from anywhere."""
    for transport in remote.transports:
        if not transport.abilities.sync_digests:
            continue
        transport.set_sync_digests(digests, on_digests)
        if state is not None:
            state.watchers.append(transport.sync_changed)
        if governance is not None:
            governance.on_records.append(transport.sync_changed)


def _announce_governance(remote: RemoteRouter, governance: GovernanceService) -> None:
    """Transports whose announces carry 8 bytes (Reticulum's) carry governance's sync digest."""

    def ours() -> bytes:
        return governance.digests().get(GOV_DIGEST, b"")

    def theirs(node_id: bytes, digest: bytes) -> None:
        governance.on_digests(node_id, {GOV_DIGEST: digest})

    for transport in remote.transports:
        if transport.abilities.announce_digest:
            transport.set_announce_digest(ours, theirs)


def _broadcast_state(remote: RemoteRouter, state: StateService) -> None:
    """State pushes by broadcast where a transport can: one packet for every neighbour, where
    a push per peer would cost a shared channel once per peer. Background traffic, as its
    link frames are; one that finds no airtime within a few seconds falls back to links."""
    senders = remote.broadcasts(background=True, wait=STATE_BROADCAST_WAIT)
    if senders:
        state.broadcast = partial(_broadcast, senders, "state")
        state.hops = partial(_hops, remote)


def _broadcast_governance(remote: RemoteRouter, governance: GovernanceService) -> None:
    """Governance pushes by broadcast where a transport can (one packet for every neighbour)."""
    # Governance is rare and decides who may do what: not background, and worth a short wait.
    senders = remote.broadcasts(background=False, wait=GOVERNANCE_BROADCAST_WAIT)
    if senders:
        governance.broadcast = partial(_broadcast, senders, "governance")
        governance.hops = partial(_hops, remote)


async def _broadcast(
    senders: list[Callable[[bytes], Awaitable[None]]], what: str, frame: bytes
) -> bool:
    """`frame` by every broadcast sender; False (nothing raised) when one could not send it."""
    try:
        for send in senders:
            await send(frame)
    except TransportError as exc:
        log.debug("%s broadcast not sent: %s", what, exc)
        return False
    return True


def _hops(remote: RemoteRouter, node_id: bytes) -> int | None:
    known = [p.hops for p in remote.peers() if p.node_id == node_id and p.hops is not None]
    return min(known, default=None)
