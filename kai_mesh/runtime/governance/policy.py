"""Governance enforced on this node: what the fold decides, applied to agents, messages and guests.

`GovernanceEnforcer` is a watcher of the governance service (`GovernanceService.watch`): it is
called with the fold at start (before any agent runs) and whenever the fold changes, and applies:

- **Emergency shutdown**: a certified `emergency_shutdown` suspends the agent host (every agent
  stopped, calls refused with code `shutdown`); a certified `shutdown_lift` resumes it. The fold
  is rebuilt from the store at start, so a node that starts shut down never starts its agents.
- **`critical_roles`** (policy): the member roles that may send `critical` messages. Unset, every
  member may; an empty list, none. `admit(node_id, priority)` is the check — the bus applies it
  to this node's own sends, the remote router to requests from peers (the link proves who).
- **`max_clock_skew`** (policy): seconds a message's timestamp may be ahead of this node's clock
  before the envelope decoder refuses it (`core.envelope`, default 300); unset, the default.
- **`guest_intents`** (policy): the intents LXMF guests may call. The fold's list replaces the
  transport's configured one, live; unset (removed by a `policy_update`), the configured list
  holds again.

Roles are read at check time from the live member map (runtime/governance/members.py), so an
authorization
or a revocation applies at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from kai_mesh.core.governance.machine import GovernanceState
from kai_mesh.core.messaging.envelope import DEFAULT_MAX_SKEW, EnvelopeDecoder, Priority
from transports.base import Transport

log = logging.getLogger(__name__)

CRITICAL_ROLES = "critical_roles"
GUEST_INTENTS = "guest_intents"
MAX_CLOCK_SKEW = "max_clock_skew"


class Suspendable(Protocol):
    """What the enforcer needs of the agent host (`kai_mesh.runtime.agents.host.AgentHost`)."""

    def suspend(self, reason: str) -> None: ...

    def resume(self) -> None: ...


def _names(value: Any) -> frozenset[str] | None:
    """A policy list of names, or None when unset or not a list of strings (never from a
    validated proposal; a hand-made genesis could hold anything)."""
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(type(v) is str for v in value):
        log.warning("governance policy: ignoring a malformed list %r", value)
        return None
    return frozenset(value)


class GovernanceEnforcer:
    """See the module docstring. Register `on_state` with `GovernanceService.watch`."""

    def __init__(
        self,
        *,
        agents: Suspendable,
        role: Callable[[bytes], str | None],
        transports: Iterable[Transport] = (),
        decoders: Iterable[EnvelopeDecoder] = (),
    ) -> None:
        self._agents = agents
        self._role = role
        self._decoders = list(decoders)
        # Transports that serve guests (LXMF) take the policy's guest intents.
        self._guests: Sequence[Transport] = [t for t in transports if t.abilities.guests]
        self.shutdown: str | None = None  # the reason while a certified shutdown holds
        self.critical_roles: frozenset[str] | None = None  # None: every member may
        self.guest_intents: frozenset[str] | None = None  # None: each transport's configured

    def on_state(self, state: GovernanceState) -> None:
        """Apply the fold: shutdown, critical roles, clock skew, guest intents."""
        self.critical_roles = _names(state.policy.get(CRITICAL_ROLES))
        skew = state.policy.get(MAX_CLOCK_SKEW)
        if skew is not None and (type(skew) is not int or skew < 1):
            log.warning("governance policy: ignoring a malformed max_clock_skew %r", skew)
            skew = None
        for decoder in self._decoders:
            decoder.max_skew = DEFAULT_MAX_SKEW if skew is None else skew
        guests = _names(state.policy.get(GUEST_INTENTS))
        if guests != self.guest_intents:
            self.guest_intents = guests
            for transport in self._guests:
                transport.set_guest_intents(guests)
        reason = (state.shutdown_reason or "emergency shutdown") if state.shutdown else None
        if reason == self.shutdown:
            return
        self.shutdown = reason
        if reason is None:
            log.warning("the emergency shutdown is lifted: starting the agents")
            self._agents.resume()
        else:
            log.warning("emergency shutdown (%s): stopping every agent", reason)
            self._agents.suspend(reason)

    def admit(self, node_id: bytes, priority: Priority) -> str | None:
        """Why a message from `node_id` at `priority` is refused (code `forbidden`), or None."""
        allowed = self.critical_roles
        if priority != Priority.CRITICAL or allowed is None:
            return None
        role = self._role(node_id)
        if role is not None and role in allowed:
            return None
        roles = ", ".join(sorted(allowed)) or "none"
        who = f"role {role!r}" if role is not None else "no member role"
        return (
            f"forbidden by policy critical_roles: node {node_id.hex()} has {who}; "
            f"critical messages may be sent by roles: {roles}"
        )
