"""Rolling upgrades (issue 11, item 2): a higher version replaces the lower one on every node,
and the old copies keep serving until the new ones are ready, so no request fails meanwhile."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import trio

from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.agents_for_tests import SickableEcho
from tests.runtime.orchestration.svcmesh import SvcNode, ask, placed, svc_mesh, until_ready

V1 = b"""
name = "echo2"
version = "1"
agent = "echo"
replicas = 3
"""

# v2 is ready only once its health check passes, which it cannot while SickableEcho.sick.
V2 = b"""
name = "echo2"
version = "2"
agent = "tests.runtime.agents_for_tests:SickableEcho"
replicas = 3
health = { intent = "ping", interval = "5s" }
"""


@pytest.fixture
def sickness() -> Iterator[None]:
    SickableEcho.sick = False
    yield
    SickableEcho.sick = False


def _agents(nodes: list[SvcNode]) -> Counter[str]:
    return Counter(a["name"] for n in nodes for a in n.host.info() if a["name"].startswith("echo2"))


async def test_new_copies_serve_only_once_ready_and_then_the_old_stop(
    autojump_clock: object, sickness: None
) -> None:
    async with trio.open_nursery() as nursery:
        _, nodes = await svc_mesh(nursery, 5, seed=61)
        admin = nodes[0]
        await admin.orch.deploy(parse_manifest(V1, "v1.toml"))
        await until_ready(nodes, "echo2", 3)
        hosts = set(placed(nodes, "echo2"))
        sender = next(n for n in nodes if n.node_id not in hosts)
        served: Counter[str] = Counter()
        failed: list[object] = []
        stop = trio.Event()

        async def load() -> None:
            i = 0
            while not stop.is_set():
                reply = await ask(sender, "echo2", i)
                if reply.intent != "reply" or reply.payload != i:
                    failed.append(reply.payload)
                else:
                    served[reply.sender.agent] += 1  # type: ignore[union-attr]
                i += 1
                await trio.sleep(0.1)

        nursery.start_soon(load)
        await trio.sleep(2)
        SickableEcho.sick = True
        filed = await admin.orch.deploy(parse_manifest(V2, "v2.toml"))
        new_agent = f"echo2_{filed['id'][:8]}"
        # Every hosting node starts v2 beside v1; v2 is not ready, so v1 serves alone.
        with trio.fail_after(30):
            while _agents(nodes)[new_agent] < 3:  # noqa: ASYNC110
                await trio.sleep(0.1)
        await trio.sleep(4)
        assert _agents(nodes)["echo2"] == 3, "old copies stopped before the new were ready"
        assert set(served) == {"echo2"}
        SickableEcho.sick = False
        with trio.fail_after(60):
            while _agents(nodes) != Counter({new_agent: 3}):  # noqa: ASYNC110
                await trio.sleep(0.1)
        await trio.sleep(2)
        stop.set()
        await trio.sleep(1)
        assert not failed, failed
        assert served[new_agent] > 0 and served["echo2"] > 0
        assert set(placed(nodes, "echo2")) == hosts  # upgraded in place: nothing moved
        assert all(n.orch.describe(n.orch.services()["echo2"])["version"] == "2" for n in nodes)
        nursery.cancel_scope.cancel()
