"""The worker process that runs one Python agent behind the JSON-lines protocol.

`python -m kai_mesh.runtime.agents.worker module:Class` imports the class, builds one instance,
says hello on stdout and then serves requests read from stdin, one JSON object per line, replying
on stdout in the same way (the protocol is specified in docs/agents.md). The node kills this
process when a request overruns its timeout, which is the only sure way to stop a synchronous
`while True: pass`; that is the whole point of running an agent here rather than in a thread.

The real stdout is kept for the protocol and fd 1 is pointed at stderr, so an agent that prints
cannot corrupt the stream. With `concurrency` above one, requests are served by a pool of that
many threads; replies may then come back out of order, which the ids allow.

This module imports no trio, so a worker starts quickly; the node also uses `load_class` from here.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

from kai_mesh.agents.base import Agent, AgentRejected, AgentRequest

__all__ = ["load_class", "main"]


def load_class(target: str) -> type[Agent]:
    """Import `module:Class` (Class may be dotted) and check it is an `Agent` subclass.

    Raises `ImportError`, `AttributeError`, or `TypeError` for a target that is not an Agent class.
    """
    module_name, sep, qualname = target.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"{target!r} is not of the form module:Class")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Agent)):
        raise TypeError(f"{target} is not a subclass of kai_mesh.agents.Agent")
    if not getattr(obj, "intents", None):
        raise TypeError(f"{target} declares no intents")
    return obj


class _Replier:
    """Writes whole lines to the protocol stream; the lock keeps pool threads' lines apart."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode() + b"\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()


def _serve(agent: Agent, replier: _Replier, msg: dict[str, Any]) -> None:
    request_id = msg.get("id")
    try:
        request = AgentRequest(
            intent=str(msg["intent"]),
            payload=msg.get("payload"),
            context=msg.get("context") or {},
            sender=str(msg.get("from", "")),
            message_id=str(msg.get("message_id", "")),
        )
        result = agent.handle(request)
    except AgentRejected as exc:
        replier.send({"id": request_id, "error": str(exc), "code": "rejected"})
        return
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
        replier.send({"id": request_id, "error": reason, "code": "agent_error"})
        return
    try:
        replier.send({"id": request_id, "result": result})
    except (TypeError, ValueError) as exc:
        reason = f"result is not a JSON value ({exc})"
        replier.send({"id": request_id, "error": reason, "code": "agent_error"})


def main(argv: list[str] | None = None) -> int:
    """Run the worker; returns the exit status (2 for a bad command line or an unloadable class)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kai_mesh.runtime.agents.worker module:Class", file=sys.stderr)
        return 2
    # Keep the protocol stream to ourselves before the agent's module can print anything.
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        cls = load_class(args[0])
        agent = cls()
    except Exception as exc:
        print(f"cannot start agent {args[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    concurrency = max(1, int(cls.concurrency))
    replier = _Replier(proto_out)
    replier.send(
        {
            "ready": True,
            "name": cls.name,
            "intents": sorted(cls.intents),
            "concurrency": concurrency,
        }
    )
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for raw in sys.stdin.buffer:
            try:
                msg = json.loads(raw)
            except ValueError:
                print(f"ignoring a line that is not JSON: {raw[:80]!r}", file=sys.stderr)
                continue
            if not isinstance(msg, dict):
                continue
            if concurrency == 1:
                _serve(agent, replier, msg)
            else:
                pool.submit(_serve, agent, replier, msg)
    # stdin closed: the node is done with us.
    return 0


if __name__ == "__main__":
    sys.exit(main())
