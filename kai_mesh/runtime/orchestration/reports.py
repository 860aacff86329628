"""What `kai-mesh agents --mesh` and `kai-mesh top` show: every replica in the mesh, and every
live node's facts and latest telemetry, as this node sees them (issue 11, item 10)."""

from __future__ import annotations

from typing import Any

import trio

from kai_mesh.runtime.orchestration.service import Orchestrator


def mesh_replicas(orch: Orchestrator) -> list[dict[str, Any]]:
    """One row per placed replica of every active service: service, version, replica, node,
    state, the agent serving it, and its in-flight count (the sender's own, and as its node
    reports it)."""
    rows = []
    for view in orch.services().values():
        if not view.active:
            continue
        shown = orch.describe(view)
        for r in shown["replicas"]:
            node = bytes.fromhex(r["node_id"])
            reported = None
            t = orch.telemetry
            sample = t.load(node) if t is not None and node != orch.node_id else None
            for load in sample.replicas if sample is not None else ():
                if load.ident == (view.name, r["replica"]):
                    reported = load.in_flight
            rows.append(
                {
                    "service": view.name,
                    "version": shown["version"],
                    "replica": r["replica"],
                    "node": r["node"],
                    "node_id": r["node_id"],
                    "state": r["state"],
                    "agent": orch.agent_for(view, node, r["replica"]),
                    "in_flight": r["in_flight"],
                    "reported_in_flight": reported,
                }
            )
    return rows


def top(orch: Orchestrator) -> dict[str, Any]:
    """Every live node: its facts (cpus, memory, capabilities, draining), its latest sample
    (cpu and memory use, replicas, in-flight, queue, served/s, airtime) and how long ago it
    came. This node's own row is its current sample."""
    t = orch.telemetry
    now = trio.current_time()
    rows = []
    for node in orch.live():
        local = node == orch.node_id
        facts = None if t is None else (t.facts if local else t.peer_facts.get(node))
        sample = None
        if t is not None:
            sample = t.current() if local else t.load(node)
        silent = None if t is None or local else t.silent_for(node, now)
        rows.append(
            {
                "node": orch.label(node),
                "node_id": node.hex(),
                "local": local,
                "cpus": facts.cpus if facts else None,
                "memory_mb": facts.memory_mb if facts else None,
                "arch": facts.arch if facts else None,
                "capabilities": sorted(facts.capabilities) if facts else [],
                "draining": bool(facts and facts.draining) or (local and orch.draining),
                "cpu_percent": sample.cpu if sample else None,
                "memory_percent": sample.memory if sample else None,
                "replicas": len(sample.replicas) if sample else 0,
                "in_flight": sum(r.in_flight for r in sample.replicas) if sample else 0,
                "queue": sample.queue if sample else 0,
                "served_per_s": sample.served / 10 if sample else 0.0,
                "errors": sample.errors if sample else 0,
                "airtime_permille": dict(sample.airtime) if sample else {},
                "reported_s_ago": None if silent is None else round(silent, 1),
            }
        )
    return {"nodes": rows, "telemetry": None if t is None else t.status()}
