"""The `echo` agent: replies with the payload it was sent (`echo`), or with its size and SHA-256
(`digest`).

It is the mesh's ping and the bus's benchmark target, so it runs inline in the node's trio task:
it never blocks. `digest` checks that a large payload crossed a slow link intact while only a few
bytes come back: on a radio, an echo of 20 KB costs the airtime twice.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from kai_mesh.agents.base import Agent, AgentRejected, AgentRequest, Isolation

__all__ = ["EchoAgent", "payload_digest"]


class EchoAgent(Agent):
    """Returns the request payload unchanged."""

    name: ClassVar[str] = "echo"
    intents: ClassVar[frozenset[str]] = frozenset({"echo", "digest"})
    isolation: ClassVar[Isolation] = "inline"
    # Inline agents answer synchronously, so this only tells balancers how much it can take.
    concurrency: ClassVar[int] = 64

    def handle(self, request: AgentRequest) -> Any:
        if request.intent == "digest":
            return payload_digest(request.payload)
        return request.payload


def payload_digest(payload: Any) -> dict[str, Any]:
    """Size and SHA-256 of the payload's canonical JSON (sorted keys, no spaces, UTF-8).

    Raises:
        AgentRejected: the payload holds something JSON cannot say (bytes, NaN).
    """
    try:
        text = json.dumps(
            payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise AgentRejected(f"digest takes JSON values: {exc}") from None
    data = text.encode()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
