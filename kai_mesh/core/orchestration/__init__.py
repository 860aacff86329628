"""Agents as mesh services (issue 11): manifests, ownership, placement, balancing, reconcile,
telemetry. Pure functions and sans-IO machines of (manifests, membership, telemetry, policy, now);
the runtime feeds them and carries out what they decide."""
