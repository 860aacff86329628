"""NIP-65 relay markers: what a node does with one relay.

A relay listed bare is read from and written to; `read` means only subscribed on (this node's
inbox: what others publish there reaches it), `write` means only published to (its outbox:
others read it there). The same words as NIP-65's `["r", url, marker]` tags, so a config, an
invite token and `kai-mesh relays` all say it one way.
"""

from __future__ import annotations

from collections.abc import Mapping

READ = "read"
WRITE = "write"
MARKERS = (READ, WRITE)


def check_marker(marker: object) -> str | None:
    """None when `marker` is a marker, else what is wrong with it (one line)."""
    if marker in MARKERS:
        return None
    return f"a relay marker is {READ!r} or {WRITE!r}, not {marker!r}"


def reads(markers: Mapping[str, str], url: str) -> bool:
    """True when this node subscribes on `url` (bare or `read`)."""
    return markers.get(url) != WRITE


def writes(markers: Mapping[str, str], url: str) -> bool:
    """True when this node publishes to `url` (bare or `write`)."""
    return markers.get(url) != READ


def describe(markers: Mapping[str, str], url: str) -> str:
    """ "read+write", "read" or "write", for people."""
    return markers.get(url) or f"{READ}+{WRITE}"
