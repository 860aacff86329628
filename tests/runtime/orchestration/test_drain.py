"""`kai-mesh drain` (issue 11, item 5): a draining node's replicas move to other nodes, each
stopping only once its replacement is ready, so even a one-replica service keeps answering; and
nothing new is placed on it until the drain is lifted."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import trio

from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.agents_for_tests import SickableEcho
from tests.runtime.orchestration.svcmesh import (
    SvcNode,
    ask,
    ask_message,
    placed,
    svc_mesh,
    until_ready,
)

# The replacement is ready only once its health check passes: held back below for a few
# seconds, so a drain that stopped the old copy first would leave the service with none.
SOLO = b"""
name = "solo"
version = "1"
agent = "tests.runtime.agents_for_tests:SickableEcho"
replicas = 1
health = { intent = "ping", interval = "5s" }
"""

WIDE = b"""
name = "wide"
version = "1"
agent = "echo"
replicas = 4
"""


def _moved_off(nodes: list[SvcNode], node: bytes) -> bool:
    where = placed(nodes, "solo")
    return node not in where and set(where.values()) == {"ready"}


@pytest.fixture
def sickness() -> Iterator[None]:
    SickableEcho.sick = False
    yield
    SickableEcho.sick = False


# Key draws under which a sender heard of the move after the drained node had stopped its copy
# (CI, 2026-12-05): its one retry went to the same stale candidate list and got
# `no_such_agent`. Two things now cover that moment, each tested alone here: the old copy keeps
# serving for its `shutdown_delay`, and the retry picks from the candidates as they are then.
RACY_DRAWS = (1, 7, 24)


@pytest.mark.parametrize("keys_seed", RACY_DRAWS)
@pytest.mark.parametrize("delay", ["0", None])
async def test_drain_moves_replicas_before_stopping_them(
    autojump_clock: object, sickness: None, keys_seed: int, delay: str | None
) -> None:
    manifest = SOLO if delay is None else SOLO + f"shutdown_delay = {delay}\n".encode()
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 5, seed=81, keys_seed=keys_seed)
        await nodes[0].orch.deploy(parse_manifest(manifest, "solo.toml"))
        await until_ready(nodes, "solo", 1)
        (first,) = placed(nodes, "solo")
        drained = next(n for n in nodes if n.node_id == first)
        sender = next(n for n in nodes if n is not drained)
        failed: list[object] = []
        stop = trio.Event()

        async def load() -> None:
            i = 0
            while not stop.is_set():
                reply = await ask(sender, "solo", i)
                if reply.intent != "reply":
                    failed.append(reply.payload)
                i += 1
                await trio.sleep(0.05)

        nursery.start_soon(load)
        await trio.sleep(1)
        SickableEcho.sick = True  # the old copy's next check is 5 s away: it stays ready
        assert drained.orch.drain()["draining"] is True
        await trio.sleep(4)
        assert "solo" in drained.hosting()  # the replacement is not ready: the old one serves
        SickableEcho.sick = False
        with trio.fail_after(60):
            while True:
                try:
                    where = placed(nodes, "solo")
                except AssertionError:
                    where = {}
                if first not in where and set(where.values()) == {"ready"}:
                    break
                await trio.sleep(0.1)
        with trio.fail_after(30):
            while "solo" in drained.hosting():  # noqa: ASYNC110
                await trio.sleep(0.1)
        await trio.sleep(1)
        stop.set()
        await trio.sleep(0.5)
        assert not failed, failed  # never a moment without a ready replica

        # While draining, nothing new lands on it, even with room nowhere else to spread.
        await nodes[0].orch.deploy(parse_manifest(WIDE, "wide.toml"))
        await until_ready(nodes, "wide", 4)
        assert first not in placed(nodes, "wide")
        drained.orch.drain(False)
        await nodes[0].orch.command("scale", "wide", 5)
        await until_ready(nodes, "wide", 5)
        assert first in placed(nodes, "wide")  # undrained: it takes replicas again
        nursery.cancel_scope.cancel()


async def test_a_moved_copy_serves_for_its_shutdown_delay_then_stops(
    autojump_clock: object, sickness: None
) -> None:
    """Nomad's `shutdown_delay`: once its replacement is ready the old copy leaves the record
    (senders stop picking it) but still answers for the delay, then stops."""
    manifest = SOLO + b'shutdown_delay = "20s"\n'
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 5, seed=82, keys_seed=82)
        await nodes[0].orch.deploy(parse_manifest(manifest, "solo.toml"))
        await until_ready(nodes, "solo", 1)
        (first,) = placed(nodes, "solo")
        drained = next(n for n in nodes if n.node_id == first)
        sender = next(n for n in nodes if n is not drained)
        drained.orch.drain()
        with trio.fail_after(60):
            while not _moved_off(nodes, first):  # noqa: ASYNC110
                await trio.sleep(0.1)
        moved_at = trio.current_time()
        await trio.sleep(10)  # within the delay: deregistered, still answering
        assert first not in placed(nodes, "solo")
        assert "solo" in drained.hosting()
        direct = dataclasses.replace(
            ask_message(sender, "solo", "late"), to=AgentAddress(NodeRef(node_id=first), "solo")
        )
        reply = await sender.bus.request(direct, 10.0)
        assert reply.intent == "reply" and reply.payload == "late", reply.payload
        with trio.fail_after(30):
            while "solo" in drained.hosting():  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert trio.current_time() - moved_at >= 20 - 1  # not before the delay (one tick late)
        nursery.cancel_scope.cancel()
