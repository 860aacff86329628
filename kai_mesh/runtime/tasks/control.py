"""The control socket's task methods, behind `kai-mesh tasks`:

tasks_submit {capability, intent, payload?, ttl?}   -> the task (its `id`, `state`: open)
tasks_list {}                                       -> {"tasks": [task, ...]}
tasks_show {id}                                     -> the task: state, claimed_by, result
"""

from __future__ import annotations

from typing import Any

from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.tasks.claims import DEFAULT_TTL
from kai_mesh.runtime.tasks.service import TaskService

TASK_METHODS = frozenset({"tasks_submit", "tasks_list", "tasks_show"})


async def tasks_method(tasks: TaskService, method: str, params: dict[str, Any]) -> Any:
    try:
        if method == "tasks_submit":
            return await tasks.submit(
                params.get("capability"),  # type: ignore[arg-type]  # checked by new_spec
                params.get("intent"),  # type: ignore[arg-type]
                params.get("payload"),
                params.get("ttl", DEFAULT_TTL),
            )
        if method == "tasks_list":
            return {"tasks": tasks.list(), "node": tasks.status()}
        if method == "tasks_show":
            return tasks.show(params.get("id"))  # type: ignore[arg-type]  # checked by check_id
    except (UsageError, KaiMeshError) as exc:
        raise ControlError("bad_request", str(exc)) from None
    raise ControlError("unknown_method", f"unknown method {method!r}")
