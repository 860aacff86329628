"""The replicated state's faces: control-socket methods (`kai-mesh state …`) and the `state`
agent every node hosts, so that agents and other nodes read and write shared state by message:

    kai-mesh send kai://pi1/state get '{"path": "shared/notes"}'
    kai-mesh send kai://pi1/state set '{"path": "shared/notes", "value": {"today": "rain"}}'

Changes are announced on the control socket's `state` topic (`kai-mesh events state`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from kai_mesh.agents.base import AgentRequest
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.state import ydoc
from kai_mesh.runtime.agents.runners import AgentRejectedError, UnknownIntent
from kai_mesh.runtime.messaging.bus import AgentDirectory
from kai_mesh.runtime.state.service import StateService

STATE_AGENT = "state"
STATE_INTENTS = frozenset({"get", "set", "delete"})


async def state_method(
    state: StateService,
    method: str,
    params: dict[str, Any],
    names: Callable[[bytes], str | None],
) -> Any:
    """`state_show`, `state_set`, `state_delete`, `state_export`, `state_import`, `state_sync`."""
    try:
        if method == "state_show":
            return {"path": params.get("path") or "", "value": state.read(_path(params, 0))}
        if method == "state_set":
            if "value" not in params:
                raise UsageError("state_set: give a value")
            made = await state.write(_path(params, 2), params["value"])
            return {"changed": made > 0, "status": state.status()}
        if method == "state_delete":
            made = await state.delete(_path(params, 2))
            return {"changed": made > 0}
        if method == "state_export":
            update = state.export_update()
            return {"update": update, "bytes": len(update)}
        if method == "state_import":
            foreign = params.get("update")
            if not isinstance(foreign, bytes):
                raise UsageError("state_import: `update` must be the bytes of a Yjs update")
            made = await state.import_update(foreign)
            return {"changed": made > 0, "status": state.status()}
        if method == "state_sync":
            started = state.sync_now()
            wait = params.get("wait", 2.0)
            if not isinstance(wait, int | float) or not 0 <= wait <= 60:
                raise UsageError("state_sync: wait is 0 to 60 seconds")
            await trio.sleep(wait)  # let the rounds run: the report says what each side lacked
            return {"rounds_started": started, "peers": state.sync_report(names)}
    except (UsageError, KaiMeshError) as exc:
        raise ControlError("bad_request", str(exc)) from None
    raise ControlError("unknown_method", f"unknown method {method!r}")


def _path(params: dict[str, Any], minimum: int) -> tuple[str, ...]:
    text = params.get("path") or ""
    if not isinstance(text, str):
        raise UsageError("path: expected a string such as shared/notes")
    path = ydoc.parse_path(text) if text else ()
    if len(path) < minimum:
        raise UsageError(f"path {text!r}: give a root and a key, e.g. shared/notes")
    return path


class WithStateAgent:
    """The agent host's directory, plus the built-in `state` agent served by this node."""

    def __init__(self, host: AgentDirectory, state: StateService) -> None:
        self._host = host
        self._state = state

    def intents_of(self, name: str) -> frozenset[str] | None:
        return STATE_INTENTS if name == STATE_AGENT else self._host.intents_of(name)

    def concurrency_of(self, name: str) -> int:
        return 8 if name == STATE_AGENT else self._host.concurrency_of(name)

    async def call(self, name: str, request: AgentRequest) -> Any:
        if name != STATE_AGENT:
            return await self._host.call(name, request)
        if request.intent not in STATE_INTENTS:
            raise UnknownIntent(f"state serves {', '.join(sorted(STATE_INTENTS))}")
        params = request.payload if isinstance(request.payload, dict) else {}
        try:
            if request.intent == "get":
                return self._state.read(_path(params, 0))
            if request.intent == "set":
                if "value" not in params:
                    raise UsageError("set: give a value")
                return {"changed": await self._state.write(_path(params, 2), params["value"]) > 0}
            return {"changed": await self._state.delete(_path(params, 2)) > 0}
        except (UsageError, KaiMeshError) as exc:
            raise AgentRejectedError(str(exc)) from None
