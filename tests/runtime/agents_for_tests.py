"""Misbehaving agents for tests/runtime/test_agents.py.

They live in an importable module (not the test file) so process workers can import them by
`module:Class` through the PYTHONPATH the host hands down.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from kai_mesh.agents import Agent, AgentRejected, AgentRequest, Isolation


class SleepyAgent(Agent):
    """Blocks in time.sleep(60) on payload "block", else echoes."""

    name: ClassVar[str] = "sleepy"
    intents: ClassVar[frozenset[str]] = frozenset({"echo"})
    isolation: ClassVar[Isolation] = "thread"

    def handle(self, request: AgentRequest) -> Any:
        if request.payload == "block":
            time.sleep(60)
        return request.payload


class BusyAgent(Agent):
    """Spins in `while True: pass` on payload "spin", else echoes. Run it only as a process."""

    name: ClassVar[str] = "busy"
    intents: ClassVar[frozenset[str]] = frozenset({"echo"})
    isolation: ClassVar[Isolation] = "process"

    def handle(self, request: AgentRequest) -> Any:
        if request.payload == "spin":
            while True:
                pass
        return request.payload


class RaisingAgent(Agent):
    """Raises ValueError on payload "boom", else echoes."""

    name: ClassVar[str] = "raising"
    intents: ClassVar[frozenset[str]] = frozenset({"echo"})
    isolation: ClassVar[Isolation] = "thread"

    def handle(self, request: AgentRequest) -> Any:
        if request.payload == "boom":
            raise ValueError("boom")
        return request.payload


class RejectingAgent(Agent):
    """Refuses anything that is not an int."""

    name: ClassVar[str] = "rejecting"
    intents: ClassVar[frozenset[str]] = frozenset({"double"})
    isolation: ClassVar[Isolation] = "process"

    def handle(self, request: AgentRequest) -> Any:
        if not isinstance(request.payload, int):
            raise AgentRejected("double takes an integer")
        return request.payload * 2


class ExitingAgent(Agent):
    """Kills its own worker process on payload "exit", else echoes."""

    name: ClassVar[str] = "exiting"
    intents: ClassVar[frozenset[str]] = frozenset({"echo"})
    isolation: ClassVar[Isolation] = "process"

    def handle(self, request: AgentRequest) -> Any:
        if request.payload == "exit":
            import os

            os._exit(3)
        return request.payload


class SickableEcho(Agent):
    """Echoes; its `ping` health intent fails while the class-wide `sick` is set (every replica
    in the process at once: the orchestration health test needs a sickness that survives the
    node's restarts of the replica)."""

    name: ClassVar[str] = "sickable"
    intents: ClassVar[frozenset[str]] = frozenset({"echo", "ping"})
    isolation: ClassVar[Isolation] = "inline"
    sick: ClassVar[bool] = False

    def handle(self, request: AgentRequest) -> Any:
        if request.intent == "ping":
            if SickableEcho.sick:
                raise AgentRejected("sick")
            return "pong"
        return request.payload
