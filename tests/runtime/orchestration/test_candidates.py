"""The sender's candidate cache (`Orchestrator.candidates`, built once per change, not per
message) never routes on stale news: once the sender knows a replica is unready, its node failed,
or its node's telemetry fell silent past the TTL, the very next requests go elsewhere. The tests
send at the instant the sender learns it, before its next step (which would rebuild the cache
anyway), so a cache that missed the change would pick the replica (round robin over three,
three requests at once) and the failed attempt would show as a retry, or the victim answer.
While they wait for the news the tests ask for the candidates every 10 ms, as traffic would, so
the cache is rebuilt after every earlier change and only the change itself can invalidate it.
Each test fails with its invalidation cut (the views' generation, the detector's generation,
the TTL deadline)."""

from __future__ import annotations

import trio

from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.orchestration.svcmesh import ECHO, SvcNode, ask, svc_mesh, until_ready


async def _setup(
    nursery: trio.Nursery, seed: int, manifest: bytes = ECHO
) -> tuple[list[SvcNode], SvcNode, SvcNode]:
    _, nodes = await svc_mesh(nursery, 5, seed=seed)
    await nodes[0].orch.deploy(parse_manifest(manifest, "echo2.toml"))
    await until_ready(nodes, "echo2", 3)
    sender = next(n for n in nodes if "echo2" not in n.hosting())
    victim = next(n for n in nodes if "echo2" in n.hosting() and n is not nodes[0])
    served = {(await ask(sender, "echo2", i)).sender.node.node_id for i in range(6)}  # type: ignore[union-attr]
    assert victim.node_id in served  # the cache is warm and holds the victim
    return nodes, sender, victim


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
        _, sender, victim = await _setup(nursery, seed=61)
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
        _, sender, victim = await _setup(nursery, seed=62)
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


async def test_a_replica_silent_past_its_ttl_gets_no_traffic_from_the_next_request(
    autojump_clock: object,
) -> None:
    # No state change and no liveness change marks this one: only the TTL passing does.
    manifest = ECHO + b'health = { ttl = "20s" }\n'
    async with trio.open_nursery() as nursery:
        nodes, sender, victim = await _setup(nursery, seed=63, manifest=manifest)
        others = [n for n in nodes if n is not sender and n is not victim]
        victim.telemetry.send = None  # its node still answers probes, but reports nothing
        # The others fall silent 5 s later, so no sample lands at the instant the victim's TTL
        # passes (in virtual time samples are tick-aligned) and rebuilds the cache by chance.
        await trio.sleep(5)
        for n in others:
            n.telemetry.send = None
        with trio.fail_after(60):
            while not sender.telemetry.past_ttl(victim.node_id, 20.0):
                sender.orch.candidates("echo2")
                await trio.sleep(0.01)
        assert victim.node_id in sender.orch.live()
        await _next_requests_avoid(sender, victim)
        nursery.cancel_scope.cancel()
