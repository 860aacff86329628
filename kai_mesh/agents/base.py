"""What an agent author writes against: `Agent`, `AgentRequest` and `AgentRejected`.

An agent is a plain class with a synchronous `handle(request) -> payload`. It knows nothing of trio,
the bus or the mesh; the runtime (`kai_mesh.runtime.agents.host`) decides where `handle` runs —
in the node's trio task ("inline"), in a worker thread ("thread") or in a worker process
("process") — from the class's `isolation`, and times it out, restarts it and counts its
failures. Keeping the author's side synchronous and dependency-free is what lets the same class
run in any of the three places.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

__all__ = ["Agent", "AgentRejected", "AgentRequest", "Isolation"]

Isolation = Literal["inline", "thread", "process"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRequest:
    """One request handed to `Agent.handle`.

    `payload` is a JSON/msgpack-compatible value (process agents only ever see JSON values),
    `sender` the caller's `kai://` address as text and `message_id` the bus message id in hex.
    """

    intent: str
    payload: Any
    context: Mapping[str, Any]
    sender: str
    message_id: str


class AgentRejected(Exception):
    """Raised by an agent to refuse a request; its text is sent back as the reason.

    Use it for a payload the agent will not serve (wrong shape, out of range). Any other exception
    is reported to the caller as the agent having failed.
    """


class Agent:
    """Base class of every Python agent.

    Subclasses set `name` (the default agent name, as in `kai://node/<name>`), `intents` (the
    intents it serves), `isolation` (where the runtime runs it: "inline" only for trusted code that
    never blocks; "thread" for code that may block but can be trusted with the node's memory;
    "process", the default, for everything else) and `concurrency` (requests served at once).
    The class is constructed with no arguments.
    """

    name: ClassVar[str]
    intents: ClassVar[frozenset[str]]
    isolation: ClassVar[Isolation] = "process"
    concurrency: ClassVar[int] = 1

    def handle(self, request: AgentRequest) -> Any:
        """Serve one request and return the reply payload.

        Raises `AgentRejected` to refuse the request; any other exception is a failure of the
        agent, reported to the caller (the agent itself keeps running).
        """
        raise NotImplementedError
