"""The transport seam: abilities are declared data, and the runtime goes by them alone."""

from __future__ import annotations

import dataclasses

import pytest

from kai_mesh.core.errors import TransportError
from kai_mesh.runtime.messaging.egress import Egress
from kai_mesh.runtime.messaging.lost_replies import asks_over
from kai_mesh.runtime.messaging.remote import RemoteRouter
from transports.base import Abilities, TransportBase
from transports.memory import MemoryNetwork, MemoryTransport


async def test_an_undeclared_action_raises_and_an_unused_hook_is_ignored() -> None:
    base = TransportBase()
    base.name = "plain"
    with pytest.raises(TransportError, match="plain cannot broadcast"):
        await base.broadcast(b"x")
    with pytest.raises(TransportError, match="cannot store and forward"):
        await base.store_and_forward(b"n" * 16, b"x")
    with pytest.raises(TransportError, match="cannot reset a link"):
        base.reset_link(b"n" * 16)
    with pytest.raises(TransportError, match="cannot say what one packet carries"):
        base.packet_room(b"n" * 16)
    assert base.resolve_name("pi1") is None
    base.forget(b"n" * 16)
    base.set_run_number(3)
    base.set_guest_intents(["echo"])
    assert base.describe() == {}
    assert base.abilities == Abilities()  # nothing is promised by default


class Silent(MemoryTransport):
    """A memory transport that can broadcast but does not declare it."""

    abilities = Abilities(live_links=True)


async def test_egress_goes_by_the_declaration_not_by_the_method() -> None:
    net = MemoryNetwork(seed=1)
    quiet = Silent(net, b"q" * 16, "q", frozenset(), 16)
    egress = Egress([quiet], lambda interface: None)
    with pytest.raises(TransportError, match="cannot broadcast"):
        await egress.broadcast(quiet, b"\x13beat")


def test_a_late_reply_is_asked_for_unless_the_transport_has_its_own_receipts() -> None:
    net = MemoryNetwork(seed=1)
    live = net.transport(b"l" * 16, "l")
    assert asks_over(live)
    receipts = Silent(net, b"r" * 16, "r", frozenset(), 16)
    receipts.abilities = dataclasses.replace(receipts.abilities, own_receipts=True)
    assert not asks_over(receipts)


def test_store_and_forward_and_guests_are_used_only_where_declared() -> None:
    """The router takes its store-and-forward fallback from, and binds the local bus to, only
    a transport that declares the ability, whatever methods the others have."""
    bound: list[object] = []

    class Carrier(TransportBase):
        name = "carrier"

        async def store_and_forward(self, node_id: bytes, data: bytes) -> bool:
            return True

        def bind_local(self, local: object) -> None:
            bound.append(local)

    class Declared(Carrier):
        abilities = Abilities(store_and_forward=True, own_receipts=True, guests=True)

    def router(*transports: TransportBase) -> RemoteRouter:
        return RemoteRouter(
            node_id=b"n" * 16,
            transports=transports,  # type: ignore[arg-type]
            decoder=None,  # type: ignore[arg-type]
            local=_local,
            error_reply=None,  # type: ignore[arg-type]
        )

    assert router(Carrier()).store_and_forward is None and bound == []
    declared = Declared()
    chosen = router(Carrier(), declared).store_and_forward
    assert chosen is not None and chosen.__self__ is declared  # type: ignore[attr-defined]
    assert bound == [_local]


async def _local(message: object, within: float | None) -> object:
    raise AssertionError


def test_every_transport_declares_what_it_overrides() -> None:
    """A transport that overrides an action's method declares the ability, so the runtime,
    which reads only the declaration, uses it."""
    from transports.lxmf import LxmfTransport
    from transports.nostr import NostrTransport
    from transports.reticulum.transport import ReticulumTransport

    actions = {
        "broadcast": "broadcast",
        "reset_link": "link_reset",
        "store_and_forward": "store_and_forward",
        "confirm_name": "names",
        "set_sync_digests": "sync_digests",
        "sync_changed": "sync_digests",
        "packet_room": "packets",
    }
    for cls in (MemoryTransport, ReticulumTransport, LxmfTransport, NostrTransport):
        for method, ability in actions.items():
            overridden = getattr(cls, method) is not getattr(TransportBase, method)
            assert overridden == getattr(cls.abilities, ability), (cls.__name__, method)
