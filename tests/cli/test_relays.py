"""`kai-mesh relays list/add/remove` edit `[nostr] relays` in place (comments kept, a bad URL
is one line and exit 2, nothing written); `join` takes an invite token's relays into the config;
`relays status` prints what the node's control method says of each relay."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from kai_mesh.cli.common import ExitCode
from kai_mesh.cli.main import main
from kai_mesh.cli.relays import _line
from kai_mesh.config.settings import NodePaths, load_config
from kai_mesh.core.governance.invite_token import decode_token, encode_token
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from tests.cli.helpers import fresh_home, stop, wait_for_peer
from tests.transports.nostr.conftest import relay_url  # noqa: F401 - the fixture


def init(tmp_path: Path) -> tuple[str, Path]:
    home = str(tmp_path / "home")
    assert main(["--home", home, "init", "--name", "pi1"]) == ExitCode.OK
    return home, NodePaths.resolve(home).config_file


def test_add_list_remove_keep_the_rest_of_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, config_file = init(tmp_path)
    before = config_file.read_text()
    assert main(["--home", home, "relays", "add", "wss://relay.one"]) == ExitCode.OK
    assert main(["--home", home, "relays", "add", "ws://127.0.0.1:7777"]) == ExitCode.OK
    assert main(["--home", home, "relays", "add", "wss://relay.one"]) == ExitCode.OK  # no-op
    capsys.readouterr()
    assert main(["--home", home, "relays", "list", "--json"]) == ExitCode.OK
    out = json.loads(capsys.readouterr().out)
    listed = out["relays"]
    assert listed == ["wss://relay.one", "ws://127.0.0.1:7777"] and out["markers"] == {}
    assert load_config(config_file).nostr.relays == tuple(listed)
    after = config_file.read_text()
    # Only the relays line changed: every comment and setting is still there.
    changed = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(changed) == 1 and changed[0].startswith("relays = [")
    assert main(["--home", home, "relays", "remove", "wss://relay.one"]) == ExitCode.OK
    assert load_config(config_file).nostr.relays == ("ws://127.0.0.1:7777",)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "http://relay.one"], "not a ws:// or wss:// URL"),
        (["add", "wss://"], "not a ws:// or wss:// URL"),
        (["remove", "wss://not.there"], "is not one of this node's relays"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    home, config_file = init(tmp_path)
    before = config_file.read_text()
    capsys.readouterr()
    assert main(["--home", home, "relays", *argv]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert config_file.read_text() == before


def test_a_config_without_a_nostr_table_gets_one(tmp_path: Path) -> None:
    home, config_file = init(tmp_path)
    text = config_file.read_text()
    start = text.index("[nostr]")
    end = text.index("\n[", start + 1) if "\n[" in text[start + 1 :] else len(text)
    config_file.write_text(text[:start] + text[end:])
    assert main(["--home", home, "relays", "add", "wss://relay.one"]) == ExitCode.OK
    assert load_config(config_file).nostr.relays == ("wss://relay.one",)


def test_add_read_or_write_sets_the_marker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, config_file = init(tmp_path)
    assert main(["--home", home, "relays", "add", "wss://out", "--write"]) == ExitCode.OK
    assert main(["--home", home, "relays", "add", "wss://in", "--read"]) == ExitCode.OK
    assert main(["--home", home, "relays", "add", "wss://both"]) == ExitCode.OK
    nostr = load_config(config_file).nostr
    assert nostr.relays == ("wss://out", "wss://in", "wss://both")
    assert dict(nostr.markers) == {"wss://out": "write", "wss://in": "read"}
    capsys.readouterr()
    assert main(["--home", home, "relays", "list"]) == ExitCode.OK
    shown = capsys.readouterr().out.splitlines()
    assert shown == ["wss://out (write)", "wss://in (read)", "wss://both (read+write)"]
    # `add` on a listed relay changes its marker; without a flag it reads and writes again.
    assert main(["--home", home, "relays", "add", "wss://in", "--write"]) == ExitCode.OK
    assert main(["--home", home, "relays", "add", "wss://out"]) == ExitCode.OK
    assert dict(load_config(config_file).nostr.markers) == {"wss://in": "write"}
    assert main(["--home", home, "relays", "remove", "wss://in"]) == ExitCode.OK
    assert dict(load_config(config_file).nostr.markers) == {}
    with pytest.raises(SystemExit) as exc:  # argparse: one or the other
        main(["--home", home, "relays", "add", "wss://x", "--read", "--write"])
    assert exc.value.code == 2


def test_join_takes_the_tokens_relays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    admin = NodeSecrets.generate(os.urandom)
    genesis = Genesis.of_one(admin, "team", os.urandom(16))
    text = encode_token(genesis, os.urandom(32), [], ["wss://relay.one", "wss://relay.two"])
    assert decode_token(text).relays == ("wss://relay.one", "wss://relay.two")
    home = str(tmp_path / "far")
    assert main(["--home", home, "join", text, "--name", "far"]) == ExitCode.OK
    assert "relay wss://relay.one" in capsys.readouterr().out
    config = load_config(NodePaths.resolve(home).config_file)
    assert config.nostr.relays == ("wss://relay.one", "wss://relay.two")
    assert config.nostr.enabled


def test_join_takes_the_tokens_relay_markers(tmp_path: Path) -> None:
    admin = NodeSecrets.generate(os.urandom)
    genesis = Genesis.of_one(admin, "team", os.urandom(16))
    markers = {"wss://relay.two": "write"}
    text = encode_token(
        genesis, os.urandom(32), [], ["wss://relay.one", "wss://relay.two"], markers
    )
    home = str(tmp_path / "far")
    assert main(["--home", home, "join", text, "--name", "far"]) == ExitCode.OK
    config = load_config(NodePaths.resolve(home).config_file)
    assert config.nostr.relays == ("wss://relay.one", "wss://relay.two")
    assert dict(config.nostr.markers) == markers


def test_status_line_says_state_latency_limits_and_refusals() -> None:
    state = {
        "url": "wss://r",
        "connected": True,
        "demoted": False,
        "attempts": 3,
        "successes": 2,
        "latency": 0.0123,
        "max_message_length": 65536,
        "sent": 10,
        "accepted": 9,
        "received": 4,
        "refused": {"rate-limited": 1},
    }
    line = _line(state)
    assert "connected" in line and "12.3 ms" in line and "65536" in line
    assert "rate-limited 1" in line and "connections 2/3" in line
    assert "wss://r: read+write, connected" in line  # a status without markers: both
    write_only = _line({**state, "read": False, "write": True, "connected": False})
    assert "wss://r: write, down" in write_only


def test_status_without_a_node_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home, _ = init(tmp_path)
    assert main(["--home", home, "relays", "status"]) == ExitCode.NOT_RUNNING


def test_two_daemons_with_only_a_relay_between_them(relay_url: str) -> None:  # noqa: F811
    """Real daemons, Reticulum off: they meet through the relay, `relays status` says so, and a
    state write on one is read on the other."""
    from kai_mesh.config.nodefiles import write_private
    from kai_mesh.harness.homes import make_mesh, write_node_files

    genesis, nodes = make_mesh(["east", "west"], "wide")
    with fresh_home() as east, fresh_home() as west:
        for home, keys in zip((east, west), nodes, strict=True):
            paths = NodePaths.resolve(home.path)
            write_node_files(paths, keys.secrets, genesis, keys.member)
            config = (
                f'[node]\nname = "{keys.name}"\n\n[reticulum]\nenabled = false\n\n'
                f'[nostr]\nrelays = ["{relay_url}"]\n'
            )
            write_private(paths.config_file, config.encode())
        procs = [east.start(), west.start()]
        try:
            assert wait_for_peer(east, "west", 20) is not None
            status = east.json("relays", "status")["relays"]
            assert [(r["url"], r["connected"]) for r in status] == [(relay_url, True)]
            assert status[0]["accepted"] > 0
            assert east.run("state", "set", "shared/x", '{"from": "east"}').returncode == 0
            deadline = time.monotonic() + 20
            seen = None
            while time.monotonic() < deadline and seen != {"from": "east"}:
                seen = west.json("state", "show", "shared/x")["value"]
                time.sleep(0.2)
            assert seen == {"from": "east"}
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
                stop(proc)
