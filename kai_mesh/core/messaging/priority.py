"""`Priority`, a message's priority.

Its own module so that `kai-mesh send` checks `--priority` without importing the envelope's
signing (nacl, coincurve); `envelope` re-exports it.
"""

from __future__ import annotations

import enum

from kai_mesh.core.errors import UsageError


class Priority(enum.IntEnum):
    """Message priority; a higher value is served first and shed last."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3

    @classmethod
    def parse(cls, text: str) -> Priority:
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(p.name.lower() for p in cls)
            raise UsageError(f"unknown priority {text!r}: use one of {names}") from None
