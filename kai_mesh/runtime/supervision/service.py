"""A supervisor's commands, carried out on the supervised node (issue 12, supervision).

The supervisor (an admin of the fold: the 1-of-1 admin in the supervised shape) signs a command
(core.supervision.command) and sends it as a message to the node's `supervise` agent::

    kai-mesh supervise pi-gate restart vision      # agent_restart
    kai-mesh supervise pi-gate stop "smoke"        # emergency_stop: every agent stops here
    kai-mesh supervise pi-gate sync                # data_sync: a state reconciliation now
    kai-mesh supervise pi-gate config log_level debug   # config_update

The node judges it (signature, admin of the fold now, for this node, not expired, not seen
before, a known action) and carries it out, or refuses it with the reason; either way it is kept
in `told` (the newest 20), which `kai-mesh status` shows under `supervision` with who
supervises this node. `emergency_stop` here stops this node's agents at once; the mesh-wide,
persisted shutdown remains the governance proposal `emergency_shutdown`. `config_update` applies
the settings a running node can change (`log_level`); others are refused as not runtime settings.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from kai_mesh.agents.base import AgentRequest
from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import KaiMeshError
from kai_mesh.core.governance.fold import GovernanceState
from kai_mesh.core.mesh.identity import NodeSecrets, node_id_of
from kai_mesh.core.supervision.command import Command, CommandJudge, Refusal
from kai_mesh.runtime.agents.host import AgentError, AgentHost
from kai_mesh.runtime.agents.runners import AgentRejectedError, UnknownIntent
from kai_mesh.runtime.messaging.bus import AgentDirectory
from kai_mesh.runtime.store import Store

log = logging.getLogger(__name__)

SUPERVISE_AGENT = "supervise"
LOG_LEVELS = {"debug", "info", "warning", "error"}
TOLD = 20
SEEN_META = "supervise_seen"


class Supervised:
    def __init__(
        self,
        *,
        secrets: NodeSecrets,
        mesh_id: bytes,
        gov: Callable[[], GovernanceState | None],
        host: AgentHost,
        sync_now: Callable[[], object],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._secrets = secrets
        self._mesh_id = mesh_id
        self._gov = gov
        self._host = host
        self._sync_now = sync_now
        self._wall = wall_clock
        self.judge = CommandJudge(secrets.node_id, mesh_id)
        self.told: list[dict[str, Any]] = []
        self.store: Store | None = None  # set by `open`: accepted ids survive a restart

    def open(self, store: Store) -> None:
        """Reload the ids of commands accepted before, so a restart reopens no replay."""
        self.store = store
        raw = store.get_meta(SEEN_META)
        try:
            items = unpack_exact(raw, 64 * 1024) if raw is not None else []
            self.judge.restore((bytes(k), int(t)) for k, t in items)
        except (KaiMeshError, TypeError, ValueError):
            log.warning("the record of accepted supervisor commands is unreadable: ignored")

    # ---- the supervisor's side ---------------------------------------------------------------

    def sign(self, target: bytes, action: str, args: dict[str, Any]) -> str:
        """A signed command for `target`, as base64 text for a message payload."""
        cmd = Command.create(
            self._secrets,
            self._mesh_id,
            action=action,
            target=target,
            args=args,
            now=int(self._wall()),
            nonce=os.urandom(8),
        )
        return base64.b64encode(cmd.to_bytes()).decode()

    # ---- the supervised side -----------------------------------------------------------------

    def receive(self, text: object) -> dict[str, Any]:
        """Judge and carry out a command; the outcome (also kept in `told`)."""
        try:
            data = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            data = b""
        got = self.judge.judge(data, self._gov(), self._wall())
        if isinstance(got, Refusal):
            outcome = {"outcome": "refused", "reason": got.reason, "detail": got.detail}
            self._remember(None, outcome)
            log.warning("supervisor command refused: %s (%s)", got.reason, got.detail)
            return outcome
        if self.store is not None:  # committed before acting: a crash cannot reopen it
            self.store.put_meta(SEEN_META, pack([[k, t] for k, t in self.judge.seen()]))
        try:
            result = self._carry_out(got)
            outcome = {"outcome": "done", "action": got.action, "result": result}
        except (AgentError, KaiMeshError, ValueError) as exc:
            outcome = {"outcome": "failed", "action": got.action, "reason": str(exc)}
        self._remember(got, outcome)
        log.info("supervisor command %s: %s", got.action, outcome["outcome"])
        return outcome

    def _carry_out(self, cmd: Command) -> Any:
        args = cmd.args
        if cmd.action == "agent_restart":
            name = args.get("name")
            if not isinstance(name, str):
                raise ValueError("agent_restart: give the agent's name")
            return self._host.restart(name)
        if cmd.action == "emergency_stop":
            reason = str(args.get("reason") or "emergency stop by the supervisor")
            self._host.suspend(reason)
            return {"stopped": True, "reason": reason}
        if cmd.action == "data_sync":
            return {"rounds_started": self._sync_now()}
        changed = {}
        for key, value in args.items():  # config_update
            if key == "log_level" and value in LOG_LEVELS:
                logging.getLogger().setLevel(str(value).upper())
                changed[key] = value
            else:
                raise ValueError(f"config_update: {key} is not a setting a running node changes")
        return {"changed": changed}

    def _remember(self, cmd: Command | None, outcome: dict[str, Any]) -> None:
        entry = {"at": int(self._wall()), **outcome}
        if cmd is not None:
            entry.update(by=node_id_of(cmd.issuer).hex(), args=dict(cmd.args))
        self.told = [*self.told[-(TOLD - 1) :], entry]

    def status(self) -> dict[str, Any]:
        gov = self._gov()
        admins = gov.admins if gov is not None else ()
        mine = self._secrets.verify_key
        return {
            "supervisors": [node_id_of(k).hex() for k in admins if k != mine],
            "told": list(self.told),
        }


class WithSuperviseAgent:
    """An agent directory, plus the built-in `supervise` agent (intent `command`)."""

    def __init__(self, inner: AgentDirectory, supervised: Supervised) -> None:
        self._inner = inner
        self._supervised = supervised

    def intents_of(self, name: str) -> frozenset[str] | None:
        return frozenset({"command"}) if name == SUPERVISE_AGENT else self._inner.intents_of(name)

    def concurrency_of(self, name: str) -> int:
        return 1 if name == SUPERVISE_AGENT else self._inner.concurrency_of(name)

    async def call(self, name: str, request: AgentRequest) -> Any:
        if name != SUPERVISE_AGENT:
            return await self._inner.call(name, request)
        if request.intent != "command":
            raise UnknownIntent("supervise serves command")
        payload = request.payload if isinstance(request.payload, dict) else {}
        outcome = self._supervised.receive(payload.get("command"))
        if outcome["outcome"] == "refused":
            raise AgentRejectedError(f"{outcome['reason']}: {outcome['detail']}")
        return outcome
