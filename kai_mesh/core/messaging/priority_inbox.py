"""A bounded inbox ordered by priority, with a shedding rule.

Higher priority is served first; within one priority, first come first served. When the inbox is
full, the newest item of the lowest priority below the newcomer's is shed to make room (it has
waited least), or the newcomer itself if nothing below it is queued. `critical` items are never
shed: they are admitted past the capacity, because dropping them for room is the one thing the
mesh promises not to do. The caller turns every shed item into an error reply to its sender.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from kai_mesh.core.messaging.envelope import Priority

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Shed(Generic[T]):
    """An item refused or evicted for room, and at which priority it was queued."""

    item: T
    priority: Priority


class PriorityInbox(Generic[T]):
    """See the module docstring. All operations are O(number of priorities)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("inbox capacity must be at least 1")
        self.capacity = capacity
        self._queues: dict[Priority, deque[T]] = {p: deque() for p in Priority}
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def depth(self, priority: Priority) -> int:
        return len(self._queues[priority])

    def push(self, item: T, priority: Priority) -> Shed[T] | None:
        """Queue `item`; return what was shed to make room, if anything (maybe `item` itself)."""
        shed: Shed[T] | None = None
        if self._len >= self.capacity and priority is not Priority.CRITICAL:
            victim = self._lowest_below(priority)
            if victim is None:
                return Shed(item, priority)
            shed = Shed(self._queues[victim].pop(), victim)
            self._len -= 1
        elif self._len >= self.capacity:  # critical: make room if we can, else overflow
            victim = self._lowest_below(priority)
            if victim is not None:
                shed = Shed(self._queues[victim].pop(), victim)
                self._len -= 1
        self._queues[priority].append(item)
        self._len += 1
        return shed

    def pop(self) -> tuple[T, Priority] | None:
        """The oldest item of the highest priority, or None when empty."""
        for priority in reversed(Priority):
            queue = self._queues[priority]
            if queue:
                self._len -= 1
                return queue.popleft(), priority
        return None

    def _lowest_below(self, priority: Priority) -> Priority | None:
        for candidate in Priority:
            if candidate >= priority:
                return None
            if self._queues[candidate]:
                return candidate
        return None
