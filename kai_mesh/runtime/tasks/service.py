"""Tasks on this node: submit one, and claim and run those this node wins (core.tasks.claims).

`submit` writes the task's record (spec, empty `claims` and `results`) to the replicated state in
one transaction and publishes `task.created` {task, capability, intent}, which is must-arrive
(core.events): the reactive rules that create an agent for a capability nobody offers
(`create CAP`, the specification's scaleUpForCapabilities) hear it even across a partition.

`run` looks at the open tasks whenever the state changes and at least every `tick` (membership
changes do not touch the doc, and a dead claimer is noticed only by the failure detector). A node
that has a ready replica of a service offering the task's capability (its name, `capabilities` or
`intents`) and wins the task's rendezvous among the live such nodes writes its claim, sends the
task's intent and payload to its own replica's agent through the bus (the inbox, concurrency and
load the autoscaler sees), and writes the reply as the result: `ok` with the reply's payload, or
failed with the error's code and text. An agent's error is final: only a claimer's death reruns a
task, on the next node by rendezvous score.

A node that restarts while running a task finds its own claim with no result and runs it again:
at least once across a crash of the runner, exactly once otherwise (within one membership view).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kai_mesh.core.errors import UsageError
from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.core.tasks.claims import (
    CLAIMS,
    DEFAULT_TTL,
    RESULTS,
    TaskSpec,
    check_id,
    describe,
    new_spec,
    parse_spec,
    record_of,
    should_claim,
    status,
)
from kai_mesh.runtime.events.service import MeshEvents
from kai_mesh.runtime.messaging.bus import new_message
from kai_mesh.runtime.orchestration.service import Orchestrator
from kai_mesh.runtime.orchestration.views import ServiceView
from kai_mesh.runtime.state.service import StateService

log = logging.getLogger(__name__)

Request = Callable[[StandardMessage, float | None], Awaitable[StandardMessage]]
MAX_MESSAGE_TTL = 3600
RUNS_AT_ONCE = 64  # tasks this node runs concurrently; the rest wait for the next look


class TaskService:
    def __init__(
        self,
        *,
        orch: Orchestrator,
        state: StateService,
        events: MeshEvents,
        request: Request,
        tick: float = 1.0,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.orch = orch
        self.state = state
        self.events = events
        self.request = request
        self.tick = tick
        self._rng = rng or random.Random()
        self._wall = wall_clock
        self.node_id = orch.node_id
        self._me = self.node_id.hex()
        self._kick = trio.Event()
        self._running: set[str] = set()
        self._final: set[str] = set()  # done or failed here: never looked at again
        self.counters = {"submitted": 0, "claimed": 0, "done": 0, "failed": 0}
        state.watchers.append(self.kick)

    def kick(self) -> None:
        self._kick.set()

    # ---- submitting and reading -------------------------------------------------------------

    async def submit(
        self, capability: str, intent: str, payload: Any, ttl: float = DEFAULT_TTL
    ) -> dict[str, Any]:
        """Create a task; `UsageError` (nothing written) for a bad capability, intent, payload
        or ttl. Returns the task as `show` describes it."""
        spec = new_spec(
            task_id=self._rng.randbytes(8).hex(),
            capability=capability,
            intent=intent,
            payload=payload,
            created_by=self.node_id,
            now=self._wall(),
            ttl=ttl,
        )
        await self.state.write(("tasks", spec.id), record_of(spec))
        self.counters["submitted"] += 1
        self.events.publish(
            "task.created", {"task": spec.id, "capability": capability, "intent": intent}
        )
        self.kick()
        return self.show(spec.id)

    def records(self) -> dict[str, Any]:
        if self.state.replica is None:
            return {}
        return dict(self.state.read(("tasks",)))

    def show(self, task_id: str) -> dict[str, Any]:
        check_id(task_id)
        try:
            record = self.state.read(("tasks", task_id)) if self.state.replica else None
        except UsageError:
            record = None
        spec = parse_spec(record)
        if spec is None:
            raise UsageError(f"no task {task_id!r} (see `kai-mesh tasks list`)")
        return self._describe(spec, record)

    def list(self) -> list[dict[str, Any]]:
        out = []
        for record in self.records().values():
            spec = parse_spec(record)
            if spec is not None:
                out.append(self._describe(spec, record))
        return sorted(out, key=lambda t: (t["created_at"], t["id"]))

    def _describe(self, spec: TaskSpec, record: Any) -> dict[str, Any]:
        live = self.orch.live()
        st = status(record, live, self._wall())
        names = {n: self.orch.label(n) for n in ([st.claimer] if st.claimer else [])}
        out = describe(spec, st, names)
        if st.state == "open":
            capable, _ = self.capable(spec.capability)
            out["waiting"] = (
                f"claimable by {len(capable)} node(s)"
                if capable
                else f"no live node has a ready agent offering {spec.capability!r}: deploy a "
                f"service named {spec.capability!r} or with capabilities = "
                f'["{spec.capability}"] (a [[rules]] `create {spec.capability}` on task.created '
                "wakes one that sleeps)"
            )
        return out

    # ---- who can run what -------------------------------------------------------------------

    def capable(self, capability: str) -> tuple[set[bytes], tuple[ServiceView, str] | None]:
        """The live nodes with a ready replica offering `capability`, and this node's own
        (service, agent) for it if it has one."""
        nodes: set[bytes] = set()
        mine: tuple[ServiceView, str] | None = None
        for view in self.orch.services().values():
            if not view.active:
                continue
            if capability not in {view.name, *view.spec.capabilities, *view.spec.intents}:
                continue
            _, replicas = self.orch.candidates(view.name)
            for r in replicas:
                if not r.ready or (r.hops is None and not r.local):
                    continue
                nodes.add(r.node)
                if r.local and mine is None:
                    agent = self.orch.agent_for(view, r.node, r.replica)
                    if agent is not None:
                        mine = (view, agent)
        return nodes, mine

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                with trio.move_on_after(self.tick):
                    await self._kick.wait()
                self._kick = trio.Event()
                self.step(nursery)

    def step(self, nursery: trio.Nursery) -> None:
        """Start running every task this node should run now."""
        if self.state.replica is None:
            return
        live = self.orch.live()
        now = self._wall()
        capable_of: dict[str, tuple[set[bytes], tuple[ServiceView, str] | None]] = {}
        for task_id in self.state.keys(("tasks",)):
            if task_id in self._final or task_id in self._running:
                continue
            if len(self._running) >= RUNS_AT_ONCE:
                return
            try:
                record = self.state.read(("tasks", task_id))
            except UsageError:  # deleted meanwhile
                continue
            spec = parse_spec(record)
            if spec is None:
                continue
            st = status(record, live, now)
            if st.state in ("done", "failed"):
                self._final.add(task_id)
                continue
            if spec.capability not in capable_of:
                capable_of[spec.capability] = self.capable(spec.capability)
            capable, mine = capable_of[spec.capability]
            # Our own claim with no result and nothing running: we restarted mid-run.
            ours = st.state == "claimed" and st.claimer == self.node_id
            if mine is not None and (
                ours or should_claim(record, self.node_id, live, capable, now)
            ):
                self._running.add(task_id)
                nursery.start_soon(self._run, spec, mine[1], not ours)

    async def _run(self, spec: TaskSpec, agent: str, claim: bool) -> None:
        try:
            if claim:
                await self.state.write(("tasks", spec.id, CLAIMS, self._me), {"at": self._wall()})
                self.counters["claimed"] += 1
            me = NodeRef(node_id=self.node_id)
            left = max(1.0, spec.deadline - self._wall())
            message = new_message(
                sender=AgentAddress(me, "tasks"),
                to=AgentAddress(me, agent),
                intent=spec.intent,
                payload=spec.payload,
                ttl=int(min(left, MAX_MESSAGE_TTL)),
                max_ttl=MAX_MESSAGE_TTL,
                context={"task": spec.id},
            )
            reply = await self.request(message, min(left, MAX_MESSAGE_TTL))
            if reply.intent == "error":
                p = reply.payload if isinstance(reply.payload, dict) else {}
                result = {
                    "ok": False,
                    "reason": f"{p.get('code', 'error')}: {p.get('message', '')}",
                    "at": self._wall(),
                }
                self.counters["failed"] += 1
            else:
                result = {"ok": True, "result": reply.payload, "at": self._wall()}
                self.counters["done"] += 1
            try:
                await self.state.write(("tasks", spec.id, RESULTS, self._me), result)
            except UsageError as exc:  # a reply the doc cannot hold is the task's failure
                await self.state.write(
                    ("tasks", spec.id, RESULTS, self._me),
                    {"ok": False, "reason": f"result not storable: {exc}", "at": self._wall()},
                )
            self._final.add(spec.id)
        finally:
            self._running.discard(spec.id)

    def status(self) -> dict[str, Any]:
        return {"running": len(self._running), **self.counters}
