"""The governance proposal kinds, by name (`wire` numbers them from 1 on the wire). Their own
module so the `kai-mesh` command lists them in its help without importing the wire codec's keys."""

from __future__ import annotations

KINDS: tuple[str, ...] = (
    "policy_update",
    "node_authorization",
    "node_revocation",
    "admin_change",
    "config_update",
    "emergency_shutdown",
    "shutdown_lift",
)
