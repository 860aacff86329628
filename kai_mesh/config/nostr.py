"""The `[nostr]` section of a node's config: the relays it reaches islands through.

    [nostr]
    relays = ["wss://relay.example", {url = "ws://127.0.0.1:7777", marker = "write"}]
    hello_interval = 300
    gift_wrap = false

No relays (the default) means no Nostr transport at all. A relay is a URL (read from and written
to), or a table with a NIP-65 `marker`: `"read"` (only subscribed on) or `"write"` (only
published to); `core.nostr.markers`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kai_mesh.core.errors import ConfigError
from kai_mesh.core.nostr.markers import check_marker

MAX_RELAYS = 16


@dataclass(frozen=True)
class NostrSettings:
    """The `[nostr]` section (docs/nostr.md)."""

    relays: tuple[str, ...] = ()
    markers: Mapping[str, str] = field(default_factory=dict)  # url -> "read" | "write"; else both
    hello_interval: float = 300.0  # seconds between this node's hellos to the mesh
    gift_wrap: bool = False  # NIP-59: relays see neither sender nor time (costs ~2-3x bytes)

    @property
    def enabled(self) -> bool:
        return bool(self.relays)


def _entry(item: Any) -> tuple[str, str | None]:
    """(url, marker) of one `relays` entry, which `_relays` checked."""
    if isinstance(item, Mapping):
        return item["url"], item.get("marker")
    return item, None


def _relays(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) > MAX_RELAYS:
        return f"expected a list of at most {MAX_RELAYS} relay URLs"
    urls = []
    for item in value:
        if isinstance(item, Mapping):
            if "url" not in item or not set(item) <= {"url", "marker"}:
                return 'a relay table is {url = "...", marker = "read" | "write"}'
            problem = check_marker(item.get("marker", "read"))
            if problem:
                return problem
        url = item["url"] if isinstance(item, Mapping) else item
        if not isinstance(url, str):
            return "expected relay URLs as strings"
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            return f"{url!r} is not a ws:// or wss:// URL"
        urls.append(url)
    if len(set(urls)) != len(urls):
        return "a relay is listed twice"
    return None


def _interval(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 10 <= value <= 86400
    return None if ok else "expected seconds, 10..86400"


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


_NOSTR = {"relays": _relays, "hello_interval": _interval, "gift_wrap": _bool}


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
    entries = [_entry(item) for item in table.get("relays", ())]
    return NostrSettings(
        relays=tuple(url for url, _ in entries),
        markers={url: marker for url, marker in entries if marker is not None},
        hello_interval=float(table.get("hello_interval", 300.0)),
        gift_wrap=bool(table.get("gift_wrap", False)),
    )


def check_relay_url(url: str) -> str:
    """One relay URL, as `[nostr] relays` takes it.

    Raises:
        ConfigError: not a ws:// or wss:// URL with a host.
    """
    problem = _relays([url])
    if problem:
        raise ConfigError(problem)
    return url


def _toml_list(urls: list[str], markers: Mapping[str, str]) -> str:
    # URLs passed `check_relay_url`: no quotes or backslashes survive urlsplit's host check,
    # but escape anyway so the file is always valid TOML (a JSON string is a TOML one).
    def entry(url: str) -> str:
        marker = markers.get(url)
        if marker is None:
            return json.dumps(url)
        return f"{{url = {json.dumps(url)}, marker = {json.dumps(marker)}}}"

    return "[" + ", ".join(entry(u) for u in urls) + "]"


_SECTION = re.compile(r"^\[nostr\][ \t]*(#.*)?$", re.M)
_NEXT_SECTION = re.compile(r"^\[", re.M)
_RELAYS = re.compile(r"^relays[ \t]*=[ \t]*\[.*?\][ \t]*(#.*)?$", re.M | re.S)


def write_relays(
    config_file: Path, urls: list[str], markers: Mapping[str, str] | None = None
) -> None:
    """Set `[nostr] relays` in `config_file` to `urls` (with their `markers`, if any), keeping
    the rest of the file (comments included): the `relays = [...]` line is replaced, or added
    under `[nostr]`, or a `[nostr]` table is appended. The file is checked after writing; a file
    this kai-mesh would refuse is put back as it was.

    Raises:
        ConfigError: the file cannot be read or written, or would not load.
    """
    from kai_mesh.config.nodefiles import write_private
    from kai_mesh.config.settings import load_config

    markers = {u: m for u, m in (markers or {}).items() if u in urls}
    for url in urls:
        check_relay_url(url)
    for marker in markers.values():
        problem = check_marker(marker)
        if problem:
            raise ConfigError(problem)
    if len(urls) > MAX_RELAYS:
        raise ConfigError(f"at most {MAX_RELAYS} relays")
    try:
        text = config_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{config_file}: cannot read: {exc.strerror}") from None
    line = f"relays = {_toml_list(urls, markers)}"
    section = _SECTION.search(text)
    if section is None:
        new = text.rstrip("\n") + f"\n\n[nostr]\n{line}\n"
    else:
        start = section.end()
        after = _NEXT_SECTION.search(text, start + 1)
        end = after.start() if after else len(text)
        body = text[start:end]
        if _RELAYS.search(body):
            body = _RELAYS.sub(lambda m: line, body, count=1)
        else:
            body = f"\n{line}" + body
        new = text[:start] + body + text[end:]
    write_private(config_file, new.encode())
    try:
        load_config(config_file)
    except ConfigError:
        write_private(config_file, text.encode())
        raise
