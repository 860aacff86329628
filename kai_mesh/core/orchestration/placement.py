"""Where a service's replicas run: a pure function of (manifest, live nodes, current placement,
other services' reservations, policy).

The owner calls `place` whenever its inputs change and writes the result if it differs. The rules,
in order:

1. **Eligible nodes** have every capability the manifest requires, a role in `placement.roles`
   and a name in `placement.nodes` (when those are given), are not draining, and the governance
   policy does not forbid the service there (`forbidden_services`, below).
2. **Keep what runs.** A replica on a live, eligible node stays where it is: adding a node moves
   nothing for its own sake (no churn). Replicas beyond the wanted count are trimmed from the most
   crowded node first, then the highest replica number.
3. **Spread asks for a move** only when one node holds two replicas of the service and an eligible
   node with room holds none (the replicas were stacked while nodes were short); then one replica
   per such pair moves. With `spread = false` nothing moves.
4. **Fill** the missing replicas one at a time on the node with room that holds the fewest replicas
   of this service, then the most free cpu after placing, then the highest rendezvous score of
   (service#replica, node) — deterministic, and different replicas prefer different nodes.
   Room means the manifest's cpu and memory fit in what the node advertises minus what is
   reserved there, and the node is below its replica limit. Reservations, not measured load,
   decide (Nomad's model): telemetry informs balancing, not whether a replica fits.

`drain` is `place` with the node marked draining: its replicas are placed elsewhere and reported
as moves (the runtime starts the new replica and waits until it is ready before stopping the old).

Policy: `forbidden_services` is a map from node name (or "*" for every node) to a list of service
names that must not run there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kai_mesh.core.codec import digest
from kai_mesh.core.orchestration.manifest import Manifest

FORBIDDEN_SERVICES = "forbidden_services"
DEFAULT_NODE_REPLICAS = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """A live node as placement sees it: from its member record, config and telemetry."""

    node_id: bytes
    name: str
    role: str | None = None
    capabilities: frozenset[str] = frozenset()
    cpu: float = 1.0  # cores it offers to replicas
    memory_mb: int = 256
    max_replicas: int = DEFAULT_NODE_REPLICAS
    draining: bool = False


@dataclass(frozen=True, slots=True)
class Usage:
    """What is reserved on a node by replicas (of other services, when passed to `place`)."""

    cpu: float = 0.0
    memory_mb: int = 0
    replicas: int = 0

    def plus(self, manifest: Manifest) -> Usage:
        r = manifest.resources
        return Usage(self.cpu + r.cpu, self.memory_mb + r.memory_mb, self.replicas + 1)


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """Replica number `replica` of a service runs on `node`."""

    replica: int
    node: bytes


@dataclass(frozen=True, slots=True)
class Move:
    replica: int
    source: bytes
    target: bytes


@dataclass(frozen=True, slots=True)
class Plan:
    """The placement to write. `started`: new slots; `stopped`: slots that end (trimmed, or
    on a node that is gone or no longer eligible); `moves`: replicas that change node (their new
    slot is in `started` too, the old in `stopped`); `unplaced`: wanted replicas with no room,
    and `why` for them."""

    slots: tuple[Slot, ...]
    started: tuple[Slot, ...] = ()
    stopped: tuple[Slot, ...] = ()
    moves: tuple[Move, ...] = ()
    unplaced: int = 0
    why: str = ""
    changed: bool = field(default=False)


def forbidden(policy: Mapping[str, Any], service: str, node_name: str) -> bool:
    """Whether the policy's `forbidden_services` forbids `service` on `node_name`."""
    table = policy.get(FORBIDDEN_SERVICES)
    if not isinstance(table, Mapping):
        return False
    for key in (node_name, "*"):
        names = table.get(key)
        if isinstance(names, list | tuple) and service in names:
            return True
    return False


def eligible(manifest: Manifest, node: NodeInfo, policy: Mapping[str, Any]) -> bool:
    """Whether `node` may host `manifest` (rule 1), capacity aside."""
    rules = manifest.placement
    return (
        not node.draining
        and set(manifest.capabilities) <= node.capabilities
        and (not rules.roles or node.role in rules.roles)
        and (not rules.nodes or node.name in rules.nodes)
        and not forbidden(policy, manifest.name, node.name)
    )


def fits(manifest: Manifest, node: NodeInfo, used: Usage) -> bool:
    """Whether one more replica of `manifest` fits on `node` with `used` reserved there."""
    r = manifest.resources
    return (
        used.cpu + r.cpu <= node.cpu + 1e-9
        and used.memory_mb + r.memory_mb <= node.memory_mb
        and used.replicas < node.max_replicas
    )


def fit_score(manifest: Manifest, node: NodeInfo, used: Usage) -> float:
    """How well a replica sits on `node`, 0..1: the mean free share of cpu and memory after
    placing it (Nomad's normalized score plays this part in `best_score` reconcile)."""
    r = manifest.resources
    free_cpu = max(0.0, node.cpu - used.cpu - r.cpu) / node.cpu if node.cpu > 0 else 0.0
    free_mem = (
        max(0, node.memory_mb - used.memory_mb - r.memory_mb) / node.memory_mb
        if node.memory_mb > 0
        else 0.0
    )
    return (free_cpu + free_mem) / 2


def usage_by_node(placements: Iterable[tuple[Manifest, Iterable[Slot]]]) -> dict[bytes, Usage]:
    """What the given services' replicas reserve on each node."""
    out: dict[bytes, Usage] = {}
    for manifest, slots in placements:
        for slot in slots:
            out[slot.node] = out.get(slot.node, Usage()).plus(manifest)
    return out


def _hrw(service: str, replica: int, node: bytes) -> bytes:
    return digest("svc-place", f"{service}#{replica}".encode(), b"\x00", node)


def place(
    manifest: Manifest,
    nodes: Mapping[bytes, NodeInfo],
    current: Iterable[Slot],
    *,
    wanted: int | None = None,
    usage: Mapping[bytes, Usage] | None = None,
    policy: Mapping[str, Any] | None = None,
) -> Plan:
    """The placement of `manifest` (see the module docstring).

    `nodes`: the live nodes; `current`: the placement in force; `wanted`: the replica count
    (clamped to the manifest's min..max; default its min); `usage`: reservations of the other
    services by node; `policy`: the governance fold's policy.
    """
    policy = policy or {}
    usage = dict(usage or {})
    low, high = manifest.replicas.min, manifest.replicas.max
    want = low if wanted is None else max(low, min(high, wanted))
    before = tuple(sorted(set(current)))
    ok = {n for n, info in nodes.items() if eligible(manifest, info, policy)}

    kept = [s for s in before if s.node in ok]
    kept = _trim(kept, want)
    used = dict(usage)
    for s in kept:
        used[s.node] = used.get(s.node, Usage()).plus(manifest)
    count = Counter(s.node for s in kept)

    moves: list[Move] = []
    if manifest.placement.spread:
        kept, moves = _spread(manifest, nodes, ok, kept, used, count)

    slots = list(kept)
    taken = {s.replica for s in slots}
    unplaced = 0
    while len(slots) < want:
        replica = min(set(range(len(slots) + 1)) - taken)
        target = _best(manifest, nodes, ok, used, count, replica)
        if target is None:
            unplaced = want - len(slots)
            break
        slots.append(Slot(replica, target))
        taken.add(replica)
        used[target] = used.get(target, Usage()).plus(manifest)
        count[target] += 1

    after = tuple(sorted(slots))
    started = tuple(s for s in after if s not in before)
    stopped = tuple(s for s in before if s not in after)
    why = ""
    if unplaced:
        why = (
            "no eligible node (capabilities, roles, nodes, policy)"
            if not ok
            else "no eligible node has room (cpu, memory, replica limit)"
        )
    return Plan(after, started, stopped, tuple(moves), unplaced, why, after != before)


def drain(
    manifest: Manifest,
    nodes: Mapping[bytes, NodeInfo],
    current: Iterable[Slot],
    node_id: bytes,
    **kwargs: Any,
) -> Plan:
    """`place` with `node_id` draining: its replicas go elsewhere, reported as moves."""
    slots = tuple(current)
    marked = dict(nodes)
    if node_id in marked:
        marked[node_id] = replace(marked[node_id], draining=True)
    plan = place(manifest, marked, slots, **kwargs)
    gone = [s for s in plan.stopped if s.node == node_id]
    fresh = list(plan.started)
    moves = list(plan.moves)
    for old in gone:
        new = next((s for s in fresh if s.replica == old.replica), None)
        if new is None and fresh:
            new = fresh[0]
        if new is not None:
            fresh.remove(new)
            moves.append(Move(old.replica, old.node, new.node))
    return replace(plan, moves=tuple(moves))


def _trim(slots: list[Slot], want: int) -> list[Slot]:
    """Drop the surplus: from the most crowded node first, then the highest replica number."""
    slots = sorted(slots)
    while len(slots) > want:
        count = Counter(s.node for s in slots)
        victim = max(slots, key=lambda s: (count[s.node], s.replica))
        slots.remove(victim)
    return slots


def _best(
    manifest: Manifest,
    nodes: Mapping[bytes, NodeInfo],
    ok: set[bytes],
    used: Mapping[bytes, Usage],
    count: Mapping[bytes, int],
    replica: int,
) -> bytes | None:
    room = [n for n in ok if fits(manifest, nodes[n], used.get(n, Usage()))]
    if not room:
        return None

    def key(n: bytes) -> tuple[int, float, bytes]:
        spread = count.get(n, 0) if manifest.placement.spread else 0
        free = fit_score(manifest, nodes[n], used.get(n, Usage()))
        return (-spread, free, _hrw(manifest.name, replica, n))

    return max(room, key=key)


def _spread(
    manifest: Manifest,
    nodes: Mapping[bytes, NodeInfo],
    ok: set[bytes],
    kept: list[Slot],
    used: dict[bytes, Usage],
    count: Counter[bytes],
) -> tuple[list[Slot], list[Move]]:
    """Rule 3: move one replica off a node holding two or more onto an empty eligible node."""
    moves: list[Move] = []
    while True:
        crowded = [n for n, c in count.items() if c > 1]
        empty = {n for n in ok if count.get(n, 0) == 0}
        if not crowded or not empty:
            return kept, moves
        source = max(crowded, key=lambda n: (count[n], n))
        victim = max(s for s in kept if s.node == source)
        target = _best(manifest, nodes, empty, used, count, victim.replica)
        if target is None:
            return kept, moves
        kept = sorted([s for s in kept if s != victim] + [Slot(victim.replica, target)])
        r = manifest.resources
        u = used[source]
        used[source] = Usage(u.cpu - r.cpu, u.memory_mb - r.memory_mb, u.replicas - 1)
        used[target] = used.get(target, Usage()).plus(manifest)
        count[source] -= 1
        count[target] += 1
        moves.append(Move(victim.replica, source, target))
