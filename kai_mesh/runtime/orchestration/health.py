"""Active health checks of the replicas this node hosts (issue 11, item 8; the rules are
`kai_mesh.core.orchestration.health`).

The orchestrator calls `sync` on every step with the replicas it hosts whose manifest names a
health intent, and the agent host's state of each; `HealthProber.run` probes them when their
machines say so (a call of the health intent with an empty payload, through the agent host, as
any request: a probe that raises, is refused or times out failed), restarts a replica whose
probes keep failing (`AgentHost.restart`, which applies the host's backoff) and remembers the
ones it gave up on, per manifest, so the orchestrator stops hosting them and marks them failed:
the owner then places them elsewhere. `status` maps the machine to the state the replica record
shows ("starting" until the first probe passes, "ready", "unhealthy", "failed").
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from kai_mesh.agents.base import AgentRequest
from kai_mesh.core.orchestration.health import (
    GiveUp,
    Probe,
    ProbePolicy,
    ReplicaHealth,
    Restart,
)
from kai_mesh.runtime.agents.host import AgentError, AgentHost

log = logging.getLogger(__name__)

PROBE_SENDER = "kai://local/health"


@dataclass
class _Checked:
    agent: str
    manifest: str
    intent: str
    machine: ReplicaHealth


class HealthProber:
    """See the module docstring. `on_change` is called when a replica's health state changes."""

    def __init__(self, host: AgentHost, on_change: Callable[[], None]) -> None:
        self._host = host
        self._on_change = on_change
        self._checked: dict[str, _Checked] = {}  # by service
        self.gave_up: dict[str, tuple[str, str]] = {}  # service -> (manifest id, reason)
        self._wake = trio.Event()
        self.counters = {"probes": 0, "probe_failures": 0, "restarts": 0, "gave_up": 0}

    def sync(
        self,
        wanted: Mapping[str, tuple[str, str, str, float]],
        agent_states: Mapping[str, str],
        now: float,
    ) -> None:
        """`wanted`: service -> (agent, manifest id, health intent, interval) for the hosted
        replicas with an active check; `agent_states`: the agent host's state per agent."""
        for name in list(self._checked):
            c = self._checked[name]
            if name not in wanted or wanted[name][:2] != (c.agent, c.manifest):
                del self._checked[name]
        for name, (manifest, _) in list(self.gave_up.items()):
            if name in wanted and wanted[name][1] != manifest:
                del self.gave_up[name]  # a new manifest gets a new chance
        for name, (agent, manifest, intent, interval) in wanted.items():
            checked = self._checked.get(name)
            if checked is None:
                policy = ProbePolicy(interval=interval)
                checked = _Checked(agent, manifest, intent, ReplicaHealth(policy))
                self._checked[name] = checked
            checked.machine.agent(agent_states.get(agent) == "ready", now)
        self._wake.set()

    def status(self, name: str, agent_state: str, agent_reason: str) -> tuple[str, str]:
        """The replica record's (state, reason) for service `name`, whose agent is in
        `agent_state`."""
        checked = self._checked.get(name)
        if checked is None or agent_state != "ready":
            return agent_state, agent_reason
        m = checked.machine
        if m.state == "starting":
            return "starting", "waiting for the first health check to pass"
        if m.state == "unready":
            return "unhealthy", m.reason
        return m.state, m.reason

    def failed(self, name: str, manifest: str) -> str | None:
        """Why this node gave up on service `name` running `manifest`, or None."""
        got = self.gave_up.get(name)
        return got[1] if got is not None and got[0] == manifest else None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                for name, checked in list(self._checked.items()):
                    if isinstance(checked.machine.handle_timer(now), Probe):
                        nursery.start_soon(self._probe, name, checked)
                due = min(
                    (t for c in self._checked.values() if (t := c.machine.get_timer()) is not None),
                    default=math.inf,
                )
                self._wake = trio.Event()
                with trio.move_on_at(due):
                    await self._wake.wait()

    async def _probe(self, name: str, checked: _Checked) -> None:
        machine = checked.machine
        request = AgentRequest(
            intent=checked.intent,
            payload=None,
            context={},
            sender=PROBE_SENDER,
            message_id=os.urandom(8).hex(),
        )
        self.counters["probes"] += 1
        ok, detail = True, ""
        try:
            with trio.fail_after(machine.policy.probe_timeout):
                await self._host.call(checked.agent, request, machine.policy.probe_timeout)
        except (AgentError, trio.TooSlowError) as exc:
            ok, detail = False, str(exc) or "timed out"
            self.counters["probe_failures"] += 1
        before = machine.state
        action = machine.probe_result(ok, trio.current_time(), detail)
        if isinstance(action, Restart):
            self.counters["restarts"] += 1
            log.warning("replica %s: %s; restarting it", name, action.reason)
            try:
                self._host.restart(checked.agent)
            except AgentError as exc:
                log.info("replica %s: not restarted: %s", name, exc)
        elif isinstance(action, GiveUp):
            self.counters["gave_up"] += 1
            log.warning("replica %s: %s; giving it up", name, action.reason)
            self.gave_up[name] = (checked.manifest, action.reason)
        if machine.state != before or action is not None:
            self._on_change()
        self._wake.set()
