"""The agent host: round trips, errors, and isolation of agents that raise, block, spin or die.

Subprocess and thread tests run on real time (no autojump clock), bounded by `trio.fail_after`,
with small per-request timeouts and a fast restart backoff.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from kai_mesh.agents import AgentRequest
from kai_mesh.runtime.agents.host import (
    AgentCrashed,
    AgentHost,
    AgentRejectedError,
    AgentSpec,
    AgentTimeout,
    AgentUnavailable,
    NoSuchAgent,
    UnknownIntent,
)

T = "class:tests.runtime.agents_for_tests:"
ECHO = AgentSpec(name="echo", source="entry:echo")
Events = list[tuple[str, dict[str, Any]]]


def req(payload: Any, intent: str = "echo") -> AgentRequest:
    return AgentRequest(
        intent=intent,
        payload=payload,
        context={"priority": 1},
        sender="kai://abcd/test",
        message_id="00ff",
    )


@asynccontextmanager
async def running(specs: Sequence[AgentSpec]) -> AsyncIterator[tuple[AgentHost, Events]]:
    events: Events = []
    host = AgentHost(
        specs, on_event=lambda topic, data: events.append((topic, data)), backoff_initial=0.05
    )
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            await nursery.start(host.run)
        yield host, events
        nursery.cancel_scope.cancel()


def info(host: AgentHost, name: str) -> dict[str, Any]:
    return next(i for i in host.info() if i["name"] == name)


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    """Wait for a condition no event announces (a counter, a process gone), bounded."""
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_echo_runs_inline_and_round_trips() -> None:
    async with running([ECHO]) as (host, events):
        assert await host.call("echo", req({"a": [1, 2]})) == {"a": [1, 2]}
        assert await host.call("echo", req(b"\x00raw")) == b"\x00raw"
        i = info(host, "echo")
        assert (i["state"], i["isolation"], i["served"]) == ("ready", "inline", 2)
        assert host.intents_of("echo") == frozenset({"echo", "digest"})
        assert host.concurrency_of("echo") > 1
        ready = {"event": "ready", "agent": "echo", "intents": ["digest", "echo"], "pid": None}
        assert ("agents", ready) in events


async def test_sysinfo_reports_numbers() -> None:
    async with running([AgentSpec(name="sysinfo", source="entry:sysinfo")]) as (host, _):
        assert info(host, "sysinfo")["isolation"] == "thread"
        snap = await host.call("sysinfo", req(None, "sysinfo"))
    assert set(snap) == {
        "cpu_percent",
        "cpu_count",
        "memory",
        "disk",
        "uptime_s",
        "load_avg",
        "process_rss_bytes",
    }
    assert set(snap["memory"]) == {"total", "available", "percent"}
    assert set(snap["disk"]) == {"total", "free", "percent"}
    assert snap["cpu_count"] >= 1 and snap["memory"]["total"] > 0 and snap["uptime_s"] > 0
    assert len(snap["load_avg"]) == 3 and snap["process_rss_bytes"] > 0
    numbers = [snap["cpu_percent"], snap["uptime_s"], *snap["load_avg"]]
    numbers += [*snap["memory"].values(), *snap["disk"].values(), snap["process_rss_bytes"]]
    assert all(type(x) in (int, float) for x in numbers)


async def test_unknown_agent_and_unknown_intent() -> None:
    async with running([ECHO]) as (host, _):
        with pytest.raises(NoSuchAgent) as no_agent:
            await host.call("nope", req(1))
        with pytest.raises(UnknownIntent, match=r"serves: digest, echo") as no_intent:
            await host.call("echo", req(1, "reverse"))
        assert host.intents_of("nope") is None
        with pytest.raises(NoSuchAgent):
            host.concurrency_of("nope")
    assert (no_agent.value.code, no_intent.value.code) == ("no_such_agent", "unknown_intent")


@pytest.mark.parametrize("isolation", ["inline", "thread", "process"])
async def test_raising_agent_reports_and_keeps_serving(isolation: str) -> None:
    spec = AgentSpec(name="r", source=T + "RaisingAgent", isolation=isolation, timeout=5)
    async with running([spec]) as (host, _):
        with pytest.raises(AgentCrashed, match=r"agent r raised ValueError: boom") as crash:
            await host.call("r", req("boom"))
        assert crash.value.code == "agent_error"
        assert await host.call("r", req("fine")) == "fine"
        i = info(host, "r")
        assert (i["restarts"], i["errors"], i["served"], i["state"]) == (0, 1, 1, "ready")


@pytest.mark.parametrize("isolation", ["thread", "process"])
async def test_rejecting_agent_gives_its_reason(isolation: str) -> None:
    spec = AgentSpec(name="d", source=T + "RejectingAgent", isolation=isolation, timeout=5)
    async with running([spec]) as (host, _):
        with pytest.raises(AgentRejectedError, match=r"^double takes an integer$") as rej:
            await host.call("d", req("x", "double"))
        assert rej.value.code == "rejected"
        assert await host.call("d", req(21, "double")) == 42


async def test_blocked_thread_agent_times_out_without_stalling_the_node() -> None:
    sleepy = AgentSpec(name="sleepy", source=T + "SleepyAgent", timeout=0.5)
    async with running([ECHO, sleepy]) as (host, events):
        assert info(host, "sleepy")["isolation"] == "thread"
        outcome: list[BaseException] = []

        async def blocked() -> None:
            try:
                await host.call("sleepy", req("block"))
            except AgentTimeout as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            started = trio.current_time()
            nursery.start_soon(blocked)
            await until(lambda: info(host, "sleepy")["in_flight"] == 1)
            # The node keeps answering while the agent's thread sleeps.
            with trio.fail_after(0.2):
                assert await host.call("echo", req("still here")) == "still here"
            assert not outcome
        elapsed = trio.current_time() - started
        assert len(outcome) == 1 and 0.4 < elapsed < 2.0
        await until(lambda: info(host, "sleepy")["restarts"] == 1)
        await until(lambda: info(host, "sleepy")["state"] == "ready")
        assert await host.call("sleepy", req("awake")) == "awake"
        assert info(host, "sleepy")["timeouts"] == 1
        restarting = [d for _, d in events if d["event"] == "restarting"]
        assert restarting[0]["agent"] == "sleepy" and "overran" in restarting[0]["reason"]


async def test_spinning_process_agent_is_killed_and_restarted() -> None:
    busy = AgentSpec(name="busy", source=T + "BusyAgent", timeout=0.5)
    async with running([ECHO, busy]) as (host, events):
        pid = info(host, "busy")["pid"]
        assert isinstance(pid, int) and psutil.pid_exists(pid)
        async with trio.open_nursery() as nursery:

            async def spin() -> None:
                with pytest.raises(AgentTimeout, match=r"within 0\.5 s") as exc:
                    await host.call("busy", req("spin"))
                assert exc.value.code == "timeout"

            nursery.start_soon(spin)
            await until(lambda: info(host, "busy")["in_flight"] == 1)
            with trio.fail_after(0.2):
                assert await host.call("echo", req(1)) == 1
        await until(lambda: not psutil.pid_exists(pid), 3)
        await until(lambda: info(host, "busy")["state"] == "ready")
        i = info(host, "busy")
        assert i["restarts"] == 1 and i["pid"] not in (None, pid)
        assert await host.call("busy", req("again")) == "again"
        kinds = [d["event"] for _, d in events if d["agent"] == "busy"]
        assert kinds == ["started", "ready", "restarting", "started", "ready"]


EXTERNAL = """\
import json, sys
print(json.dumps({"ready": True, "name": "upper", "intents": ["upper"]}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if isinstance(req["payload"], str):
        reply = {"id": req["id"], "result": [req["payload"].upper(), req["from"], req["context"]]}
    else:
        reply = {"id": req["id"], "error": "upper takes a string", "code": "rejected"}
    print(json.dumps(reply), flush=True)
"""


async def test_external_json_lines_program_round_trips(tmp_path: Path) -> None:
    script = tmp_path / "upper.py"
    script.write_text(EXTERNAL)
    spec = AgentSpec(name="up", source="command", command=(sys.executable, str(script)))
    async with running([spec]) as (host, _):
        assert host.intents_of("up") == frozenset({"upper"})
        reply = await host.call("up", req("abc", "upper"))
        assert reply == ["ABC", "kai://abcd/test", {"priority": 1}]
        with pytest.raises(AgentRejectedError, match="upper takes a string"):
            await host.call("up", req(3, "upper"))
        with pytest.raises(AgentRejectedError, match="payload holds bytes"):
            await host.call("up", req(b"abc", "upper"))
        with pytest.raises(UnknownIntent):
            await host.call("up", req("abc", "lower"))
        assert (await host.call("up", req("ok", "upper")))[0] == "OK"


MISBEHAVING = """\
import json, sys
print(json.dumps({"ready": True, "intents": ["echo"]}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    if req["payload"] == "garbage":
        print("this is not json", flush=True)
    elif req["payload"] == "huge":
        sys.stdout.write("[" * (5 * 1024 * 1024)); sys.stdout.flush()
    elif req["payload"] == "exit":
        sys.exit(4)
    else:
        print(json.dumps({"id": req["id"], "result": req["payload"]}), flush=True)
"""


@pytest.mark.parametrize("trigger", ["garbage", "huge", "exit"])
async def test_misbehaving_worker_is_restarted(tmp_path: Path, trigger: str) -> None:
    script = tmp_path / "bad.py"
    script.write_text(MISBEHAVING)
    spec = AgentSpec(name="bad", source="command", command=(sys.executable, str(script)), timeout=5)
    async with running([ECHO, spec]) as (host, _):
        with trio.fail_after(3), pytest.raises(AgentCrashed, match="agent bad's worker"):
            await host.call("bad", req(trigger))
        await until(lambda: info(host, "bad")["restarts"] == 1)
        await until(lambda: info(host, "bad")["state"] == "ready")
        assert await host.call("bad", req("fine")) == "fine"
        assert await host.call("echo", req("fine")) == "fine"


async def test_python_worker_that_exits_is_restarted() -> None:
    spec = AgentSpec(name="x", source=T + "ExitingAgent", timeout=5)
    async with running([spec]) as (host, _):
        with pytest.raises(AgentCrashed, match=r"exited with status 3"):
            await host.call("x", req("exit"))
        await until(lambda: info(host, "x")["restarts"] == 1)
        await until(lambda: info(host, "x")["state"] == "ready")
        assert await host.call("x", req("back")) == "back"


async def test_worker_without_hello_restarts_with_growing_backoff(tmp_path: Path) -> None:
    script = tmp_path / "mute.py"
    script.write_text("print('hello? what hello')\n")
    spec = AgentSpec(name="mute", source="command", command=(sys.executable, str(script)))
    async with running([ECHO, spec]) as (host, events):
        with pytest.raises(AgentUnavailable):
            await host.call("mute", req(1))

        def restarting() -> list[dict[str, Any]]:
            return [d for _, d in events if d["event"] == "restarting"]

        await until(lambda: len(restarting()) >= 3)
        backoffs = [d["backoff"] for d in restarting()[:3]]
        assert backoffs == [0.05, 0.1, 0.2]
        assert "not JSON" in restarting()[0]["reason"]
        assert await host.call("echo", req(2)) == 2


async def test_unloadable_agents_fail_and_the_others_run() -> None:
    specs = [
        AgentSpec(name="ghost", source="entry:no-such-agent"),
        AgentSpec(name="broken", source="class:no_such_module_xyz:Agent"),
        AgentSpec(name="nocmd", source="command", command=("/nonexistent/agent-binary",)),
        ECHO,
    ]
    async with running(specs) as (host, events):
        states = {i["name"]: i["state"] for i in host.info()}
        assert states == {"ghost": "failed", "broken": "failed", "nocmd": "failed", "echo": "ready"}
        assert "no entry point 'no-such-agent'" in info(host, "ghost")["reason"]
        assert "ModuleNotFoundError" in info(host, "broken")["reason"]
        failed = {d["agent"] for _, d in events if d["event"] == "failed"}
        assert failed == {"ghost", "broken", "nocmd"}
        with pytest.raises(AgentUnavailable, match="failed"):
            await host.call("ghost", req(1))
        assert await host.call("echo", req(1)) == 1


async def test_cancelling_the_host_kills_worker_processes() -> None:
    busy = AgentSpec(name="busy", source=T + "BusyAgent")
    async with running([busy]) as (host, _):
        pid = info(host, "busy")["pid"]
        assert psutil.pid_exists(pid)
    # `running` cancelled host.run on the way out; the reaper has waited for the process.
    assert not psutil.pid_exists(pid)


def test_echo_digest_is_size_and_sha256_of_canonical_json() -> None:
    import hashlib

    from kai_mesh.agents import AgentRejected
    from kai_mesh.agents.echo import payload_digest

    assert payload_digest({"b": 1, "a": "é"}) == {
        "size": len('{"a":"é","b":1}'.encode()),
        "sha256": hashlib.sha256('{"a":"é","b":1}'.encode()).hexdigest(),
    }
    with pytest.raises(AgentRejected, match="JSON"):
        payload_digest(b"raw bytes")


def test_builtin_agents_are_the_entry_points_this_package_declares() -> None:
    """The host finds its own agents without scanning every distribution; the table must say
    what pyproject.toml's entry points say."""
    import importlib.metadata

    from kai_mesh.runtime.agents.runners import BUILTIN_AGENTS, ENTRY_POINT_GROUP

    ours = {
        ep.name: ep.value
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.value.startswith("kai_mesh.")
    }
    assert ours == BUILTIN_AGENTS
