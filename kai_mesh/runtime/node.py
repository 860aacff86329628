"""The node daemon: one trio nursery owning the store, the agents, the bus and the control socket.

`Node.run` is the whole life of a `kai-mesh run`: take the home's lock (one daemon per home), open
the store, start the agent host, the bus and the control server, say ready, and serve until
SIGINT/SIGTERM or a `shutdown` request cancels the nursery; then close the store with its
clean-shutdown marker. The control methods here translate between the socket's plain values and
the core's types; they hold no protocol logic of their own.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

import psutil
import trio

import kai_mesh
from kai_mesh.config.interfaces import InterfaceConfig, RNodeOptions
from kai_mesh.config.nodefiles import NodeFiles
from kai_mesh.config.settings import Config, NodePaths
from kai_mesh.core.codec import unpack_exact
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import (
    AddressError,
    KaiMeshError,
    TransportError,
    UsageError,
)
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, Priority, StandardMessage
from kai_mesh.core.messaging.frames import FRAME_EVENT
from kai_mesh.core.messaging.retry import RetryPolicy
from kai_mesh.core.orchestration.telemetry import lan_profile
from kai_mesh.runtime.agents.host import AgentError, AgentHost, AgentSpec
from kai_mesh.runtime.control.server import ControlServer, EventHub
from kai_mesh.runtime.events.agent import EVENT_METHODS, WithEventsAgent, events_method
from kai_mesh.runtime.events.service import MeshEvents
from kai_mesh.runtime.events.sources import RuntimeSources
from kai_mesh.runtime.governance.control import METHODS as GOV_METHODS
from kai_mesh.runtime.governance.control import governance_method
from kai_mesh.runtime.governance.invites import METHODS as INVITE_METHODS
from kai_mesh.runtime.governance.invites import invite_method, wire_invites
from kai_mesh.runtime.governance.policy import GovernanceEnforcer
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.messaging.bus import Bus, new_message
from kai_mesh.runtime.messaging.egress import Egress
from kai_mesh.runtime.messaging.remote import RemoteRouter
from kai_mesh.runtime.orchestration.autoscaler import ServiceAutoscaler
from kai_mesh.runtime.orchestration.control import SERVICE_METHODS, services_method
from kai_mesh.runtime.orchestration.load import LoadMeter
from kai_mesh.runtime.orchestration.local import Sampler, detect_facts
from kai_mesh.runtime.orchestration.reactive import ReactiveRules
from kai_mesh.runtime.orchestration.service import Orchestrator
from kai_mesh.runtime.orchestration.telemetry import TelemetryService, policy_for
from kai_mesh.runtime.state.control import WithStateAgent, state_method
from kai_mesh.runtime.state.service import StateService
from kai_mesh.runtime.store import OutboxRow, Store
from kai_mesh.runtime.supervision.service import Supervised, WithSuperviseAgent
from kai_mesh.runtime.tasks.control import TASK_METHODS, tasks_method
from kai_mesh.runtime.tasks.service import TaskService
from kai_mesh.runtime.wiring import alive_peers, liveness_generation, sync_peers, wire_delivery
from transports.base import Transport

log = logging.getLogger(__name__)

#: Transport counters that count refused or dropped input (the rest are traffic figures).
REFUSALS = frozenset(
    {
        "other_mesh",
        "untrusted",
        "malformed",
        "bad_member_record",
        "unverified_frame",
        "oversize",
        "dropped_events",
        "dropped_callbacks",
        "bad_signature",
        "guest_refused",
        "guest_busy",
        "unknown_source",
        "join_refused",
        # Nostr (transports/nostr): what relays handed us that was dropped, by reason
        "duplicate",
        "bad_id",
        "expired",
        "wrong_kind",
        "not_for_us",
        "unknown_key",
        "key_mismatch",
        "undecryptable",
        "bad_chunk",
        "chunk_mismatch",
        "chunks_evicted",
        "chunks_expired",
        "bad_seal",
    }
)


class AlreadyRunning(KaiMeshError):
    """Another daemon holds this home's lock."""


def take_lock(paths: NodePaths) -> IO[str]:
    """Hold an exclusive lock on the home for the daemon's life; raise `AlreadyRunning` if held."""
    paths.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = open(paths.lock, "a+")  # noqa: SIM115 - held open for the daemon's whole life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(
            f"a node is already running on {paths.config_file.parent} (pid {pid}); "
            "stop it with `kai-mesh stop`"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def agent_specs(config: Config) -> list[AgentSpec]:
    specs = [
        AgentSpec(name=name, source=f"entry:{name}", timeout=config.agent_timeout)
        for name in config.agents
    ]
    for extra in config.extra_agents:
        specs.append(
            AgentSpec(
                name=extra.name,
                source=f"class:{extra.class_path}" if extra.class_path else "command",
                command=extra.command,
                timeout=extra.timeout or config.agent_timeout,
                isolation=extra.isolation,
            )
        )
    return specs


class _HubLogHandler(logging.Handler):
    """Log records as `logs` events, so `kai-mesh events logs` and the TUI can follow them."""

    def __init__(self, hub: EventHub) -> None:
        super().__init__()
        self.hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = {
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
                "time": record.created,
            }
            self.hub.publish_threadsafe("logs", event)
        except Exception:  # a log handler must never raise into the code that logged
            self.handleError(record)


class Node:
    """One mesh node. `run()` is the daemon; the rest answers control requests."""

    def __init__(
        self,
        paths: NodePaths,
        config: Config,
        files: NodeFiles,
        transports: Sequence[Transport] = (),
        *,
        lock: IO[str] | None = None,
    ) -> None:
        self.paths = paths
        self.config = config
        self.files = files
        self.name = files.member.name
        self.node_id = files.secrets.node_id
        self.mesh_id = files.genesis.mesh_id
        self.hub = EventHub()
        self.agents = AgentHost(agent_specs(config), on_event=self.hub.publish)
        self.state = StateService(
            secrets=files.secrets,
            mesh_id=files.genesis.mesh_id,
            keys=files.members,
            send=self._send_state,
            peers=lambda: sync_peers(self.remote),
            emit=self.hub.publish,
        )
        self.governance = GovernanceService(
            secrets=files.secrets,
            genesis=files.genesis,
            send=self._send_governance,
            peers=lambda: sync_peers(self.remote),
            emit=self.hub.publish,
        )
        self.events = MeshEvents(
            node_id=self.node_id,
            send_frame=self._send_event,
            alive=lambda: alive_peers(self.remote),
            hub_topics=self.hub.topics,
            to_hub=self.hub.publish,
            names=self._name_of,
            must_arrive_topics=self._must_arrive_topics,
            # On a radio, interest is told every 10 minutes (24 B each), not every 30 s.
            refresh=600.0 if any(_duty_percent(i) for i in config.interfaces) else 30.0,
        )
        self.supervised = Supervised(
            secrets=files.secrets,
            mesh_id=self.mesh_id,
            gov=lambda: self.services.gov,
            host=self.agents,
            sync_now=self.state.sync_now,
        )
        self.event_sources = RuntimeSources(
            self.events, live=lambda: alive_peers(self.remote), name=self.name
        )
        self.hub.taps.append(self.event_sources.tap)
        self.bus = Bus(
            node_id=self.node_id,
            name=self.name,
            agents=WithSuperviseAgent(
                WithEventsAgent(
                    WithStateAgent(self.agents, self.state),
                    self.events,
                    lambda node: self.bus.is_local(node),
                ),
                self.supervised,
            ),
            queue_capacity=config.queue_capacity,
            on_event=self.hub.publish,
        )
        self.bus.halted = self.governance.halted
        self.services = Orchestrator(
            secrets=files.secrets,
            mesh_id=self.mesh_id,
            state=self.state,
            host=self.agents,
            alive=lambda: alive_peers(self.remote),
            alive_generation=lambda: liveness_generation(self.remote),
            names=lambda node_id: self._name_of(node_id),
            name=self.name,
        )
        self.services.request, self.services.error_reply = self.bus.request, self.bus.error_reply
        self.load = LoadMeter(
            agents=self.agents.info,
            queues=self.bus.queue_depths,
            hosted=lambda: self.autoscaler.hosted_here(),
            system=True,
        )
        # The load of other nodes' replicas arrives with their telemetry (`self.telemetry`,
        # set below); this node's own is read now. A replica whose node has not reported yet
        # is missing, and the HPA's missing-metric rules keep it from shrinking the service.
        self.autoscaler = ServiceAutoscaler(
            orch=self.services,
            events=self.events,
            samples=lambda: {**self.telemetry.view.samples, self.node_id: self.load.sample()},
        )
        self.autoscaler.attach()
        self.rules = ReactiveRules(
            orch=self.services, events=self.events, autoscaler=self.autoscaler
        )
        self.tasks = TaskService(
            orch=self.services, state=self.state, events=self.events, request=self.bus.request
        )
        self.autoscaler.ticks.append(
            lambda: self.event_sources.check_queues(self.bus.queue_depths())
        )
        self.telemetry = TelemetryService(
            facts=detect_facts(config.capabilities),
            sample=Sampler(
                self.agents,
                self.services.hosting.loads,
                lambda: sum(self.bus.queue_depths().values()),
                self._airtime_used,
                lambda: self.tasks.counters["done"] + self.tasks.counters["failed"],
            ),
            peers=lambda: alive_peers(self.remote),
            policy=lan_profile(),
        )
        self.services.telemetry = self.telemetry
        self.bus.services = self.services.route
        self.trusted = files.members
        decoder = EnvelopeDecoder(
            mesh_id=self.mesh_id,
            max_bytes=config.max_message_bytes,
            max_ttl=config.max_ttl,
            verify_key_for=self.trusted.get,
        )
        duties = {i.name: d / 100 for i in config.interfaces if (d := _duty_percent(i))}
        self.egress = Egress(
            list(transports),
            lambda interface: duties.get(interface.name),
            background_share=config.background_share,
        )
        self.remote = RemoteRouter(
            node_id=self.node_id,
            transports=transports,
            decoder=decoder,
            local=self.bus.request,
            error_reply=self.bus.error_reply,
            egress=self.egress,
        )
        if transports:
            self.bus.remote = self.remote.request
            self.events.submit = self.remote.submit
        self.remote.frames.on(FRAME_EVENT, self.events.on_frame)
        self.governance.watch(self.trusted.update)
        self.governance.watch(self.state.on_governance)  # after the members: cuts need the fold
        self.governance.watch(self.services.on_governance)
        # Governance enforced: shutdown stops the agents; policy admits critical and guests.
        self.enforcer = GovernanceEnforcer(
            agents=self.agents, role=self.trusted.role, transports=transports, decoders=[decoder]
        )
        self.bus.admit = self.remote.admit = self.enforcer.admit
        self.governance.watch(self.enforcer.on_state)
        self.trusted.on_removed(self._on_revoked)
        self.control = ControlServer(
            paths.socket, self.handle, self.hub, max_frame=config.max_frame_bytes
        )
        self.started_at = time.time()
        self.store: Store | None = None
        self._lock = lock
        self._cancel: trio.CancelScope | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": self._status,
            "agents": lambda params: self.agents.info(),
            "agent_restart": self._agent_restart,
            "peers": self._peers,
            "relays": self._relays,
            "shutdown": self._shutdown,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until SIGINT/SIGTERM or `shutdown`. Raises `AlreadyRunning`, `StoreError`."""
        lock = self._lock or take_lock(self.paths)
        handler = _HubLogHandler(self.hub)
        logging.getLogger().addHandler(handler)
        try:
            # durable: what the node acknowledges survives a power cut (hardware/README.md)
            self.store = await trio.to_thread.run_sync(
                lambda: Store(self.paths.database, durable=True)
            )
            if not self.store.was_clean and self.store.runs > 1:
                log.warning("the previous run did not shut down cleanly")
            await self.state.start(self.store)
            self.supervised.open(self.store)
            await self.governance.start(self.store)
            await wire_invites(self.governance, self.paths, self.remote.transports, self.trusted)
            if self.remote.transports:
                self._wire_delivery(self.store)
            with trio.CancelScope() as self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._watch_signals, nursery.cancel_scope)
                    await nursery.start(self.agents.run)
                    await nursery.start(self.bus.serve)
                    await nursery.start(self.remote.run)
                    await nursery.start(self.state.run)
                    await nursery.start(self.governance.run)
                    await nursery.start(self.services.run)
                    await nursery.start(self.events.run)
                    await nursery.start(self.autoscaler.run)
                    await nursery.start(self.rules.run)
                    await nursery.start(self.tasks.run)
                    if self.remote.transports:
                        # Decided now: a transport knows its interfaces once it runs.
                        self.telemetry.policy = policy_for(list(self.remote.transports))
                        await nursery.start(self.telemetry.run)
                    await nursery.start(self.control.serve)
                    self.started_at = time.time()
                    log.info(
                        "node %s ready: id %s, mesh %s, control socket %s",
                        self.name,
                        self.node_id.hex(),
                        self.mesh_id.hex()[:16],
                        self.paths.socket,
                    )
                    task_status.started()
        finally:
            logging.getLogger().removeHandler(handler)
            if self.store is not None:
                self.store.close()
            lock.close()
            log.info("node %s stopped", self.name)

    def _wire_delivery(self, store: Store) -> None:
        wire_delivery(
            self.remote,
            store,
            secrets=self.files.secrets,
            mesh_id=self.mesh_id,
            keys=self.trusted,
            emit=self.hub.publish,
            policy=RetryPolicy(cap=self.config.retry_cap, handoff_after=self.config.handoff_after),
            liveness_share=self.config.liveness_share,
            announce_share=self.config.announce_share,
            names=self._name_of,
            name=self.name,
            state=self.state,
            governance=self.governance,
        )
        self.telemetry.register_frames(self.remote.frames)
        self.telemetry.send = self._send_telemetry

    def _airtime_used(self) -> list[tuple[str, int]]:
        """Per budgeted interface, the permille of its airtime budget in use (for telemetry)."""
        return [
            (str(a["interface"]) or a["transport"], min(1000, round(a["used_fraction"] * 1000)))
            for a in self.egress.status()
        ]

    async def _send_telemetry(self, node_id: bytes, frame: bytes) -> None:
        # Ephemeral and repeated at the next keepalive: the lowest priority, background share.
        await self.remote.send_frame(node_id, frame, Priority.LOW, background=True)

    async def _send_state(self, node_id: bytes, frame: bytes) -> None:
        # Sync is background traffic: it yields to messages and keeps to its airtime share.
        await self.remote.send_frame(node_id, frame, Priority.NORMAL, background=True)

    async def _send_event(self, node_id: bytes, frame: bytes) -> None:
        # Events are ephemeral background traffic: low priority, shed before anything else.
        await self.remote.send_frame(node_id, frame, Priority.LOW, background=True)

    def _must_arrive_topics(self) -> list[str]:
        gov = self.services.gov  # the newest fold, as the orchestrator keeps it
        topics = gov.policy.get("must_arrive_topics") if gov is not None else None
        return [t for t in topics if isinstance(t, str)] if isinstance(topics, list) else []

    async def _send_governance(self, node_id: bytes, frame: bytes) -> None:
        # Governance is rare and decides who may do what: high priority, never background.
        await self.remote.send_frame(node_id, frame, Priority.HIGH, background=False)

    def _on_revoked(self, node_id: bytes) -> None:
        """A member the fold no longer holds: close every link to it, forget it as a peer."""
        log.warning("node %s is no longer a member: closing its links", node_id.hex())
        for transport in self.remote.transports:
            transport.forget(node_id)
        if self.remote.liveness is not None:
            self.remote.liveness.forget(node_id)  # gone by decision, not failed
        self.hub.publish("peers", {"event": "peer_revoked", "node_id": node_id.hex()})

    def _node_named(self, name: str) -> bytes | None:
        return next((p.node_id for p in self.remote.peers() if p.name == name), None)

    def _name_of(self, node_id: bytes) -> str | None:
        return next((p.name for p in self.remote.peers() if p.node_id == node_id), None)

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                scope.cancel()
                return

    def _shutdown(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self._cancel is not None
        # Cancel after this reply is written: the server sends replies before the next checkpoint.
        trio.lowlevel.current_trio_token().run_sync_soon(self._cancel.cancel)
        return {"stopping": True, "pid": os.getpid()}

    async def handle(self, method: str, params: dict[str, Any]) -> Any:
        """The control socket's handler for every method the server does not answer itself."""
        if method == "send":
            return await self._send(params)
        if method == "outbox":
            return await trio.to_thread.run_sync(self._outbox, params)
        if method.startswith("state_"):
            return await state_method(self.state, method, params, self._name_of)
        if method == "supervise":
            return await self._supervise(params)
        if method in TASK_METHODS:
            return await tasks_method(self.tasks, method, params)
        if method in EVENT_METHODS:
            return events_method(self.events, method, params)
        if method in SERVICE_METHODS:
            return await services_method(self.services, method, params)
        if method in GOV_METHODS:
            return await governance_method(
                self.governance,
                method,
                params,
                cut_for=self.state.revocation_cut,
                node_named=self._node_named,
            )
        if method in INVITE_METHODS:
            return await invite_method(
                self.governance, self.paths, self.config, self.files.genesis, method, params
            )
        if method == "ping_node":
            return await self._ping(params)
        fn = self._methods.get(method)
        if fn is None:
            raise ControlError("unknown_method", f"unknown method {method!r}")
        return fn(params)

    async def _supervise(self, params: dict[str, Any]) -> Any:
        """Sign a supervisor command and send it to the node's `supervise` agent."""
        node, action = params.get("node"), params.get("action")
        args = params.get("args") or {}
        if not isinstance(node, str) or not isinstance(action, str) or not isinstance(args, dict):
            raise ControlError("bad_request", "supervise: give node, action and args")
        node_id = bytes.fromhex(node) if len(node) == 32 and _is_hex(node) else None
        node_id = node_id or (self.node_id if node == self.name else self._node_named(node))
        if node_id is None:
            raise ControlError("unknown_node", f"no node {node!r} is known")
        try:
            text = self.supervised.sign(node_id, action, args)
        except KaiMeshError as exc:
            raise ControlError("bad_request", str(exc)) from None
        message = new_message(
            sender=AgentAddress(NodeRef(node_id=self.node_id), "control"),
            to=AgentAddress(NodeRef(node_id=node_id), "supervise"),
            intent="command",
            payload={"command": text},
            priority=Priority.HIGH,
            ttl=300,
            max_ttl=self.config.max_ttl,
        )
        reply = await self.bus.request(message, 30.0)
        if reply.intent == "error":
            raise ControlError(reply.payload["code"], reply.payload["message"])
        return reply.payload

    def _status(self, params: dict[str, Any]) -> dict[str, Any]:
        refused = {f"control.{k}": v for k, v in self.control.refused.items()}
        refused.update(self.remote.refused)
        liveness = self.remote.liveness
        if liveness is not None:
            refused.update(liveness.refused)
        for transport in self.remote.transports:
            counters = transport.counters()
            refused.update(
                {f"{transport.name}.{k}": v for k, v in counters.items() if k in REFUSALS}
            )
        return {
            "version": kai_mesh.__version__,
            "pid": os.getpid(),
            "name": self.name,
            "node_id": self.node_id.hex(),
            "mesh_id": self.mesh_id.hex(),
            "mesh_name": self.files.genesis.mesh_name,
            "shape": self._shape(),
            "admins": len(self.files.genesis.admins),
            "threshold": self.files.genesis.threshold,
            "uptime_s": round(time.time() - self.started_at, 3),
            "rss_bytes": psutil.Process().memory_info().rss,
            "agents": [
                {"name": a["name"], "state": a["state"], "restarts": a["restarts"]}
                for a in self.agents.info()
            ],
            "transports": self.remote.status(),
            "remote": self.remote.counters,
            "bus": {**self.bus.counters, "queued": self.bus.queue_depths()},
            "refused": refused,
            "airtime": self.egress.status(),
            "outbox": self._outbox_summary(),
            "state": self.state.status(),
            "events": self.events.status(),
            "autoscaler": self.autoscaler.status(),
            "rules": {**self.rules.counters, "recent": self.rules.fired},
            "supervision": self.supervised.status(),
            "tasks": self.tasks.status(),
            "telemetry": self.telemetry.status(),
            "governance": self.governance.status(),
            "liveness": None
            if liveness is None
            else {
                "heartbeat_interval_s": round(liveness.heartbeat_interval, 3),
                "local_health": liveness.detector.local_health,
                "incarnation": liveness.detector.incarnation,
                "peers": liveness.statuses(),
                **liveness.counters,
            },
            "control_clients": self.control.clients,
            "home": str(self.paths.config_file.parent),
            "socket": str(self.paths.socket),
        }

    def _shape(self) -> str:
        """The mesh's shape (DESIGN.md) as this node sees it: `federated` with a Nostr transport;
        `local` without transports (a mesh of one); `supervised` when one admin, not this node,
        decides alone (1 of 1); else `edge`."""
        names = {t.name for t in self.remote.transports}
        if "nostr" in names:
            return "federated"
        if not names:
            return "local"
        admins = self.files.genesis.admins
        if len(admins) == 1 and admins[0] != self.files.secrets.verify_key:
            return "supervised"  # one admin is a 1-of-1 threshold (check_quorum)
        return "edge"

    def _agent_restart(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise ControlError("bad_params", "agent_restart: give the agent's name")
        try:
            return self.agents.restart(name)
        except AgentError as exc:
            raise ControlError(exc.code, str(exc)) from None

    async def _send(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message_from(params)
        timeout = params.get("timeout")
        if timeout is not None and (
            not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0
        ):
            raise ControlError("bad_request", "timeout: expected finite, positive seconds")
        durable = params.get("must_arrive", False)
        if not isinstance(durable, bool):
            raise ControlError("bad_request", "must_arrive: expected true or false")
        to = message.to
        remote = isinstance(to, AgentAddress) and not self.bus.is_local(to.node)
        # Without transports there is no outbox: the bus says the node is unknown, as always.
        remote = remote and self.remote.outbox is not None
        if remote and (durable or message.intent in self.config.must_arrive):
            # The outbox skips the bus, so this node's own role is checked here, before commit.
            forbidden = self.enforcer.admit(self.node_id, message.priority)
            if forbidden is not None:
                raise ControlError("forbidden", forbidden)
            try:
                return await self.remote.submit(message)
            except UsageError as exc:
                raise ControlError("unknown_node", str(exc)) from None
            except KaiMeshError as exc:
                raise ControlError("unavailable", str(exc)) from None
        started = time.perf_counter()
        reply = await self.bus.request(message, timeout)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        if reply.intent == "error":
            raise ControlError(reply.payload["code"], reply.payload["message"])
        return {
            "from": str(reply.sender),
            "intent": reply.intent,
            "payload": reply.payload,
            "message_id": message.message_id.hex(),
            "reply_id": reply.message_id.hex(),
            "elapsed_ms": elapsed_ms,
        }

    def _peers(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        now = trio.current_time()
        liveness = self.remote.liveness
        out = []
        for transport, peer in (
            (t, p) for t in self.remote.transports for p in t.peers()
        ):  # the same walk as `remote.peers()`, keeping which transport heard each
            state = liveness.state(peer.node_id) if liveness is not None else None
            heard = liveness.heard_at(peer.node_id) if liveness is not None else None
            last_heard = max(peer.last_heard, heard or peer.last_heard)
            out.append(
                {
                    "name": peer.name,
                    "node_id": peer.node_id.hex(),
                    "hops": peer.hops,
                    "transport": transport.name,
                    "interface": peer.interface,
                    "last_heard_s_ago": round(now - last_heard, 1),
                    "rtt_ms": None if peer.rtt is None else round(peer.rtt * 1000, 2),
                    "status": None if state is None else state["status"],
                    "since": None if state is None else state["since"],
                }
            )
        return out

    def _relays(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Each Nostr relay's state (`kai-mesh relays status`)."""
        out: list[dict[str, Any]] = []
        for transport in self.remote.transports:
            if transport.name == "nostr":
                out += transport.describe().get("relays", [])
        return out

    def _outbox_summary(self) -> dict[str, Any] | None:
        outbox = self.remote.outbox
        if outbox is None:
            return None
        return {"waiting": outbox.waiting(), **outbox.counters}

    def _outbox(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The outbox's rows, newest last; `all` includes finished ones (runs in a thread)."""
        if self.store is None:
            return []
        state = None if params.get("all") else "waiting"
        now = time.time()
        rows = [_outbox_row(row, now) for row in self.store.outbox_rows(state=state)]
        outbox = self.remote.outbox
        for row in rows:
            row["sending"] = outbox is not None and outbox.sending(bytes.fromhex(row["message_id"]))
        return rows

    async def _ping(self, params: dict[str, Any]) -> dict[str, Any]:
        node = params.get("node")
        if not isinstance(node, str) or not node:
            raise ControlError("bad_request", "ping: give a node name or id")
        try:
            result, node_id = await self.remote.ping(node)
        except UsageError as exc:
            raise ControlError("unknown_node", str(exc)) from None
        except TransportError as exc:
            raise ControlError("unreachable", str(exc)) from None
        return {
            "node_id": node_id.hex(),
            "rtt_ms": round(result.rtt * 1000, 3),
            "hops": result.hops,
        }

    def _message_from(self, params: dict[str, Any]) -> StandardMessage:
        try:
            to = parse_address(params.get("to"))  # type: ignore[arg-type]
            priority = Priority.parse(str(params.get("priority", "normal")))
            ttl = params.get("ttl", self.config.default_ttl)
            if type(ttl) is not int or ttl <= 0:
                raise UsageError("ttl: expected a positive whole number of seconds")
            context = params.get("context") or {}
            return new_message(
                sender=AgentAddress(NodeRef(node_id=self.node_id), "control"),
                to=to,
                intent=str(params.get("intent", "")),
                payload=params.get("payload"),
                priority=priority,
                ttl=ttl,
                max_ttl=self.config.max_ttl,
                context=context,
            )
        except (AddressError, UsageError, KaiMeshError) as exc:
            raise ControlError("bad_request", str(exc)) from None


def _outbox_row(row: OutboxRow, now: float) -> dict[str, Any]:
    reply = None
    if row.reply is not None:
        try:
            reply = unpack_exact(row.reply, len(row.reply))
        except KaiMeshError:
            reply = {"undecodable": row.reply.hex()}
    return {
        "message_id": row.message_id.hex(),
        "to": row.destination,
        "node_id": row.node_id.hex(),
        "intent": row.intent,
        "priority": Priority(row.priority).name.lower(),
        "state": row.state,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "handed_off": row.handed_off,
        "age_s": round(now - row.created_at, 1),
        "expires_in_s": row.expires_at - int(now),
        "done_after_s": None if row.done_at is None else round(row.done_at - row.created_at, 3),
        "reply": reply,
    }


def _duty_percent(interface: InterfaceConfig) -> float | None:
    """The interface's airtime budget in percent: `duty_cycle`, else an RNode's own
    `airtime_limit_long` (hardware/rnode/*.toml), else None (the egress default)."""
    if interface.duty_cycle:
        return interface.duty_cycle
    if isinstance(interface.options, RNodeOptions):
        return interface.options.airtime_limit_long
    return None


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
