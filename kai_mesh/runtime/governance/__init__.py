"""Governance on this node: records, sync, members, policy enforcement, invites."""
