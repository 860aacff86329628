"""Governance enforced on a node: an emergency shutdown stops every agent (and holds across a
restart) until a lift; `critical_roles` decides who may send `critical`; guests follow the
policy's `guest_intents`.

Agent hosts run on real time (worker processes), bounded by `trio.fail_after`; the message tests
use trio's autojump clock over the memory transport.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from kai_mesh.agents import AgentRequest
from kai_mesh.config.nodefiles import NodeFiles, write_private
from kai_mesh.config.settings import NodePaths, default_config_text, load_config
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.governance.machine import Governance, GovernanceState
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, Genesis
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets
from kai_mesh.core.messaging.envelope import DEFAULT_MAX_SKEW, EnvelopeDecoder, Priority
from kai_mesh.runtime.agents.host import AgentHost, AgentSpec, AgentsSuspended
from kai_mesh.runtime.governance.policy import GovernanceEnforcer
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.messaging.bus import Bus, new_message
from kai_mesh.runtime.node import Node
from kai_mesh.runtime.store import Store
from tests.runtime.messaging.test_remote import ask, mesh
from transports.memory import LinkProfile, MemoryNetwork

ECHO = AgentSpec(name="echo", source="entry:echo")
BUSY = AgentSpec(name="busy", source="class:tests.runtime.agents_for_tests:BusyAgent", timeout=30)
Events = list[tuple[str, dict[str, Any]]]


def req(payload: Any = 1) -> AgentRequest:
    return AgentRequest(
        intent="echo", payload=payload, context={}, sender="kai://x/test", message_id="00"
    )


def states(host: AgentHost) -> dict[str, str]:
    return {i["name"]: i["state"] for i in host.info()}


async def until(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - no event announces these
            await trio.sleep(0.01)


@asynccontextmanager
async def hosted(host: AgentHost) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        with trio.fail_after(15):
            await nursery.start(host.run)
        yield
        nursery.cancel_scope.cancel()


def new_host(events: Events) -> AgentHost:
    return AgentHost(
        [ECHO, BUSY],
        on_event=lambda topic, data: events.append((topic, data)),
        backoff_initial=0.05,
    )


def fold(**changes: Any) -> GovernanceState:
    """A governance state of a one-admin mesh, with `changes` (policy, shutdown, ...)."""
    admin = NodeSecrets.generate(os.urandom)
    state = Governance(Genesis.of_one(admin, "lab", bytes(16))).state
    return replace(state, **changes)


class FakeAgents:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def suspend(self, reason: str) -> None:
        self.calls.append(f"suspend {reason}")

    def resume(self) -> None:
        self.calls.append("resume")


# ---- emergency shutdown: the agent host ---------------------------------------------------------


async def test_suspend_stops_every_agent_and_resume_starts_them_again() -> None:
    events: Events = []
    host = new_host(events)
    async with hosted(host):
        assert states(host) == {"echo": "ready", "busy": "ready"}
        worker = psutil.Process(next(i["pid"] for i in host.info() if i["name"] == "busy"))
        blocked: list[AgentsSuspended] = []

        async def stuck() -> None:
            try:
                await host.call("busy", req("spin"))
            except AgentsSuspended as exc:
                blocked.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            await until(lambda: any(i["in_flight"] for i in host.info()))
            host.suspend("key leak")
        # The pending call is answered, not left to its timeout; the worker is gone.
        assert blocked and blocked[0].code == "shutdown" and "key leak" in str(blocked[0])
        await until(lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE)
        assert states(host) == {"echo": "stopped", "busy": "stopped"}
        assert all(i["reason"] == "emergency shutdown: key leak" for i in host.info())
        assert host.suspended == "key leak"
        stopped = [d for t, d in events if t == "agents" and d["event"] == "stopped"]
        assert {d["agent"] for d in stopped} == {"echo", "busy"}
        assert all(d["shutdown"] is True and "key leak" in d["reason"] for d in stopped)
        for name in ("echo", "busy"):
            with pytest.raises(AgentsSuspended, match="shut down by governance: key leak"):
                await host.call(name, req())
        await trio.sleep(0.3)  # several backoffs: nothing restarts on its own
        assert states(host) == {"echo": "stopped", "busy": "stopped"}

        events.clear()
        host.resume()
        await until(lambda: states(host) == {"echo": "ready", "busy": "ready"})
        assert await host.call("echo", req(5)) == 5 and await host.call("busy", req(6)) == 6
        kinds = [(d["agent"], d["event"]) for t, d in events if t == "agents"]
        assert ("busy", "resumed") in kinds and ("busy", "ready") in kinds
        assert all(i["restarts"] == 0 for i in host.info())  # a shutdown is not a crash


async def test_a_host_suspended_before_it_runs_starts_no_agent() -> None:
    events: Events = []
    host = new_host(events)
    host.suspend("storm")
    async with hosted(host):
        await trio.sleep(0.2)
        assert states(host) == {"echo": "stopped", "busy": "stopped"}
        assert all(i["pid"] is None for i in host.info())
        assert not [d for _, d in events if d["event"] in ("started", "ready")]
        with pytest.raises(AgentsSuspended):
            await host.call("echo", req())
        host.resume()
        await until(lambda: states(host) == {"echo": "ready", "busy": "ready"})
        assert await host.call("echo", req(1)) == 1


async def test_a_bus_over_a_suspended_host_replies_shutdown() -> None:
    host = AgentHost([ECHO], on_event=lambda topic, data: None)
    bus = Bus(node_id=bytes(16), name="pi1", agents=host, queue_capacity=8, on_event=print)
    async with hosted(host), trio.open_nursery() as nursery:
        await nursery.start(bus.serve)
        message = new_message(
            sender=AgentAddress(NodeRef(node_id=bytes(16)), "cli"),
            to=parse_address("kai://pi1/echo"),
            intent="echo",
            payload=1,
            ttl=60,
            max_ttl=60,
        )
        host.suspend("drill")
        reply = await bus.request(message, 5)
        assert reply.intent == "error" and reply.payload["code"] == "shutdown"
        assert "drill" in reply.payload["message"]
        host.resume()
        await until(lambda: states(host) == {"echo": "ready"})
        assert (await bus.request(message, 5)).payload == 1
        nursery.cancel_scope.cancel()


# ---- emergency shutdown: the governance watch ---------------------------------------------------


def test_the_enforcer_suspends_on_a_shutdown_and_resumes_on_the_lift_once_each() -> None:
    agents = FakeAgents()
    enforcer = GovernanceEnforcer(agents=agents, role=lambda node_id: None)
    enforcer.on_state(fold())
    enforcer.on_state(fold(shutdown=True, shutdown_reason="key leak"))
    enforcer.on_state(fold(shutdown=True, shutdown_reason="key leak", height=3))
    enforcer.on_state(fold(shutdown=True, shutdown_reason=""))
    enforcer.on_state(fold())
    enforcer.on_state(fold(height=5))
    assert agents.calls == ["suspend key leak", "suspend emergency shutdown", "resume"]


async def test_a_node_restarted_on_a_store_holding_a_shutdown_keeps_its_agents_stopped(
    tmp_path: Path,
) -> None:
    admin = NodeSecrets.generate(os.urandom)
    genesis = Genesis.of_one(admin, "lab", os.urandom(16))

    def service() -> GovernanceService:
        async def send(node_id: bytes, frame: bytes) -> None:
            pass

        return GovernanceService(
            secrets=admin, genesis=genesis, send=send, peers=list, emit=lambda t, d: None
        )

    store = Store(tmp_path / "node.db")
    first = service()
    await first.start(store)
    await first.propose("emergency_shutdown", {"reason": "key leak"})
    store.close()

    # The node's order: the fold is rebuilt from the store before the agents run.
    events: Events = []
    host = new_host(events)
    store = Store(tmp_path / "node.db")
    gov = service()
    enforcer = GovernanceEnforcer(agents=host, role=lambda node_id: None)
    gov.watch(enforcer.on_state)
    await gov.start(store)
    async with hosted(host):
        await trio.sleep(0.2)
        assert states(host) == {"echo": "stopped", "busy": "stopped"}
        assert not [d for _, d in events if d["event"] in ("started", "ready")]
        with pytest.raises(AgentsSuspended, match="key leak"):
            await host.call("echo", req())
        await gov.propose("shutdown_lift", {})
        await until(lambda: states(host) == {"echo": "ready", "busy": "ready"})
    store.close()


def _init_node(home: Path) -> NodePaths:
    paths = NodePaths.resolve(home)
    secrets = NodeSecrets.generate(os.urandom)
    genesis = Genesis.of_one(secrets, "lab", os.urandom(16))
    paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    write_private(paths.config_file, default_config_text("pi1", local_only=True).encode())
    NodeFiles(secrets, genesis, MemberRecord.create(secrets, "pi1", genesis.mesh_id)).write(paths)
    return paths


def _node(paths: NodePaths) -> Node:
    return Node(paths, load_config(paths.config_file), NodeFiles.load(paths))


async def _send(node: Node, priority: str = "normal") -> Any:
    params = {"to": "kai://pi1/echo", "intent": "echo", "payload": 1, "priority": priority}
    return await node.handle("send", params)


async def test_a_whole_node_stops_its_agents_on_a_shutdown_and_after_a_restart() -> None:
    # A short home: the control socket's path must fit in sun_path.
    with tempfile.TemporaryDirectory(prefix="km-") as home:
        paths = _init_node(Path(home))
        async with trio.open_nursery() as nursery:
            node = _node(paths)
            with trio.fail_after(15):
                await nursery.start(node.run)
            assert (await _send(node))["payload"] == 1
            await node.governance.propose("emergency_shutdown", {"reason": "key leak"})
            assert {a["state"] for a in node.agents.info()} == {"stopped"}
            with pytest.raises(ControlError) as refused:
                await _send(node)
            assert refused.value.code == "shutdown" and "key leak" in str(refused.value)
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            node = _node(paths)
            with trio.fail_after(15):
                await nursery.start(node.run)
            status = await node.handle("status", {})
            assert {a["state"] for a in status["agents"]} == {"stopped"}
            assert status["governance"]["shutdown_reason"] == "key leak"
            agents = await node.handle("agents", {})
            assert all(a["reason"] == "emergency shutdown: key leak" for a in agents)
            with pytest.raises(ControlError) as refused:
                await _send(node)
            assert refused.value.code == "shutdown"
            await node.governance.propose("shutdown_lift", {})
            await until(lambda: {a["state"] for a in node.agents.info()} == {"ready"})
            assert (await _send(node))["payload"] == 1

            # critical_roles: this node's role ("member") is not allowed, then it is.
            await node.governance.propose("policy_update", {"critical_roles": ["admin"]})
            with pytest.raises(ControlError) as refused:
                await _send(node, "critical")
            assert refused.value.code == "forbidden" and "critical_roles" in str(refused.value)
            assert node.bus.counters["forbidden"] == 1
            assert (await _send(node, "high"))["payload"] == 1
            await node.governance.propose("policy_update", {"critical_roles": ["member"]})
            assert (await _send(node, "critical"))["payload"] == 1
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("wait", [float("nan"), float("inf"), -1, 0, "5"])
async def test_a_send_timeout_that_is_not_a_finite_positive_number_is_a_bad_request(
    tmp_path: Path, wait: object
) -> None:
    node = _node(_init_node(tmp_path))  # refused before anything runs: no need to start it
    params = {"to": "kai://pi1/echo", "intent": "echo", "timeout": wait}
    with pytest.raises(ControlError) as refused:
        await node.handle("send", params)
    assert refused.value.code == "bad_request" and "timeout" in str(refused.value)


# ---- policy: critical_roles ---------------------------------------------------------------------


def test_admit_follows_critical_roles_and_unset_lets_every_member() -> None:
    roles = {b"a" * 16: "admin", b"m" * 16: "member"}
    enforcer = GovernanceEnforcer(agents=FakeAgents(), role=roles.get)
    enforcer.on_state(fold())
    assert all(enforcer.admit(n, Priority.CRITICAL) is None for n in [*roles, b"x" * 16])
    enforcer.on_state(fold(policy={**DEFAULT_POLICY, "critical_roles": ["admin"]}))
    assert enforcer.admit(b"a" * 16, Priority.CRITICAL) is None
    assert enforcer.admit(b"m" * 16, Priority.HIGH) is None
    why = enforcer.admit(b"m" * 16, Priority.CRITICAL)
    assert why is not None and "critical_roles" in why and "'member'" in why and "admin" in why
    assert enforcer.admit(b"x" * 16, Priority.CRITICAL) is not None  # not a member at all
    enforcer.on_state(fold(policy={**DEFAULT_POLICY, "critical_roles": []}))
    assert enforcer.admit(b"a" * 16, Priority.CRITICAL) is not None


async def test_critical_from_a_peer_whose_role_is_not_allowed_is_refused_and_counted(
    autojump_clock: object,
) -> None:
    async with mesh(["a", "b", "c"], LinkProfile(latency=0.02)) as peers:
        a, b, c = peers["a"], peers["b"], peers["c"]  # a line: a - b - c
        roles = {a.node_id: "member", c.node_id: "ops"}
        enforcer = GovernanceEnforcer(agents=FakeAgents(), role=roles.get)
        enforcer.on_state(fold(policy={**DEFAULT_POLICY, "critical_roles": ["ops"]}))
        b.router.admit = enforcer.admit

        critical = replace(ask(a, "kai://b/echo", 1), priority=Priority.CRITICAL)
        reply = await a.bus.request(critical, 10)
        assert reply.intent == "error" and reply.payload["code"] == "forbidden"
        assert "critical_roles" in reply.payload["message"]
        assert a.node_id.hex() in reply.payload["message"]
        assert b.router.refused == {"policy.forbidden": 1}
        assert (await a.bus.request(ask(a, "kai://b/echo", 2), 10)).payload == 2

        allowed = replace(ask(c, "kai://b/echo", 3), priority=Priority.CRITICAL)
        assert (await c.bus.request(allowed, 10)).payload == 3
        assert b.router.refused == {"policy.forbidden": 1}


# ---- policy: guest_intents ----------------------------------------------------------------------


async def test_lxmf_guest_intents_follow_the_policy_live() -> None:
    lxmf = pytest.importorskip("transports.lxmf", reason="LXMF is not installed")
    secrets = NodeSecrets.generate(os.urandom)
    mesh_id = bytes(32)
    transport = lxmf.LxmfTransport(
        storagedir=Path("/nonexistent"),
        rns_private=os.urandom(64),
        mesh_id=mesh_id,
        node_id=secrets.node_id,
        member=MemberRecord.create(secrets, "pi1", mesh_id),
        trusted_keys={},
        guest_intents=["echo", "sysinfo"],
    )
    served: list[str] = []

    async def local(message: Any, within: float | None) -> Any:
        served.append(message.intent)
        return replace(message, intent="reply", payload="ok", reply_to=message.message_id)

    transport.bind_local(local)
    enforcer = GovernanceEnforcer(agents=FakeAgents(), role=lambda n: None, transports=[transport])
    guest = os.urandom(16)

    enforcer.on_state(fold(policy={**DEFAULT_POLICY, "guest_intents": ["digest"]}))
    assert transport.guest_intents == frozenset({"digest"})
    refused = await transport._guest_answer(guest, b"echo echo 1")
    assert refused.startswith("error: refused:") and "digest" in refused
    assert await transport._guest_answer(guest, b"echo digest 1") == '"ok"'
    assert served == ["digest"]

    policy = {k: v for k, v in DEFAULT_POLICY.items() if k != "guest_intents"}
    enforcer.on_state(fold(policy=policy))  # removed from the policy: the configured list
    assert transport.guest_intents == frozenset({"echo", "sysinfo"})
    assert await transport._guest_answer(guest, b"echo echo 1") == '"ok"'


async def test_a_must_arrive_critical_send_is_held_to_critical_roles_before_the_outbox() -> None:
    with tempfile.TemporaryDirectory(prefix="km-") as home:
        paths = _init_node(Path(home))
        files = NodeFiles.load(paths)
        net = MemoryNetwork(seed=3)
        transport = net.transport(files.secrets.node_id, "pi1")
        node = Node(paths, load_config(paths.config_file), files, [transport])
        away = os.urandom(16).hex()  # a node that is not here now: the outbox keeps it
        params = {
            "to": f"kai://{away}/echo",
            "intent": "echo",
            "payload": 1,
            "priority": "critical",
            "must_arrive": True,
        }
        async with trio.open_nursery() as nursery:
            with trio.fail_after(15):
                await nursery.start(node.run)
            await node.governance.propose("policy_update", {"critical_roles": ["admin"]})
            with pytest.raises(ControlError) as refused:
                await node.handle("send", params)
            assert refused.value.code == "forbidden" and "critical_roles" in str(refused.value)
            assert await node.handle("outbox", {"all": True}) == []  # nothing was committed
            await node.governance.propose("policy_update", {"critical_roles": ["member"]})
            queued = await node.handle("send", params)
            assert queued["message_id"]
            assert len(await node.handle("outbox", {"all": True})) == 1
            nursery.cancel_scope.cancel()


def test_max_clock_skew_follows_the_policy_live_and_unset_is_the_default() -> None:
    decoder = EnvelopeDecoder(mesh_id=b"m" * 32, max_bytes=4096, max_ttl=60, verify_key_for={}.get)
    enforcer = GovernanceEnforcer(agents=FakeAgents(), role=lambda n: None, decoders=[decoder])
    enforcer.on_state(fold(policy={**DEFAULT_POLICY, "max_clock_skew": 3600}))
    assert decoder.max_skew == 3600
    enforcer.on_state(fold(policy={**DEFAULT_POLICY, "max_clock_skew": "soon"}))  # hand-made
    assert decoder.max_skew == DEFAULT_MAX_SKEW == 300
    enforcer.on_state(fold(policy={**DEFAULT_POLICY, "max_clock_skew": 60}))
    enforcer.on_state(fold())
    assert decoder.max_skew == DEFAULT_MAX_SKEW
