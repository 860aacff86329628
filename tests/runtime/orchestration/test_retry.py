"""`kai://svc/NAME` retries once on another replica when the one it picked fails (issue 11,
item 7): its node died and has not been declared failed yet (the request times out), or its agent
refuses with a code that says the replica, not the request, is at fault (`shutdown`). The retry
keeps the message's id, so the reply still answers the caller's message."""

from __future__ import annotations

import dataclasses

import trio

from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.core.orchestration.manifest import parse_manifest
from tests.runtime.orchestration.svcmesh import (
    ECHO,
    SvcNode,
    ask_message,
    svc_mesh,
    until_ready,
)


async def _three_at_once(
    sender: SvcNode, tag: str
) -> list[tuple[StandardMessage, StandardMessage]]:
    """Three requests started at one instant: round robin over three ready replicas gives each
    one exactly one, before any news of a failure can reach the sender."""
    out: list[tuple[StandardMessage, StandardMessage]] = []

    async def one(i: int) -> None:
        message = ask_message(sender, "echo2", f"{tag}{i}")
        out.append((message, await sender.bus.request(message, 10.0)))

    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(one, i)
    return out


async def _setup(nursery: trio.Nursery, seed: int) -> tuple[SvcNode, SvcNode]:
    _, nodes = await svc_mesh(nursery, 5, seed=seed)
    await nodes[0].orch.deploy(parse_manifest(ECHO, "echo2.toml"))
    await until_ready(nodes, "echo2", 3)
    sender = next(n for n in nodes if "echo2" not in n.hosting())
    victim = next(n for n in nodes if "echo2" in n.hosting() and n is not nodes[0])
    return sender, victim


def _check(
    sender: SvcNode, victim: SvcNode, got: list[tuple[StandardMessage, StandardMessage]]
) -> None:
    for message, reply in got:
        assert reply.intent == "reply", reply.payload
        assert reply.payload == message.payload
        assert reply.reply_to == message.message_id  # the retry kept the id
        assert reply.sender.node.node_id != victim.node_id  # type: ignore[union-attr]
    assert sender.orch.counters["svc_retries"] == 1
    assert sender.orch.balancer.in_flight == {}  # every begin had its end


async def test_a_dead_replica_is_retried_on_another(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        sender, victim = await _setup(nursery, seed=31)
        victim.scope.cancel()  # gone without a word: the detectors have not noticed yet
        await trio.lowlevel.checkpoint()
        started = trio.current_time()
        got = await _three_at_once(sender, "dead")
        _check(sender, victim, got)
        # The attempt on the dead node waited its share of the time (half), not the whole.
        assert trio.current_time() - started < 10.0
        nursery.cancel_scope.cancel()


async def test_a_refusing_replica_is_retried_on_another(autojump_clock: object) -> None:
    async with trio.open_nursery() as nursery:
        sender, victim = await _setup(nursery, seed=32)
        victim.host.suspend("test: this replica refuses")  # calls fail with code `shutdown`
        got = await _three_at_once(sender, "refused")
        _check(sender, victim, got)
        nursery.cancel_scope.cancel()


async def test_no_retry_when_the_agent_itself_refuses(autojump_clock: object) -> None:
    """An agent's own answer (here: an intent it does not serve) would be the same on every
    replica: it is returned at once, not retried."""
    async with trio.open_nursery() as nursery:
        sender, _ = await _setup(nursery, seed=33)
        message = dataclasses.replace(ask_message(sender, "echo2", "x"), intent="nope")
        reply = await sender.bus.request(message, 10.0)
        assert reply.intent == "error" and reply.payload["code"] == "unknown_intent"
        assert sender.orch.counters["svc_retries"] == 0
        nursery.cancel_scope.cancel()
