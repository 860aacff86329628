"""Who owns a service: rendezvous (HRW) hashing, and epochs so a stale owner's write loses.

Ownership without a leader (issue 11, item 4). Every node scores each candidate for a service as
`H(service, node_id)` and the highest score owns it (Thaler and Ravishankar's rendezvous hashing):
no election, no coordination, and every node with the same view of membership names the same
owner. When the owner fails the next node by score simply is the owner; when a node joins it takes
only the services it now scores highest for, about 1/n of them, and nothing else moves (the test
checks both). Candidates are the live nodes allowed to host the service (placement decides who is
allowed: capabilities, roles, names, policy), so a service is never owned by a node that could not
run it.

Only the owner writes a service's placement, and each write carries an `Epoch(counter, owner)`,
totally ordered by counter, then owner id. A new owner writes at one more than the highest counter
it has seen, so its first write outranks everything before it. Views of membership differ for a
while after a failure or a partition, so two nodes may both believe they own a service and both
write; `check_write` refuses a write whose writer is not the owner in the receiver's view or whose
epoch is not above the one in force, and `in_force` picks, from every write a node holds, the
current owner's newest (or, while the owner has written nothing yet, the newest of all). When the
views agree again every node acts on the same write: the stale owner's loses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from kai_mesh.core.codec import digest
from kai_mesh.core.errors import UsageError
from kai_mesh.core.mesh.address import NODE_ID_BYTES


def score(service: str, node_id: bytes) -> int:
    """The rendezvous score of `node_id` for `service`: 64 bits of a domain-tagged SHA-256."""
    return int.from_bytes(digest("svc-owner", service.encode(), b"\x00", node_id)[:8], "big")


def ranking(service: str, candidates: Iterable[bytes]) -> list[bytes]:
    """Candidates by descending score (ties, astronomically rare, by node id): the owner, then
    who owns the service if it fails, and so on."""
    return sorted(set(candidates), key=lambda n: (score(service, n), n), reverse=True)


def owner(service: str, candidates: Iterable[bytes]) -> bytes | None:
    """The owner of `service` among `candidates` (live nodes allowed to host it), or None."""
    best: tuple[int, bytes] | None = None
    for node in candidates:
        key = (score(service, node), node)
        if best is None or key > best:
            best = key
    return None if best is None else best[1]


@dataclass(frozen=True, slots=True, order=True)
class Epoch:
    """A placement write's epoch. Ordered by `counter`, then `owner` (the writer's node id)."""

    counter: int
    owner: bytes

    def __post_init__(self) -> None:
        if type(self.counter) is not int or not 0 <= self.counter < 2**63:
            raise UsageError("epoch counter: an integer 0 <= c < 2**63")
        if type(self.owner) is not bytes or len(self.owner) != NODE_ID_BYTES:
            raise UsageError(f"epoch owner: a {NODE_ID_BYTES}-byte node id")


def next_epoch(seen: Iterable[Epoch], me: bytes) -> Epoch:
    """The epoch of this node's next write: one above the highest counter it has seen."""
    return Epoch(max((e.counter for e in seen), default=0) + 1, me)


class Written(Protocol):
    """Anything that carries an epoch (a placement record)."""

    @property
    def epoch(self) -> Epoch: ...


def check_write(current: Epoch | None, incoming: Epoch, owner_now: bytes | None) -> str | None:
    """Why a write at `incoming` must not replace the one in force at `current`, or None.

    "not_owner": its writer is not the owner in this node's view (a stale owner);
    "stale_epoch": it does not outrank the write in force (late or replayed)."""
    if incoming.owner != owner_now:
        return "not_owner"
    if current is not None and incoming <= current:
        return "stale_epoch"
    return None


W = TypeVar("W", bound=Written)


def in_force(writes: Iterable[W], owner_now: bytes | None) -> W | None:
    """The write to act on: the current owner's newest, else the newest of all (the new owner
    has not written yet, and the last placement stands until it does)."""
    newest: W | None = None
    newest_owned: W | None = None
    for w in writes:
        if newest is None or w.epoch > newest.epoch:
            newest = w
        if w.epoch.owner == owner_now and (newest_owned is None or w.epoch > newest_owned.epoch):
            newest_owned = w
    return newest_owned if newest_owned is not None else newest
