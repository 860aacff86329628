"""Config lookup order, defaults, and one-line errors that name the file and the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from kai_mesh.config.settings import Config, NodePaths, default_config_text, load_config
from kai_mesh.core.errors import ConfigError


def test_missing_file_gives_the_offline_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "none.toml")
    assert config.agents == ("echo", "sysinfo") and config.log_level == "info"


def test_the_written_default_parses_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(default_config_text("pi1"))
    config = load_config(path)
    defaults = Config(name="pi1", source=path)
    assert config == defaults
    assert tomllib.loads(default_config_text("x"))["node"]["name"] == "x"


def test_flag_beats_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[node]\nlog_level = "error"\n')
    assert load_config(path).log_level == "error"
    monkeypatch.setenv("KAI_MESH_LOG_LEVEL", "warning")
    assert load_config(path).log_level == "warning"
    assert load_config(path, log_level="debug").log_level == "debug"
    monkeypatch.setenv("KAI_MESH_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match="KAI_MESH_LOG_LEVEL"):
        load_config(path)


def test_home_puts_everything_under_one_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = NodePaths.resolve(tmp_path)
    for p in (paths.config_file, paths.database, paths.socket, paths.secrets):
        assert tmp_path in p.parents
    monkeypatch.setenv("KAI_MESH_HOME", str(tmp_path / "env"))
    assert NodePaths.resolve().data_dir == tmp_path / "env" / "data"
    monkeypatch.delenv("KAI_MESH_HOME")
    assert tmp_path not in NodePaths.resolve().config_file.parents


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[bus]\nqueue_capacity = 0\n", "[bus] queue_capacity: expected a positive whole number"),
        ("[bus]\nqueue_capacity = true\n", "[bus] queue_capacity"),
        ("[agents]\nenabled = 'echo'\n", "[agents] enabled: expected a list"),
        ("[agents]\ntimeout = -1\n", "[agents] timeout"),
        ("node = 1\n", "[node] must be a table"),
        ("[bus]\ndefault_ttl = 10\nmax_ttl = 5\n", "default_ttl is longer than max_ttl"),
        ("[agents.extra.w]\nclass = 'a:B'\ncommand = ['x']\n", "exactly one of class or command"),
        ("[agents.extra.w]\ncommand = ['x']\nisolation = 'vm'\n", "isolation"),
        ("a = \n", "line 1"),
        ("[delivery]\nmust_arrive = 'alarm'\n", "[delivery] must_arrive: expected a list"),
        ("[delivery]\nretry_cap = 0\n", "[delivery] retry_cap: expected a positive number"),
        ("[airtime]\nliveness_share = 1.5\n", "[airtime] liveness_share: expected a share"),
        ("[airtime]\nheartbeat = 3\n", "[airtime] heartbeat: unknown key"),
        ("[control]\nmax_frame_bytes = 2\n", "[control] max_frame_bytes: expected a whole"),
        ("[control]\nmax_frame_bytes = 4294967296\n", "[control] max_frame_bytes: expected"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message


def test_extra_agents_are_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[agents.extra.w]\ncommand = ['./w', '-v']\ntimeout = 2\n")
    (extra,) = load_config(path).extra_agents
    assert (extra.name, extra.command, extra.timeout) == ("w", ("./w", "-v"), 2)


def test_unreadable_bytes_are_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_delivery_and_airtime_settings_are_read(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[delivery]\nmust_arrive = ["alarm"]\nretry_cap = 30\nhandoff_after = 120\n'
        "[airtime]\nliveness_share = 0.1\nannounce_share = 0.02\nbackground_share = 0.5\n"
    )
    config = load_config(path)
    assert config.must_arrive == ("alarm",) and config.retry_cap == 30
    assert config.handoff_after == 120
    assert (config.liveness_share, config.announce_share) == (0.1, 0.02)
    assert config.background_share == 0.5
