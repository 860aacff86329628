"""The `[nostr]` section of a node's config: the relays it reaches islands through.

    [nostr]
    relays = ["wss://relay.example", "ws://127.0.0.1:7777"]
    hello_interval = 300

No relays (the default) means no Nostr transport at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kai_mesh.core.errors import ConfigError

MAX_RELAYS = 16


@dataclass(frozen=True)
class NostrSettings:
    """The `[nostr]` section (docs/nostr.md)."""

    relays: tuple[str, ...] = ()
    hello_interval: float = 300.0  # seconds between this node's hellos to the mesh

    @property
    def enabled(self) -> bool:
        return bool(self.relays)


def _relays(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) > MAX_RELAYS:
        return f"expected a list of at most {MAX_RELAYS} relay URLs"
    for url in value:
        if not isinstance(url, str):
            return "expected relay URLs as strings"
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            return f"{url!r} is not a ws:// or wss:// URL"
    if len(set(value)) != len(value):
        return "a relay is listed twice"
    return None


def _interval(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 10 <= value <= 86400
    return None if ok else "expected seconds, 10..86400"


_NOSTR = {"relays": _relays, "hello_interval": _interval}


def parse_nostr(path: Path, table: Any) -> NostrSettings:
    """Check the `[nostr]` table of `path`.

    Raises:
        ConfigError: one line naming the file, `[nostr]`, the key and the problem.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: [nostr] must be a table")
    for key, value in table.items():
        if key not in _NOSTR:
            raise ConfigError(f"{path}: [nostr] {key}: unknown key (known: {', '.join(_NOSTR)})")
        problem = _NOSTR[key](value)
        if problem:
            raise ConfigError(f"{path}: [nostr] {key}: {problem}, got {value!r}")
    return NostrSettings(
        relays=tuple(table.get("relays", ())),
        hello_interval=float(table.get("hello_interval", 300.0)),
    )
