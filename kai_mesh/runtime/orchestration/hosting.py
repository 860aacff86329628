"""The replicas this node hosts, started and stopped as the placement in force says, with rolling
upgrades (issue 11, item 2: "a higher version replaces the lower one everywhere; rolling: new
replicas ready before old ones stop").

Each service placed here runs as one agent of the agent host (the replicas of one service
placed on one node share it). The first copy is named after the service; when the manifest in
force changes (a higher version was deployed) the node starts the new copy beside the old one,
under a name that carries the new manifest's id (`NAME_0123abcd`), and keeps the old one serving
until the new one is ready (its agent up and, with an active check, its health check passed):
only then is the old one stopped. Every node does this at once, so the service never lacks ready
replicas during an upgrade (Kubernetes' RollingUpdate with maxUnavailable 0; the surge is one
copy per node). A newer upgrade arriving before the previous one finished replaces the unready
copy and the old one keeps serving.

A copy that stops because the placement moved it elsewhere, the service was removed, or a
rolling upgrade replaced it is first dropped from the node's record (deregistered) and then
keeps running for the manifest's `shutdown_delay` (Nomad's: the delay between deregistration
and the shutdown signal): senders that routed to it before they heard of the change, and
requests in flight, are still answered. Coming back within the delay, it is simply kept.

The node's `replicas/NODE` record says which agent serves (`agent`) and, during an upgrade, the
old copy still serving (`previous`: its agent and manifest); senders forward to the copy that is
ready (`serving_agent`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kai_mesh.core.orchestration.manifest import Manifest
from kai_mesh.runtime.agents.host import AgentHost, AgentSpec
from kai_mesh.runtime.orchestration.health import HealthProber
from kai_mesh.runtime.orchestration.views import ServiceView

log = logging.getLogger(__name__)

CONFLICT = "a configured agent of this node has the name"


@dataclass(frozen=True, slots=True)
class Copy:
    agent: str
    manifest: str
    shutdown_delay: float = 0.0


class Hosting:
    """See the module docstring. `apply` then `record` once per orchestrator step."""

    def __init__(self, host: AgentHost, health: HealthProber) -> None:
        self._host = host
        self._health = health
        self.current: dict[str, Copy] = {}  # service -> the copy running the manifest in force
        self.previous: dict[str, Copy] = {}  # service -> the old copy serving until then
        self.lingering: dict[str, tuple[Copy, float]] = {}  # agent -> (its copy, stop at)
        self._info: dict[str, dict[str, Any]] = {}
        self._replicas: dict[str, list[int]] = {}
        self.counters = {"upgrades": 0}

    def apply(self, wanted: Mapping[str, tuple[ServiceView, list[int]]], now: float) -> None:
        """Start, upgrade and stop agents so this node runs what `wanted` (service -> its view
        and the replica numbers placed here) asks."""
        self._replicas = {service: numbers for service, (_, numbers) in wanted.items()}
        for agent, (_, stop_at) in list(self.lingering.items()):
            if now >= stop_at:
                del self.lingering[agent]
                self._host.remove(agent)
        for service in list(self.current):
            if service not in wanted:
                self._linger(self.current.pop(service), now)
                if service in self.previous:
                    self._linger(self.previous.pop(service), now)
        for service, (view, _) in wanted.items():
            copy = self.current.get(service)
            if copy is not None and copy.manifest == view.manifest_id:
                continue
            agent = service if copy is None else upgrade_name(service, view.manifest_id)
            if agent in self.lingering:
                old, _ = self.lingering.pop(agent)
                if old.manifest == view.manifest_id and copy is None:
                    self.current[service] = old  # back within its shutdown delay: kept
                    continue
                self._host.remove(agent)
            if agent in self._host.names():
                continue  # a configured agent (or a leftover) has the name: shown as failed
            if copy is not None:
                if service in self.previous:  # upgraded again before the last one was ready
                    self._host.remove(copy.agent)  # never ready: nothing routed to it
                else:
                    self.previous[service] = copy
                self.counters["upgrades"] += 1
                log.info("service %s: starting %s beside %s", service, agent, copy.agent)
            self._host.add(_agent_spec(agent, view.spec))
            self.current[service] = Copy(agent, view.manifest_id, view.spec.shutdown_delay)
        self._info = {a["name"]: a for a in self._host.info()}
        self._health.sync(
            {
                service: (copy.agent, copy.manifest, check.intent, check.interval or 10.0)
                for service, copy in self.current.items()
                if (check := wanted[service][0].spec.health).intent is not None
            },
            {name: a["state"] for name, a in self._info.items()},
            now,
        )
        for service, old in list(self.previous.items()):
            if self._status(service)[0] == "ready":
                log.info(
                    "service %s: %s is ready, stopping %s",
                    service,
                    self.current[service].agent,
                    old.agent,
                )
                self._linger(self.previous.pop(service), now)

    def loads(self) -> list[tuple[str, int, str, bool]]:
        """(service, replica number, agent, ready) of every replica hosted here, for telemetry."""
        out: list[tuple[str, int, str, bool]] = []
        for service, copy in sorted(self.current.items()):
            ready = self._status(service)[0] == "ready"
            out.extend((service, r, copy.agent, ready) for r in self._replicas.get(service, ()))
        return out

    def _linger(self, copy: Copy, now: float) -> None:
        """Stop `copy` once its shutdown delay has passed (at once without one)."""
        if copy.shutdown_delay <= 0:
            self._host.remove(copy.agent)
        else:
            self.lingering[copy.agent] = (copy, now + copy.shutdown_delay)

    def _status(self, service: str) -> tuple[str, str]:
        copy = self.current.get(service)
        if copy is None:
            return "failed", CONFLICT
        a = self._info.get(copy.agent, {})
        return self._health.status(service, a.get("state", "starting"), a.get("reason", ""))

    def record(self, view: ServiceView, replicas: list[int] | None) -> dict[str, Any] | None:
        """This node's `replicas/NODE` record for `view` (None: it hosts nothing of it)."""
        gave_up = self._health.failed(view.name, view.manifest_id) if view.active else None
        if gave_up is not None:
            # Kept while this manifest is in force: the owner places the replica elsewhere.
            return {
                "state": "failed",
                "reason": gave_up,
                "replicas": [],
                "manifest": view.manifest_id,
            }
        if replicas is None:
            return None
        state, reason = self._status(view.name)
        copy = self.current.get(view.name)
        record: dict[str, Any] = {
            "state": state,
            "reason": reason,
            "replicas": replicas,
            "manifest": view.manifest_id,
            "agent": copy.agent if copy is not None else view.name,
        }
        old = self.previous.get(view.name)
        if old is not None and self._info.get(old.agent, {}).get("state") == "ready":
            record["previous"] = {"agent": old.agent, "manifest": old.manifest}
        return record


def upgrade_name(service: str, manifest_id: str) -> str:
    """The agent name of an upgraded copy: at most 32 characters, as agent names are."""
    return f"{service[:23]}_{manifest_id[:8]}"


def serving_agent(view: ServiceView, record: Mapping[str, Any], replica: int) -> str | None:
    """The agent to forward a message for `replica` to on the node whose record this is: the
    copy running the manifest in force when it is ready, else the old copy still serving during
    an upgrade; None when neither serves."""
    if replica not in (record.get("replicas") or ()):
        return None
    if record.get("state") == "ready" and record.get("manifest") == view.manifest_id:
        agent = record.get("agent", view.name)
        return agent if isinstance(agent, str) else None
    previous = record.get("previous")
    if isinstance(previous, Mapping) and isinstance(previous.get("agent"), str):
        return str(previous["agent"])
    return None


def _agent_spec(name: str, manifest: Manifest) -> AgentSpec:
    agent = manifest.agent
    if agent.kind == "command":
        return AgentSpec(name=name, source="command", command=agent.argv)
    if agent.kind == "class":
        return AgentSpec(name=name, source=f"class:{agent.ref}")
    return AgentSpec(name=name, source=f"entry:{agent.ref}")
