"""`kai-mesh drain` (issue 11, item 5): a draining node's replicas move to other nodes, each
stopping only once its replacement is ready, so even a one-replica service keeps answering; and
nothing new is placed on it until the drain is lifted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.agents_for_tests import SickableEcho
from tests.runtime.orchestration.svcmesh import ask, placed, svc_mesh, until_ready

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


@pytest.fixture
def sickness() -> Iterator[None]:
    SickableEcho.sick = False
    yield
    SickableEcho.sick = False


async def test_drain_moves_replicas_before_stopping_them(
    autojump_clock: object, sickness: None
) -> None:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 5, seed=81)
        await nodes[0].orch.deploy(parse_manifest(SOLO, "solo.toml"))
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
