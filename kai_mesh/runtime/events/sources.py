"""What the runtime already reports, turned into mesh events.

The node's hub (`EventHub`) carries every local report: liveness declaring a peer failed, the bus
shedding a message with `overloaded`. `RuntimeSources.tap` sees each one and publishes:

- `node.failed` {node, name, incarnation}: published by one node only, the live node with the
  highest rendezvous hash for the failed node's id (`ownership.owner`), so a mesh of twenty does
  not send twenty copies of one failure over the radio. Every detector reaches the same verdict
  and computes the same reporter; if the reporter is itself away, the next one reports.
- `agent.overloaded` {agent, node}: when this node's bus sheds a message for an agent; at most
  once per agent per `cooldown` seconds.
- `queue.backlog` {agent, node, depth}: `check_queues` (called on the node's tick) when an
  agent's inbox holds at least `backlog` messages; once per agent per `cooldown`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import trio

from kai_mesh.core.errors import KaiMeshError
from kai_mesh.core.mesh.address import parse_address
from kai_mesh.core.orchestration.ownership import owner
from kai_mesh.runtime.events.service import MeshEvents

COOLDOWN = 10.0
BACKLOG = 8


class RuntimeSources:
    def __init__(
        self,
        events: MeshEvents,
        *,
        live: Callable[[], list[bytes]],
        name: str | None = None,
        cooldown: float = COOLDOWN,
        backlog: int = BACKLOG,
    ) -> None:
        self._events = events
        self._live = live
        self._name = name
        self.cooldown = cooldown
        self.backlog = backlog
        self._last: dict[tuple[str, str], float] = {}

    def _cool(self, topic: str, key: str) -> bool:
        now = trio.current_time()
        last = self._last.get((topic, key))
        if last is not None and now < last + self.cooldown:
            return False
        self._last[(topic, key)] = now
        return True

    def _publish(self, topic: str, fields: dict[str, Any]) -> None:
        # A report too large for one event (an absurd name) is not worth a crash.
        with contextlib.suppress(KaiMeshError):
            self._events.publish(topic, fields)

    def tap(self, topic: str, data: Any) -> None:
        """An `EventHub` tap: every local report passes here."""
        if not isinstance(data, Mapping):
            return
        if topic == "peers" and data.get("event") == "peer_failed":
            self._node_failed(data)
        elif topic == "messages" and data.get("outcome") == "overloaded":
            try:
                to = parse_address(str(data.get("to")))
            except KaiMeshError:
                return
            agent = getattr(to, "agent", None) or str(to)
            if self._cool("agent.overloaded", agent):
                self._publish("agent.overloaded", {"agent": agent, "node": self._name or ""})

    def _node_failed(self, data: Mapping[str, Any]) -> None:
        try:
            failed = bytes.fromhex(str(data.get("node_id")))
        except ValueError:
            return
        me = self._events.node_id
        reporters = {me, *self._live()} - {failed}
        if owner("node.failed/" + failed.hex(), reporters) != me:
            return
        self._publish(
            "node.failed",
            {
                "node": failed.hex(),
                "name": data.get("name") or "",
                "incarnation": int(data.get("incarnation") or 0),
            },
        )

    def check_queues(self, depths: Mapping[str, int]) -> None:
        for agent, depth in depths.items():
            if depth >= self.backlog and self._cool("queue.backlog", agent):
                self._publish(
                    "queue.backlog", {"agent": agent, "node": self._name or "", "depth": depth}
                )
