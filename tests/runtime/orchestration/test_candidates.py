"""The sender's candidate cache (`Orchestrator.candidates`, built once per change, not per
message) never routes on stale news: once the sender knows a replica is unready, or its node
failed, the very next requests go elsewhere. Both tests send at the instant the sender learns
it, before its next step (which would rebuild the cache anyway), so a cache that missed the
change would pick the replica (round robin over three, three requests at once) and the failed
attempt would show as a retry. While they wait for the news the tests ask for the candidates
every 10 ms, as traffic would, so the cache is rebuilt after every earlier change and only the
change itself can invalidate it."""

from __future__ import annotations

import trio

from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.orchestration.svcmesh import ECHO, SvcNode, ask, svc_mesh, until_ready


async def _setup(nursery: trio.Nursery, seed: int) -> tuple[SvcNode, SvcNode]:
    _, nodes = await svc_mesh(nursery, 5, seed=seed)
    await nodes[0].orch.deploy(parse_manifest(ECHO, "echo2.toml"))
    await until_ready(nodes, "echo2", 3)
    sender = next(n for n in nodes if "echo2" not in n.hosting())
    victim = next(n for n in nodes if "echo2" in n.hosting() and n is not nodes[0])
    served = {(await ask(sender, "echo2", i)).sender.node.node_id for i in range(6)}  # type: ignore[union-attr]
    assert victim.node_id in served  # the cache is warm and holds the victim
    return sender, victim


async def _next_requests_avoid(sender: SvcNode, victim: SvcNode) -> None:
    """Three requests at this instant (round robin over a stale cache's three replicas would give
    the victim one), then three more."""
    retries = sender.orch.counters["svc_retries"]
    replies = []

    async def one(i: int) -> None:
        replies.append(await ask(sender, "echo2", i))

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(one, i)
    for i in range(3):
        await one(3 + i)
    for reply in replies:
        assert reply.intent == "reply", reply.payload
        assert reply.sender.node.node_id != victim.node_id  # type: ignore[union-attr]
    assert sender.orch.counters["svc_retries"] == retries  # not even tried first


async def test_an_unready_replica_gets_no_traffic_from_the_next_request(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        sender, victim = await _setup(nursery, seed=61)
        victim.host.suspend("test: this replica stops")  # its node says so in its record
        with trio.fail_after(30):
            while sender.orch.services()["echo2"].status[victim.node_id]["state"] == "ready":
                sender.orch.candidates("echo2")
                await trio.sleep(0.01)
        await _next_requests_avoid(sender, victim)
        nursery.cancel_scope.cancel()


async def test_a_failed_node_gets_no_traffic_from_the_next_request(
    autojump_clock: object,
) -> None:
    async with trio.open_nursery() as nursery:
        sender, victim = await _setup(nursery, seed=62)
        victim.scope.cancel()  # gone without a word: only the failure detector can tell
        with trio.fail_after(60):
            while victim.node_id in sender.orch.live():
                sender.orch.candidates("echo2")
                await trio.sleep(0.01)
        # Only the detector has spoken: the placement still holds the victim's replica.
        view = sender.orch.services()["echo2"]
        assert any(s.node == victim.node_id for w in view.placements for s in w.slots)
        await _next_requests_avoid(sender, victim)
        nursery.cancel_scope.cancel()
