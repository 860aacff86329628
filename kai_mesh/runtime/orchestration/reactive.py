"""Reactive rules from service manifests, run against mesh events (issue 12).

Every node keeps a `RuleEngine` (core.orchestration.rules: safe condition, cooldown, trailing
fire) per active service with `[[rules]]`, and listens to the rules' topics. What fires is carried
out only where it is allowed to be, so one event does not act twenty times:

- `scale NAME +N|-N|=N`: by the owner of NAME (`ServiceAutoscaler.force`: bounded by NAME's min
  and max, published as `service.scaled`, held by the scale-down window);
- `create CAP[,CAP]`: the specification's `scaleUpForCapabilities`: the deployed services whose
  name, intents or capabilities cover every CAP (an agent offers its own name) get one more
  replica, by their owners; a service at zero is woken. None: logged, nothing created;
- `publish TOPIC`: by the owner of the rule's service, with {rule, service, cause}.

Cooldowns are per rule on each node; only the acting node's matter. The engines are rebuilt when a
service's rules change (a new manifest), which resets their cooldowns.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from kai_mesh.core.events.wire import Event
from kai_mesh.core.orchestration.rules import Fired, Rule, RuleEngine
from kai_mesh.runtime.events.service import MeshEvents
from kai_mesh.runtime.orchestration.autoscaler import ServiceAutoscaler
from kai_mesh.runtime.orchestration.service import Orchestrator
from kai_mesh.runtime.orchestration.views import ServiceView

log = logging.getLogger(__name__)


class ReactiveRules:
    def __init__(
        self,
        *,
        orch: Orchestrator,
        events: MeshEvents,
        autoscaler: ServiceAutoscaler,
        tick: float = 1.0,
    ) -> None:
        self.orch = orch
        self.events = events
        self.autoscaler = autoscaler
        self.tick = tick
        self._engines: dict[str, tuple[tuple[Rule, ...], RuleEngine]] = {}
        self._topics: set[str] = set()
        self.fired: list[dict[str, Any]] = []  # the newest actions taken here, for status
        self.counters = {"fired": 0, "acted": 0}

    def refresh(self) -> None:
        """Engines for the services' current rules; listen to any new topic."""
        seen = set()
        for view in self.orch.services().values():
            if not view.active or not view.spec.rules:
                continue
            rules = view.spec.rules
            seen.add(view.name)
            got = self._engines.get(view.name)
            if got is None or got[0] != rules:
                self._engines[view.name] = (rules, RuleEngine(rules))
            for rule in rules:
                if rule.topic not in self._topics:
                    self._topics.add(rule.topic)
                    self.events.listen(rule.topic, self.on_event)
        for name in set(self._engines) - seen:
            del self._engines[name]

    def on_event(self, event: Event) -> None:
        now = trio.current_time()
        for service, (_, engine) in list(self._engines.items()):
            for fired in engine.handle_event(event.topic, event.fields, now):
                self._act(service, fired, event.topic)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.refresh()
            now = trio.current_time()
            for service, (_, engine) in list(self._engines.items()):
                due = engine.get_timer()
                if due is not None and due <= now:
                    for fired in engine.handle_timer(now):
                        self._act(service, fired, fired.rule)
            await trio.sleep(self.tick)

    def _act(self, service: str, fired: Fired, cause: str) -> None:
        self.counters["fired"] += 1
        action = fired.action
        views = self.orch.services()
        acted = False
        reason = f"rule {fired.rule} of {service}"
        if action.verb == "scale":
            view = views.get(action.target)
            if view is not None and view.active:
                current = self._count(view)
                target = {
                    "+": current + action.amount,
                    "-": current - action.amount,
                    "=": action.amount,
                }[action.mode]
                acted = self.autoscaler.force(view, max(0, target), reason)
        elif action.verb == "create":
            wanted = set(action.capabilities)
            offers = [
                v
                for v in views.values()
                if v.active and wanted <= {v.name, *v.spec.capabilities, *v.spec.intents}
            ]
            if not offers:
                log.info("%s: no service offers %s", reason, ", ".join(sorted(wanted)))
            for view in offers:
                acted = self.autoscaler.force(view, self._count(view) + 1, reason) or acted
        else:
            view = views.get(service)
            if view is not None and self._owns(view):
                self.events.publish(
                    action.target, {"rule": fired.rule, "service": service, "cause": cause}
                )
                acted = True
        if acted:
            self.counters["acted"] += 1
            self.fired = [
                *self.fired[-19:],
                {"rule": fired.rule, "service": service, "do": action.verb},
            ]

    def _owns(self, view: ServiceView) -> bool:
        infos = {n: self.orch._info(n) for n in self.orch.live()}
        return self.orch.owner_of(view, infos) == self.orch.node_id

    def _count(self, view: ServiceView) -> int:
        infos = {n: self.orch._info(n) for n in self.orch.live()}
        write = self.orch.in_force(view, infos)
        return len(write.slots) if write is not None else 0
