"""The harness's radio layout from `up`'s options, and the node config it writes (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kai_mesh.config.settings import load_config
from kai_mesh.core.errors import UsageError
from kai_mesh.harness import homes
from kai_mesh.harness.radio import harness as radio

NAMES = ["node1", "node2", "node3", "node4"]


def test_no_radio_options_no_radio() -> None:
    assert radio.plan(NAMES, None) is None
    with pytest.raises(UsageError):
        radio.plan(NAMES, None, hidden="node1:node2")


def test_one_channel_of_everyone() -> None:
    p = radio.plan(NAMES, "long-fast")
    assert p is not None
    assert [(c.name, c.modem, c.nodes) for c in p.channels] == [("ch0", "long-fast", NAMES)]
    assert not p.on_lan("node1") and not p.gateway("node1")


def test_two_channels_a_gateway_and_lan_nodes() -> None:
    p = radio.plan(NAMES, "sf7bw125", ["a=node1,node2", "b=node2,node3@long-fast"], lan=["node3"])
    assert p is not None
    assert [c.modem for c in p.channels] == ["sf7bw125", "long-fast"]
    assert p.gateway("node2")  # on two channels
    assert p.gateway("node3")  # on a channel and the LAN
    assert not p.gateway("node1") and not p.on_lan("node1")
    assert p.on_lan("node4") and not p.gateway("node4")  # on no channel: LAN only
    assert radio.RadioPlan.from_json(p.to_json()) == p


@pytest.mark.parametrize(
    ("channels", "options"),
    [
        (["a=node1,node9"], {}),
        (["a=node1,node1"], {}),
        (["A B=node1"], {}),
        (["a=node1", "a=node2"], {}),
        (["a=node1@sf99bw1"], {}),
        (["a=node1,node2"], {"hidden": "node1:node3"}),
        (["a=node1,node2"], {"lan": ["node4"]}),
        (["a=node1,node2"], {"loss": 100.0}),
    ],
)
def test_refused(channels: list[str], options: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        radio.plan(NAMES, "long-fast", channels, **options)  # type: ignore[arg-type]


def test_node_config_carries_the_pipe_with_the_modem_bitrate(tmp_path: Path) -> None:
    p = radio.plan(NAMES, "long-fast", ["a=node1,node2"], lan=["node2"], hidden="node1:node2")
    assert p is not None
    for name, lan in (("node1", False), ("node2", True)):
        lines = radio.interface_lines(tmp_path, p, name, None)
        text = homes.node_config_text(
            name, transport=p.gateway(name), bitrate=None, lan=lan, radio_lines=lines
        )
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        config = load_config(path)
        kinds = sorted(i.type for i in config.interfaces)
        assert kinds == (["pipe", "udp"] if lan else ["pipe"])
        pipe = next(i for i in config.interfaces if i.type == "pipe")
        assert pipe.bitrate == 1074 and pipe.duty_cycle == 1.0
        assert f"--node {name}" in pipe.options.command  # type: ignore[union-attr]
        assert str(tmp_path / "radio" / "a.sock") in pipe.options.command  # type: ignore[union-attr]
