"""The `echo` agent: replies with the payload it was sent.

It is the mesh's ping and the bus's benchmark target, so it runs inline in the node's trio task:
it never blocks and allocates nothing.
"""

from __future__ import annotations

from typing import Any, ClassVar

from kai_mesh.agents.base import Agent, AgentRequest, Isolation

__all__ = ["EchoAgent"]


class EchoAgent(Agent):
    """Returns the request payload unchanged."""

    name: ClassVar[str] = "echo"
    intents: ClassVar[frozenset[str]] = frozenset({"echo"})
    isolation: ClassVar[Isolation] = "inline"
    # Inline agents answer synchronously, so this only tells balancers how much it can take.
    concurrency: ClassVar[int] = 64

    def handle(self, request: AgentRequest) -> Any:
        return request.payload
