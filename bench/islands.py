"""Islands through a Nostr relay: bytes per synced update and per vote, convergence, catch-up.

Run from the repository root (needs the dev extra, for nostr-sdk's LocalRelay)::

    nice .venv/bin/python bench/islands.py            # one figure a line
    nice .venv/bin/python bench/islands.py --json
    nice .venv/bin/python bench/islands.py --away 600 # the gateway away ten minutes

Nodes are in this process: islands on the memory transport (5 ms links, as a LAN), gateways on
one LocalRelay on loopback (tests/runtime/test_islands.py builds them), real time.

- bytes: two nodes with nothing but the relay between them. After they are quiet, `--writes`
  state writes on one (each a separate update), then `--votes` proposals on a 2-of-2 mesh voted
  by the other. Bytes are every websocket text message both nodes sent the relay and it sent
  them (event JSON, REQ/OK/EOSE included), per update and per vote, once both sides agree again.
  Beside them, the same sync's frame bytes plus 83 bytes of Reticulum link header and
  encryption per frame: what those frames would cost on a Reticulum link (estimated from the
  frames, not measured on RNS).
- converge: two islands of `--size` nodes; after both are quiet, one write on a non-gateway
  node of each island; seconds until all nodes hold the same state digest.
- catch-up: island B's gateway loses the relay (a TCP forwarder in front of it is cut); island A
  writes `--writes` entries; after `--away` seconds the relay is reachable again; seconds from
  then until every node agrees. This includes the pool's reconnect wait (rust-nostr's policy:
  10 s x (1 + failed attempts // 2), capped at 60 s, +-3 s), which dominates it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kai_mesh.core.mesh.identity import NodeSecrets
from tests.runtime.test_islands import IslandNode, _genesis, start_node
from tests.transports.nostr.conftest import start_relay, stop_relay
from transports.memory import LinkProfile, MemoryNetwork

LINK_OVERHEAD = 83  # egress.LINK_OVERHEAD: an RNS link packet's header and encryption
QUIET = 3.0  # seconds without traffic before a measurement starts


async def until(condition: Any, within: float = 120.0) -> float:
    start = trio.current_time()
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling what several services hold
            await trio.sleep(0.01)
    return trio.current_time() - start


def relay_bytes(nodes: list[IslandNode]) -> int:
    total = 0
    for n in nodes:
        if n.nostr is not None:
            for r in n.nostr.pool.relays:
                total += r.stats.bytes_sent + r.stats.bytes_received
    return total


def frame_bytes(nodes: list[IslandNode]) -> tuple[int, int]:
    """(frames, bytes) the state and governance services sent, all nodes."""
    frames = sum(n.state.counters["frames_sent"] + n.gov.counters["frames_sent"] for n in nodes)
    sent = sum(n.state.counters["bytes_sent"] for n in nodes)
    return frames, sent


def same_state(nodes: list[IslandNode]) -> bool:
    return len({n.state.replica.digest() for n in nodes if n.state.replica}) == 1


def same_gov(nodes: list[IslandNode]) -> bool:
    return len({n.gov.gov.sync_digest() for n in nodes if n.gov.gov}) == 1


async def quiet(nodes: list[IslandNode]) -> None:
    """Until no relay traffic for QUIET seconds (digest keepalives are 30 s apart)."""
    last = relay_bytes(nodes)
    still = trio.current_time()
    while trio.current_time() - still < QUIET:
        await trio.sleep(0.1)
        now = relay_bytes(nodes)
        if now != last:
            last, still = now, trio.current_time()


async def bytes_per_update(url: str, writes: int, votes: int) -> dict[str, Any]:
    a, b = NodeSecrets.generate(os.urandom), NodeSecrets.generate(os.urandom)
    genesis = _genesis([a, b], [a, b])
    net = MemoryNetwork(seed=1)
    async with trio.open_nursery() as nursery:
        na = await start_node(nursery, net, a, genesis, 1, [url])
        nb = await start_node(nursery, net, b, genesis, 2, [url])
        nodes = [na, nb]
        await until(lambda: all(n.nostr and n.nostr.peers() for n in nodes))
        await quiet(nodes)
        before, (f0, b0) = relay_bytes(nodes), frame_bytes(nodes)
        for i in range(writes):
            await na.state.write(("shared", f"k{i}"), {"n": i, "text": "a short value"})
            await until(lambda: same_state(nodes))
        await quiet(nodes)
        state_bytes, (f1, b1) = relay_bytes(nodes) - before, frame_bytes(nodes)
        gov_before = relay_bytes(nodes)
        for i in range(votes):
            pid = await na.gov.propose("policy_update", {f"k{i}": i})
            await until(lambda pid=pid: pid in {p.id for p in _gov(nb).proposals()})
            await nb.gov.vote(pid)
            await until(lambda: same_gov(nodes))
        await quiet(nodes)
        gov_bytes = relay_bytes(nodes) - gov_before
        nursery.cancel_scope.cancel()
    frames, sent = f1 - f0, b1 - b0
    return {
        "nostr_bytes_per_state_update": round(state_bytes / writes),
        "reticulum_estimate_bytes_per_state_update": round(
            (sent + frames * LINK_OVERHEAD) / writes
        ),
        "nostr_bytes_per_vote": round(gov_bytes / (2 * votes)),  # a proposal carries one vote
    }


def _gov(node: IslandNode) -> Any:
    assert node.gov.gov is not None
    return node.gov.gov


class Cable:
    """A TCP forwarder in front of the relay that can be cut and mended: the gateway behind it is
    away from the relay while cut (its connections drop, new ones are closed at once)."""

    def __init__(self, relay_port: int) -> None:
        self.relay_port = relay_port
        self.cut = False
        self._scopes: set[trio.CancelScope] = set()

    async def serve(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._one, listeners)

    async def _one(self, client: trio.SocketStream) -> None:
        if self.cut:
            await client.aclose()
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.relay_port)
                async with client, upstream, trio.open_nursery() as pumps:
                    pumps.start_soon(_pump, client, upstream, pumps.cancel_scope)
                    pumps.start_soon(_pump, upstream, client, pumps.cancel_scope)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self._scopes.discard(scope)

    def sever(self) -> None:
        self.cut = True
        for scope in list(self._scopes):
            scope.cancel()


async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        while data := await src.receive_some(65536):
            await dst.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


async def islands(url: str, size: int, writes: int, away: float) -> dict[str, Any]:
    secrets = [NodeSecrets.generate(os.urandom) for _ in range(2 * size)]
    genesis = _genesis(secrets[:1], secrets)
    net = MemoryNetwork(seed=2)
    island_a, island_b = secrets[:size], secrets[size:]
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        cable = Cable(int(url.rsplit(":", 1)[1]))
        port = await nursery.start(cable.serve)
        relays = {island_a[0].node_id: [url], island_b[0].node_id: [f"ws://127.0.0.1:{port}"]}
        nodes = [
            await start_node(nursery, net, s, genesis, i, relays.get(s.node_id, []))
            for i, s in enumerate(secrets)
        ]
        for island in (island_a, island_b):
            net.full([s.node_id for s in island], LinkProfile(latency=0.005))
        await until(lambda: all(n.state.replica for n in nodes))
        await until(lambda: all(n.nostr is None or n.nostr.peers() for n in nodes))
        await quiet(nodes)
        await nodes[1].state.write(("shared", "a"), 1)
        await nodes[size + 1].state.write(("shared", "b"), 2)
        out["converge_s"] = round(await until(lambda: same_state(nodes)), 3)

        # Island B's gateway loses the relay; island A writes meanwhile.
        cable.sever()
        for i in range(writes):
            await nodes[1].state.write(("shared", f"while_away_{i}"), i)
        await trio.sleep(away)
        cable.cut = False
        out["catch_up_s"] = round(await until(lambda: same_state(nodes), within=away + 300), 3)
        relay = nodes[size].nostr.pool.relays[0]  # type: ignore[union-attr]
        out["reconnect_attempts"] = relay.stats.attempts
        nursery.cancel_scope.cancel()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    proc, url = start_relay(*(["--port", str(args.relay_port)] if args.relay_port else []))
    try:
        result = {"writes": args.writes, "votes": args.votes, "island_size": args.size}
        result.update(await bytes_per_update(url, args.writes, args.votes))
        if args.bytes_only:
            return result
        runs = [await islands(url, args.size, args.writes, args.away) for _ in range(args.runs)]
        result["converge_s"] = statistics.median(r["converge_s"] for r in runs)
        result["away_s"] = args.away
        result["catch_up_s"] = statistics.median(r["catch_up_s"] for r in runs)
    finally:
        stop_relay(proc)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--votes", type=int, default=5)
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--away", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--relay-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--bytes-only", action="store_true", help="skip converge and catch-up")
    args = parser.parse_args()
    out = trio.run(main, args)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key}: {value}")
