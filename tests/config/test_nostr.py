"""The `[nostr]` config section and the transport it turns on."""

from __future__ import annotations

from pathlib import Path

import pytest

from kai_mesh.config.nostr import write_relays
from kai_mesh.config.settings import default_config_text, load_config
from kai_mesh.core.errors import ConfigError
from kai_mesh.runtime.transports import BUILDERS, enabled_transports


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path)


def with_relays(relays: str, *, local_only: bool = False) -> str:
    text = default_config_text("n", local_only=local_only)
    return text.replace("relays = []", f"relays = {relays}", 1)


def test_default_has_no_relays_and_no_nostr(tmp_path: Path) -> None:
    config = load(tmp_path, default_config_text("n"))
    assert config.nostr.relays == () and not config.nostr.enabled
    assert "nostr" not in enabled_transports(config)


def test_relays_turn_nostr_on_even_without_reticulum(tmp_path: Path) -> None:
    urls = '["wss://relay.example", "ws://127.0.0.1:7777"]'
    config = load(tmp_path, with_relays(urls))
    assert config.nostr.relays == ("wss://relay.example", "ws://127.0.0.1:7777")
    assert enabled_transports(config) == ["reticulum", "lxmf", "nostr"]
    assert enabled_transports(load(tmp_path, with_relays(urls, local_only=True))) == ["nostr"]
    assert "nostr" in BUILDERS


@pytest.mark.parametrize(
    ("relays", "problem"),
    [
        ('["https://relay.example"]', "not a ws:// or wss:// URL"),
        ('["wss://a", "wss://a"]', "listed twice"),
        ("[1]", "as strings"),
        ('"wss://a"', "expected a list"),
    ],
)
def test_bad_relays_name_the_key(tmp_path: Path, relays: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"\[nostr\] relays: .*" + problem):
        load(tmp_path, with_relays(relays))


def test_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[nostr\] relay: unknown key"):
        load(tmp_path, "[nostr]\nrelay = []\n")


def test_gift_wrap_is_off_by_default_and_a_boolean(tmp_path: Path) -> None:
    assert not load(tmp_path, default_config_text("n")).nostr.gift_wrap
    text = default_config_text("n").replace("gift_wrap = false", "gift_wrap = true")
    assert load(tmp_path, text).nostr.gift_wrap
    with pytest.raises(ConfigError, match=r"\[nostr\] gift_wrap: expected true or false"):
        load(tmp_path, "[nostr]\ngift_wrap = 1\n")


def test_a_relay_can_be_read_or_written_only(tmp_path: Path) -> None:
    relays = (
        '["wss://both", {url = "wss://out", marker = "write"}, {url = "wss://in", marker = "read"}]'
    )
    config = load(tmp_path, with_relays(relays))
    assert config.nostr.relays == ("wss://both", "wss://out", "wss://in")
    assert dict(config.nostr.markers) == {"wss://out": "write", "wss://in": "read"}


@pytest.mark.parametrize(
    ("relays", "problem"),
    [
        ('[{url = "wss://a", marker = "both"}]', "marker is 'read' or 'write'"),
        ('[{url = "wss://a", mode = "read"}]', "a relay table is"),
        ('[{marker = "read"}]', "a relay table is"),
        ('["wss://a", {url = "wss://a", marker = "read"}]', "listed twice"),
        ('[{url = "http://a", marker = "read"}]', "not a ws:// or wss:// URL"),
    ],
)
def test_bad_markers_name_the_key(tmp_path: Path, relays: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=r"\[nostr\] relays: .*" + problem):
        load(tmp_path, with_relays(relays))


def test_markers_are_written_back_as_tables(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(default_config_text("n"))
    write_relays(path, ["wss://a", "wss://b"], {"wss://b": "write", "wss://gone": "read"})
    nostr = load_config(path).nostr
    assert nostr.relays == ("wss://a", "wss://b") and dict(nostr.markers) == {"wss://b": "write"}
    with pytest.raises(ConfigError, match="marker"):
        write_relays(path, ["wss://a"], {"wss://a": "sometimes"})
    assert load_config(path).nostr.relays == ("wss://a", "wss://b")  # nothing written
