"""Services made real on this node: admit orders, own and place, host replicas, route `svc`.

The pure rules are in `kai_mesh.core.orchestration`; this shell feeds them what the node knows
and carries out what they decide, once per `tick` and whenever the replicated state or the
governance fold changes:

1. **Admit.** Every order under `services/NAME/orders` is checked (`admit_manifest`,
   `admit_command`) against the current governance fold; refused ones are shown with their
   reason and never acted on (views.py).
2. **Own and place.** The live nodes (the liveness service's alive peers and this node) that may
   host the service rank by rendezvous hash; when this node is first it computes `place` from
   the placement in force (slots on nodes no longer live are dropped and filled elsewhere:
   that is failover) and writes it under a new epoch, one above every epoch it has seen.
   When the owner itself fails, the next node by hash is the owner at its next tick.
3. **Host.** Each node runs the replicas the placement in force puts on it as agents of the
   agent host, named after the service (replicas of one service placed on one node share that
   agent), and writes its own `replicas/NODE` record when their state changes
   (starting / ready / restarting / failed).
4. **Route** `kai://svc/NAME` (`route`, the bus's `services` hook): the placed replicas whose
   node reports them ready, picked by the service's strategy with this node's `Balancer`, and
   retried once on another replica when the first fails, times out or cannot be reached; the
   message keeps its `message_id`. The candidates are cached per service between changes
   (`candidates`): routing is per message, a rebuild ranks every live node. No candidate: an
   `error` reply with code `no_replica` whose message says "none placed", "none ready" or
   "none reachable".

Beside this module: health checks (health.py), hosting and rolling upgrades (hosting.py),
Nomad's disconnect (disconnect.py), telemetry and node facts (telemetry.py, local.py), drain
(make-before-break, in `_own`), reports for `agents --mesh` and `top` (reports.py). Not yet
here: choosing which copy survives a healed partition by `disconnect.reconcile` (the core rules
exist; the placement in force wins).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.governance.fold import GovernanceState
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, ServiceAddress
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of
from kai_mesh.core.messaging.envelope import StandardMessage
from kai_mesh.core.orchestration.balancer import Balancer, NoReplica, Replica
from kai_mesh.core.orchestration.deploy import (
    Refused,
    ServiceCommand,
    SignedManifest,
    authorize,
)
from kai_mesh.core.orchestration.manifest import Manifest
from kai_mesh.core.orchestration.ownership import (
    check_write,
    in_force,
    next_epoch,
    owner,
)
from kai_mesh.core.orchestration.placement import (
    NodeInfo,
    Slot,
    eligible,
    place,
    usage_by_node,
)
from kai_mesh.runtime.agents.host import AgentHost
from kai_mesh.runtime.orchestration.disconnect import AwayClock, held
from kai_mesh.runtime.orchestration.health import HealthProber
from kai_mesh.runtime.orchestration.hosting import Hosting, serving_agent
from kai_mesh.runtime.orchestration.telemetry import TelemetryService
from kai_mesh.runtime.orchestration.views import (
    ORDERS,
    PLACEMENTS,
    REPLICAS,
    PlacementWrite,
    ServiceView,
    admit_order,
    encode_order,
    epoch_key,
    views,
)
from kai_mesh.runtime.state.service import StateService

log = logging.getLogger(__name__)

Request = Callable[[StandardMessage, float | None], Awaitable[StandardMessage]]
ErrorReply = Callable[[StandardMessage, str, str], StandardMessage]
Wake = Callable[[str, StandardMessage], Awaitable[tuple["ServiceView | None", list[Replica]]]]
# Error codes after which the one retry goes to another replica: the replica, its node or the
# path failed. An agent's own refusal (`rejected`, `unknown_intent`) would fail there too.
RETRY_CODES = frozenset(
    {"timeout", "unreachable", "unavailable", "no_such_agent", "unknown_node", "crashed"}
    | {"overloaded", "shutdown", "expired"}
)
FIRST_TRY_SHARE = 0.5  # of the time a request has, what its first replica may take


class Orchestrator:
    """See the module docstring. Give it `request`/`error_reply` (the bus's) and run `run`."""

    def __init__(
        self,
        *,
        secrets: NodeSecrets,
        mesh_id: bytes,
        state: StateService,
        host: AgentHost,
        alive: Callable[[], list[bytes]],
        alive_generation: Callable[[], object] | None = None,
        names: Callable[[bytes], str | None] = lambda node_id: None,
        name: str | None = None,
        capabilities: frozenset[str] = frozenset(),
        tick: float = 1.0,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = secrets.node_id
        self._secrets = secrets
        self._mesh_id = mesh_id
        self._state = state
        self._host = host
        self._alive = alive
        # Changes whenever `alive()` may have (wiring.liveness_generation); without it the live
        # set itself is compared, per message.
        self._alive_generation = alive_generation
        self._names = names
        self._name = name
        self._capabilities = capabilities
        self.tick = tick
        self._rng = rng or random.Random()
        self._wall = wall_clock
        self.gov: GovernanceState | None = None
        self.balancer = Balancer()
        self.request: Request | None = None
        self.error_reply: ErrorReply | None = None
        self._wake = trio.Event()
        self._admitted: dict[str, SignedManifest | ServiceCommand | Refused] = {}
        self._admitted_head: bytes | None = None
        self._views: dict[str, ServiceView] | None = None
        self._infos_cache: tuple[tuple[bytes, ...], dict[bytes, NodeInfo]] | None = None
        # Bumped whenever the views are read again (every kick: state, fold, health, drain; and
        # every step): the candidate cache's first key.
        self._generation = 0
        self._candidates: dict[str, _Candidates] = {}
        self.counters = {"placements_written": 0, "svc_requests": 0, "svc_retries": 0}
        self.counters["svc_no_replica"] = 0
        # Hooks the autoscaler fills (runtime/orchestration/autoscaler.py); None: the manifest's
        # min is placed, and a message that finds no ready replica is answered at once.
        self.wanted: Callable[[ServiceView, PlacementWrite | None], int] | None = None
        self.wake: Wake | None = None
        self.state_changed: list[Callable[[], None]] = []
        self.health = HealthProber(host, self.kick)
        self.hosting = Hosting(host, self.health)
        self.away = AwayClock()
        #: Set by the node when telemetry runs: peers' facts (capabilities, capacity) for
        #: placement, their reported load and liveness of replicas for balancing.
        self.telemetry: TelemetryService | None = None
        self.draining = False
        state.watchers.append(self.kick)

    # ---- inputs -----------------------------------------------------------------------------

    def on_governance(self, gov: GovernanceState) -> None:
        """A `GovernanceService.watch`er: orders are admitted against the newest fold."""
        self.gov = gov
        self.kick()

    def kick(self) -> None:
        self._views = None  # the state or the fold changed: read the views again
        self._infos_cache = None
        self._generation += 1
        self._wake.set()
        for fn in self.state_changed:
            fn()

    def live(self) -> list[bytes]:
        return sorted({self.node_id, *self._alive()})

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.health.run)
            task_status.started()
            while True:
                with trio.move_on_after(self.tick):
                    await self._wake.wait()
                self._wake = trio.Event()
                try:
                    await self.step()
                except KaiMeshError as exc:
                    log.warning("orchestration step: %s", exc)

    async def step(self) -> None:
        """One pass: place what this node owns, then host what is placed here."""
        if self._state.replica is None or self.gov is None:
            return
        self._views = None
        self._infos_cache = None  # facts may have changed (telemetry does not kick)
        self._generation += 1
        services = self.services()
        live = self.live()
        infos = {n: self._info(n) for n in live}
        holders = [
            slot.node
            for view in services.values()
            if view.active and (write := self.in_force(view, infos)) is not None
            for slot in write.slots
        ]
        self.away.update(holders, live, trio.current_time())
        for view in services.values():
            if view.active:
                await self._own(view, infos, services)
        await self._host_here(services)

    def services(self) -> dict[str, ServiceView]:
        """The services as the replicated state says, admitted against the fold. Cached between
        changes (every state change and fold kicks) and read afresh at every step: routing a
        message must not parse the whole doc (bench/services.py throughput)."""
        if self._state.replica is None:
            return {}
        if self._views is None:
            self._views = views(self._state.read(("services",)), self._admit)
        return self._views

    def _admit(self, text: str) -> SignedManifest | ServiceCommand | Refused:
        gov = self.gov
        if gov is None:
            return Refused("pending", "no governance fold yet")
        if gov.head != self._admitted_head:  # who may deploy can have changed
            self._admitted, self._admitted_head = {}, gov.head
        got = self._admitted.get(text)
        if got is None:
            got = self._admitted[text] = admit_order(text, self._mesh_id, gov)
        return got

    def _infos(self, live: list[bytes]) -> dict[bytes, NodeInfo]:
        """`_info` of the live nodes, cached until the next kick or step (routing's hot path)."""
        key = tuple(live)
        if self._infos_cache is None or self._infos_cache[0] != key:
            self._infos_cache = (key, {n: self._info(n) for n in live})
        return self._infos_cache[1]

    def _info(self, node_id: bytes) -> NodeInfo:
        role = None
        if self.gov is not None:
            role = next(
                (m.role for k, m in self.gov.members.items() if node_id_of(k) == node_id), None
            )
        name = (self._name if node_id == self.node_id else self._names(node_id)) or node_id.hex()
        caps = self._capabilities if node_id == self.node_id else frozenset()
        draining = self.draining and node_id == self.node_id
        info = NodeInfo(node_id=node_id, name=name, role=role, capabilities=caps, draining=draining)
        t = self.telemetry
        if t is not None:
            facts = t.facts if node_id == self.node_id else t.peer_facts.get(node_id)
            if facts is not None:
                info = facts.node_info(info)
        return info

    def owner_of(self, view: ServiceView, infos: dict[bytes, NodeInfo]) -> bytes | None:
        policy = self.gov.policy if self.gov is not None else {}
        spec = view.spec
        return owner(view.name, [n for n, i in infos.items() if eligible(spec, i, policy)])

    def in_force(self, view: ServiceView, infos: dict[bytes, NodeInfo]) -> PlacementWrite | None:
        return in_force(view.placements, self.owner_of(view, infos) if view.active else None)

    async def _own(
        self, view: ServiceView, infos: dict[bytes, NodeInfo], services: dict[str, ServiceView]
    ) -> None:
        if self.owner_of(view, infos) != self.node_id:
            return
        assert self.gov is not None and view.manifest is not None
        current = in_force(view.placements, self.node_id)
        others = [
            (v.spec, w.slots)
            for v in services.values()
            if v.active and v.name != view.name and (w := self.in_force(v, infos)) is not None
        ]
        spec = view.spec
        slots_now = current.slots if current is not None else ()
        now = trio.current_time()
        plan = place(
            spec,
            held(spec, given_up(view, infos), slots_now, self.away, now, self._info),
            slots_now,
            wanted=spec.replicas.min if self.wanted is None else self.wanted(view, current),
            usage=usage_by_node(others),
            policy=self.gov.policy,
        )
        # Drain is make-before-break: a draining node's replica stays placed (and serving)
        # beside its replacement until the replacement is ready.
        held_back = [
            s
            for s in plan.stopped
            if s.node in infos and infos[s.node].draining and not replaced(view, s, plan.slots)
        ]
        slots = tuple(sorted({*plan.slots, *held_back}, key=lambda s: (s.replica, s.node)))
        if (
            current is not None
            and current.epoch.owner == self.node_id
            and current.manifest == view.manifest_id
            and set(current.slots) == set(slots)
        ):
            return
        epoch = next_epoch([w.epoch for w in view.placements], self.node_id)
        in_place = current.epoch if current is not None else None
        if check_write(in_place, epoch, self.node_id) is not None:  # cannot happen: a guard
            return
        write = PlacementWrite(epoch, view.manifest_id, slots)

        def edit(doc: Any) -> None:
            from kai_mesh.core.state import ydoc

            ydoc.write(doc, ("services", view.name, PLACEMENTS, epoch_key(epoch)), write.to_value())
            for old in view.placements:  # what the new epoch outranks is no longer needed
                if old.epoch < epoch and old.key:
                    ydoc.delete(doc, ("services", view.name, PLACEMENTS, old.key))

        await self._state.transact(edit)
        self.counters["placements_written"] += 1
        log.info(
            "service %s placed at epoch %d: %s%s",
            view.name,
            epoch.counter,
            ", ".join(f"#{s.replica}@{self._label(s.node)}" for s in slots) or "nothing",
            f" ({plan.unplaced} unplaced: {plan.why})" if plan.unplaced else "",
        )

    # ---- hosting ----------------------------------------------------------------------------

    async def _host_here(self, services: dict[str, ServiceView]) -> None:
        infos = {n: self._info(n) for n in self.live()}
        wanted: dict[str, tuple[ServiceView, list[int]]] = {}
        for view in services.values():
            if not view.active:
                continue
            write = self.in_force(view, infos)
            mine = [s.replica for s in write.slots if s.node == self.node_id] if write else []
            if mine and self.health.failed(view.name, view.manifest_id) is None:
                wanted[view.name] = (view, sorted(mine))
        self.hosting.apply(wanted, trio.current_time())
        for view in services.values():
            got = wanted.get(view.name)
            record = self.hosting.record(view, got[1] if got is not None else None)
            if view.status.get(self.node_id) != record:
                await self._write_status(view.name, record)

    async def _write_status(self, name: str, record: dict[str, Any] | None) -> None:
        from kai_mesh.core.state import ydoc

        path = ("services", name, REPLICAS, self.node_id.hex())

        def edit(doc: Any) -> None:
            if record is not None:
                ydoc.write(doc, path, record)
            elif self.node_id.hex() in (ydoc.read(doc, path[:3]) or {}):
                ydoc.delete(doc, path)

        await self._state.transact(edit)

    def drain(self, on: bool = True) -> dict[str, Any]:
        """Drain this node (`kai-mesh drain`): its replicas move to other nodes, each stopping
        here once its replacement is ready, and none are placed here until `drain(False)`. Peers
        learn it with this node's facts; it holds until the node restarts."""
        self.draining = on
        if self.telemetry is not None:
            self.telemetry.set_facts(dataclasses.replace(self.telemetry.facts, draining=on))
        self.kick()
        return {"node": self._label(self.node_id), "draining": on}

    # ---- orders -----------------------------------------------------------------------------

    async def deploy(self, manifest: Manifest) -> dict[str, Any]:
        """Sign `manifest` with this node's key and file it. The order is filed even if this
        node may not deploy (every node then shows it refused); the answer says so."""
        view = self.services().get(manifest.name)
        now = max(int(self._wall()), view.latest_order + 1 if view else 0)
        signed = SignedManifest.create(manifest, self._secrets, self._mesh_id, now)
        return await self._file(manifest.name, signed.id, signed.to_bytes())

    async def command(self, action: str, name: str, replicas: int = 0) -> dict[str, Any]:
        """`scale` to `replicas` (the manifest's max rises to it if lower) or `remove`."""
        view = self.services().get(name)
        if view is None or not view.active:
            raise UsageError(f"no service {name!r} is deployed")
        high = max(replicas, view.spec.replicas.max)
        now = max(int(self._wall()), view.latest_order + 1)  # after every order of it
        cmd = ServiceCommand.create(
            action,  # type: ignore[arg-type]
            name,
            self._secrets,
            self._mesh_id,
            now,
            replicas=(replicas, high) if action == "scale" else (0, 0),
        )
        return await self._file(name, cmd.id, cmd.to_bytes())

    async def _file(self, name: str, order_id: bytes, data: bytes) -> dict[str, Any]:
        await self._state.write(("services", name, ORDERS, order_id.hex()), encode_order(data))
        refused = None
        if self.gov is not None:
            why = authorize(self._secrets.verify_key, self.gov)
            refused = None if why is None else {"reason": why.reason, "detail": why.detail}
        self.kick()
        return {"service": name, "id": order_id.hex(), "refused": refused}

    # ---- routing ----------------------------------------------------------------------------

    def candidates(self, name: str) -> tuple[ServiceView | None, list[Replica]]:
        """The service's view and its replicas as balancing sees them (readiness, path, weight,
        reported load). Cached per service until something they are made of changes: the views
        (`_generation`), the live set (`alive_generation`), telemetry (its `generation`), or a
        peer's telemetry silence passes the service's TTL (`valid_until`). Routing asks per
        message; rebuilding costs an HRW ranking and a telemetry lookup per replica."""
        t = self.telemetry
        key = (
            self._generation,
            self.live() if self._alive_generation is None else self._alive_generation(),
            t,
            t.generation if t is not None else 0,
        )
        got = self._candidates.get(name)
        now = trio.current_time()
        if got is None or got.key != key or now >= got.valid_until:
            got = self._candidates[name] = self._build_candidates(name, key, now)
        return got.view, list(got.replicas)

    def _build_candidates(self, name: str, key: tuple[object, ...], now: float) -> _Candidates:
        view = self.services().get(name)
        valid_until = math.inf
        if view is None or not view.active:
            return _Candidates(key, valid_until, view, ())
        live = self.live()
        write = self.in_force(view, self._infos(live))
        replicas = []
        for slot in write.slots if write is not None else ():
            record = view.status.get(slot.node) or {}
            ready = serving_agent(view, record, slot.replica) is not None
            local = slot.node == self.node_id
            hops = 0 if local else (1 if slot.node in live else None)
            load, weight = 0, 1.0
            t = self.telemetry
            if t is not None and not local:
                sample = t.load(slot.node)
                for r in sample.replicas if sample is not None else ():
                    if r.ident == (name, slot.replica):
                        load = r.in_flight  # readiness stays the record's: telemetry may lag
                facts = t.peer_facts.get(slot.node)
                weight = float(facts.cpus) if facts is not None else 1.0
                ttl = view.spec.health.ttl
                if ready and t.past_ttl(slot.node, ttl):
                    ready = False
                elif ready and (deadline := t.ttl_deadline(slot.node, ttl)) is not None:
                    valid_until = min(valid_until, deadline)  # it turns unready then
            elif t is not None:
                weight = float(t.facts.cpus)
            replicas.append(
                Replica(
                    node=slot.node,
                    replica=slot.replica,
                    ready=ready,
                    local=local,
                    hops=hops,
                    weight=weight,
                    load=load,
                )
            )
        return _Candidates(key, valid_until, view, tuple(replicas))

    def agent_for(self, view: ServiceView, node: bytes, replica: int) -> str | None:
        """The agent serving `replica` of `view` on `node` (a rolling upgrade changes it)."""
        return serving_agent(view, view.status.get(node) or {}, replica)

    async def route(self, message: StandardMessage, reply_within: float | None) -> StandardMessage:
        """The bus's hook for `kai://svc/NAME`: pick a replica, retry once on another."""
        assert self.request is not None and self.error_reply is not None
        to = message.to
        assert isinstance(to, ServiceAddress)
        name = to.service
        self.counters["svc_requests"] += 1
        view, replicas = self.candidates(name)
        if view is None or not view.active:
            self.counters["svc_no_replica"] += 1
            return self.error_reply(message, "no_replica", f"no service {name!r} is deployed")
        if self.wake is not None and not any(r.ready for r in replicas):
            started = trio.current_time()  # a service at zero: the message waits for a replica
            view, replicas = await self.wake(name, message)
            if reply_within is not None:
                reply_within = max(0.0, reply_within - (trio.current_time() - started))
            if view is None or not view.active:
                self.counters["svc_no_replica"] += 1
                return self.error_reply(message, "no_replica", f"no service {name!r} is deployed")
        strategy = view.spec.strategy
        picked = self.balancer.pick(name, strategy, replicas, self._rng)
        limit = max(0.0, message.expires_at - self._wall())
        if reply_within is not None:
            limit = min(limit, reply_within)
        reply: StandardMessage | None = None
        for attempt in range(2):
            if isinstance(picked, NoReplica):
                if reply is not None:
                    return reply
                self.counters["svc_no_replica"] += 1
                return self.error_reply(message, "no_replica", str(picked))
            share = FIRST_TRY_SHARE if attempt == 0 else 1.0
            started = trio.current_time()
            key = picked.key
            self.balancer.begin(key)
            try:
                agent = self.agent_for(view, picked.node, picked.replica) or name
                forward = dataclasses.replace(
                    message, to=AgentAddress(NodeRef(node_id=picked.node), agent)
                )
                reply = await self.request(forward, limit * share)
            finally:
                self.balancer.end(key)
            limit = max(0.0, limit - (trio.current_time() - started))
            code = reply.payload.get("code") if reply.intent == "error" else None
            if code not in RETRY_CODES or attempt == 1:
                return reply
            self.counters["svc_retries"] += 1
            # Picked again from what this node knows now: the first try took time, and a
            # replica that moved meanwhile (its record changed) is where the retry should go.
            fresh, now_replicas = self.candidates(name)
            if fresh is not None and fresh.active:
                view, replicas = fresh, now_replicas
            picked = self.balancer.retry(name, strategy, replicas, self._rng, failed=key)
        assert reply is not None
        return reply

    # ---- reports ----------------------------------------------------------------------------

    def label(self, node_id: bytes) -> str:
        """A node's name as this node knows it, else the start of its id."""
        return self._label(node_id)

    def _label(self, node_id: bytes) -> str:
        if node_id == self.node_id:
            return self._name or node_id.hex()[:8]
        return self._names(node_id) or node_id.hex()[:8]

    def describe(self, view: ServiceView) -> dict[str, Any]:
        infos = {n: self._info(n) for n in self.live()}
        write = self.in_force(view, infos) if view.active else None
        own = self.owner_of(view, infos) if view.active else None
        replicas = []
        now = trio.current_time()
        for slot in write.slots if write is not None else ():
            record = view.status.get(slot.node) or {}
            state = record.get("state", "pending")
            if slot.replica not in (record.get("replicas") or ()):
                state = "pending"
            away = self.away.status(slot.node, now, view.spec)
            if away is not None:
                state = away  # its node is not live: "unknown", then "lost" (Nomad)
            replicas.append(
                {
                    "replica": slot.replica,
                    "node": self._label(slot.node),
                    "node_id": slot.node.hex(),
                    "state": state,
                    "reason": record.get("reason", ""),
                    "in_flight": self.balancer.in_flight.get((slot.node, slot.replica), 0),
                }
            )
        spec = view.spec if view.manifest is not None else None
        return {
            "name": view.name,
            "status": "removed" if view.removed else ("active" if view.active else "refused"),
            "version": spec.version if spec is not None else None,
            "manifest": view.manifest_id or None,
            "deployer": view.manifest.deployer_id.hex() if view.manifest else None,
            "spec": spec.to_table() if spec is not None else None,
            "wanted": spec.replicas.min if spec is not None and view.active else 0,
            "owner": self._label(own) if own is not None else None,
            "owner_id": own.hex() if own is not None else None,
            "epoch": write.epoch.counter if write is not None else None,
            "ready": sum(1 for r in replicas if r["state"] == "ready"),
            "replicas": replicas,
            "refused": view.refused,
        }

    def report(self) -> list[dict[str, Any]]:
        return [self.describe(v) for v in self.services().values()]


@dataclasses.dataclass(frozen=True, slots=True)
class _Candidates:
    """One service's candidates as built at `key`; stale from `valid_until` (a TTL passing)."""

    key: tuple[object, ...]
    valid_until: float
    view: ServiceView | None
    replicas: tuple[Replica, ...]


def replaced(view: ServiceView, old: Slot, slots: tuple[Slot, ...]) -> bool:
    """Whether another node in `slots` runs `old`'s replica number, ready, on this manifest."""
    for s in slots:
        record = view.status.get(s.node) or {}
        if (
            s.replica == old.replica
            and s.node != old.node
            and record.get("state") == "ready"
            and record.get("manifest") == view.manifest_id
            and s.replica in (record.get("replicas") or ())
        ):
            return True
    return False


def given_up(view: ServiceView, infos: dict[bytes, NodeInfo]) -> dict[bytes, NodeInfo]:
    """`infos` with the nodes that gave up running this manifest marked draining, so placement
    puts their replicas elsewhere (issue 11, item 8: after repeated failure the owner places
    the replica elsewhere)."""
    out = dict(infos)
    for node, record in view.status.items():
        if (
            node in out
            and record.get("state") == "failed"
            and record.get("manifest") == view.manifest_id
        ):
            out[node] = dataclasses.replace(out[node], draining=True)
    return out
