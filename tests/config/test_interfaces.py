"""Interfaces in config.toml: checked with one-line errors, rendered into a config RNS reads.

The rendered text is parsed back with the ConfigObj that RNS vendors, and the assertions are on
what `RNS.Reticulum` reads from it (`enabled`, `type`, its option names), so a renamed or missing
key fails here instead of silently creating no interface at start.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from RNS.vendor.configobj import ConfigObj

from kai_mesh.config.interfaces import (
    DEFAULT_INTERFACES,
    AutoOptions,
    InterfaceConfig,
    ReticulumSettings,
    RNodeOptions,
    check_rnode_ports,
    parse_interfaces,
    parse_reticulum,
    render_rns_config,
)
from kai_mesh.config.settings import Config, default_config_text, load_config
from kai_mesh.core.errors import ConfigError, TransportError

HARDWARE = Path(__file__).resolve().parents[2] / "hardware" / "rnode"
PATH = Path("/etc/kai-mesh/config.toml")

LORA: dict[str, Any] = {
    "name": "lora",
    "type": "rnode",
    "port": "/dev/ttyUSB0",
    "frequency": 868_300_000,
    "bandwidth": 125_000,
    "spreading_factor": 9,
    "coding_rate": 5,
    "tx_power": 14,
    "airtime_limit_long": 1.0,
    "airtime_limit_short": 10,
}


def rendered(items: list[dict[str, Any]], settings: ReticulumSettings | None = None) -> Any:
    """Parse `items`, render them, and read the text back as RNS does."""
    text = render_rns_config(settings or ReticulumSettings(), parse_interfaces(PATH, items))
    return ConfigObj(text.splitlines())


def test_reticulum_section_always_has_the_silent_trap_settings() -> None:
    config = rendered([], ReticulumSettings(transport=True))
    assert config["reticulum"].as_bool("enable_transport") is True
    assert config["reticulum"].as_bool("share_instance") is False
    assert config["reticulum"].as_bool("panic_on_interface_error") is False
    assert config["logging"]["loglevel"] == "2"
    assert dict(config["interfaces"]) == {}
    assert rendered([])["reticulum"].as_bool("enable_transport") is False
    text = render_rns_config(ReticulumSettings(), (), loglevel=5)
    assert ConfigObj(text.splitlines())["logging"].as_int("loglevel") == 5


@pytest.mark.parametrize(
    ("item", "rns_type", "expected"),
    [
        (
            {"name": "lan", "type": "auto", "group_id": "kai", "devices": ["eth0", "wlan0"]},
            "AutoInterface",
            {"group_id": "kai"},
        ),
        (
            {
                "name": "udp",
                "type": "udp",
                "listen_ip": "0.0.0.0",
                "listen_port": 4242,
                "forward_ip": "10.0.0.255",
                "forward_port": 4242,
            },
            "UDPInterface",
            {"listen_ip": "0.0.0.0", "listen_port": "4242", "forward_ip": "10.0.0.255"},
        ),
        (
            {"name": "hub", "type": "tcp_server", "listen_port": 4242},
            "TCPServerInterface",
            {"listen_ip": "0.0.0.0", "listen_port": "4242"},
        ),
        (
            {"name": "up", "type": "tcp_client", "target_host": "gw.example.org", "target_port": 1},
            "TCPClientInterface",
            {"target_host": "gw.example.org", "target_port": "1"},
        ),
        (
            LORA,
            "RNodeInterface",
            {
                "port": "/dev/ttyUSB0",
                "frequency": "868300000",
                "bandwidth": "125000",
                "spreadingfactor": "9",
                "codingrate": "5",
                "txpower": "14",
                "airtime_limit_long": "1.0",
                "airtime_limit_short": "10",
            },
        ),
    ],
)
def test_each_type_renders_the_options_rns_reads(
    item: dict[str, Any], rns_type: str, expected: dict[str, str]
) -> None:
    section = rendered([item])["interfaces"][item["name"]]
    assert section["type"] == rns_type
    assert section.as_bool("enabled") is True  # without it RNS creates nothing
    assert section.as_bool("ingress_control") is True
    for key, value in expected.items():
        assert section[key] == value, key


def test_auto_lists_and_common_options_survive_the_round_trip() -> None:
    items = [
        {"name": "lan", "type": "auto", "devices": ["eth0", "wlan0"], "ignored_devices": ["lo"]},
        {
            "name": "slow",
            "type": "tcp_client",
            "target_host": "10.0.0.1",
            "target_port": 4242,
            "bitrate": 20_000,
            "ingress_control": False,
            "ifac_netname": "kai mesh, #1",
            "ifac_passphrase": 'it\'s a "secret" # not a comment',
        },
    ]
    interfaces = rendered(items)["interfaces"]
    assert interfaces["lan"].as_list("devices") == ["eth0", "wlan0"]
    assert interfaces["lan"].as_list("ignored_devices") == ["lo"]
    slow = interfaces["slow"]
    assert slow.as_int("bitrate") == 20_000 and slow.as_bool("ingress_control") is False
    assert slow["networkname"] == "kai mesh, #1"
    assert slow["passphrase"] == 'it\'s a "secret" # not a comment'


@pytest.mark.parametrize("secret", ["plain", "a'b", 'a"b', "a'\"b", "ends'\"", "'\"'"])
def test_any_quotable_passphrase_comes_back_unchanged(secret: str) -> None:
    item = {"name": "t", "type": "tcp_server", "listen_port": 1, "ifac_passphrase": secret}
    assert rendered([item])["interfaces"]["t"]["passphrase"] == secret


def test_single_device_is_still_a_list() -> None:
    item = {"name": "lan", "type": "auto", "devices": ["eth0"]}
    assert rendered([item])["interfaces"]["lan"].as_list("devices") == ["eth0"]


def test_disabled_interfaces_are_left_out() -> None:
    items = [{"name": "lan", "type": "auto", "enabled": False}, LORA]
    interfaces = rendered(items)["interfaces"]
    assert list(interfaces) == ["lora"]


def test_parsed_values_are_typed() -> None:
    (lora,) = parse_interfaces(PATH, [LORA])
    assert isinstance(lora.options, RNodeOptions)
    assert lora.options.spreading_factor == 9 and lora.options.airtime_limit_short == 10
    (lan,) = parse_interfaces(PATH, [{"name": "lan", "type": "auto", "devices": ["eth0"]}])
    assert lan.options == AutoOptions(devices=("eth0",))
    assert lan.enabled and lan.ingress_control and lan.bitrate is None


def _with(**changes: Any) -> dict[str, Any]:
    item = {**LORA, **changes}
    return {k: v for k, v in item.items() if v is not None}


@pytest.mark.parametrize(
    ("items", "needle"),
    [
        ([{"type": "auto"}], "[[interfaces]] #1 name: missing required key"),
        ([{"name": "Lora!", "type": "auto"}], "[[interfaces]] #1 name: invalid interface name"),
        ([{"name": 3, "type": "auto"}], "[[interfaces]] #1 name: expected a string"),
        ([{"name": "x"}], '[[interfaces]] "x" type: missing required key'),
        ([{"name": "x", "type": "lora"}], "[[interfaces]] \"x\" type: unknown type 'lora'"),
        ([_with(port=None)], '"lora" port: missing required key for type "rnode"'),
        ([_with(frequency=None)], '"lora" frequency: missing required key'),
        ([_with(freq=1)], '"lora" freq: unknown key for type "rnode"'),
        ([_with(spreading_factor=13)], '"lora" spreading_factor: expected a whole number from 7'),
        ([_with(spreading_factor=6)], '"lora" spreading_factor'),
        ([_with(coding_rate=4)], '"lora" coding_rate: expected a whole number from 5 to 8'),
        ([_with(tx_power=31)], '"lora" tx_power: expected a whole number from 0 to 30 dBm'),
        ([_with(frequency="868.3")], '"lora" frequency: expected a whole number'),
        ([_with(frequency=868.3e6)], '"lora" frequency'),
        ([_with(bandwidth=1000)], '"lora" bandwidth'),
        ([_with(airtime_limit_long=101)], '"lora" airtime_limit_long: expected a percentage'),
        ([_with(airtime_limit_short=True)], '"lora" airtime_limit_short'),
        ([_with(duty_cycle=0)], '"lora" duty_cycle: expected a percentage above 0'),
        ([_with(duty_cycle=150)], '"lora" duty_cycle'),
        ([_with(enabled="yes")], '"lora" enabled: expected true or false'),
        ([_with(bitrate=0)], '"lora" bitrate'),
        ([_with(ingress_control=1)], '"lora" ingress_control'),
        ([_with(ifac_passphrase="")], '"lora" ifac_passphrase: expected a non-empty string'),
        ([_with(ifac_netname="None")], '"lora" ifac_netname'),
        ([_with(ifac_passphrase="a%(b)s")], '"lora" ifac_passphrase: contains characters'),
        ([_with(ifac_passphrase="a\nb")], '"lora" ifac_passphrase'),
        ([LORA, LORA], '"lora" name: duplicate interface name'),
        (
            [{"name": "u", "type": "udp", "listen_ip": "0.0.0.0"}],
            '"u" listen_port: missing required key for type "udp"',
        ),
        (
            [{"name": "u", "type": "tcp_server", "listen_port": 70000}],
            '"u" listen_port: expected a whole number from 1 to 65535',
        ),
        (
            [{"name": "u", "type": "tcp_server", "listen_ip": "any", "listen_port": 1}],
            '"u" listen_ip: expected an IP address',
        ),
        (
            [{"name": "c", "type": "tcp_client", "target_host": "a b", "target_port": 1}],
            '"c" target_host',
        ),
        ([{"name": "a", "type": "auto", "devices": "eth0"}], '"a" devices: expected a list'),
        ([{"name": "a", "type": "auto", "port": "/dev/x"}], '"a" port: unknown key for type'),
        ([3], "[[interfaces]] #1 must be a table"),
    ],
)
def test_bad_interfaces_give_one_line_naming_interface_and_key(items: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_interfaces(PATH, items)
    message = str(info.value)
    assert message.startswith(f"{PATH}: [[interfaces]]"), message
    assert needle in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"enabled": "no"}, "[reticulum] enabled: expected true or false, got 'no'"),
        ({"transport": 1}, "[reticulum] transport: expected true or false"),
        ({"announce_interval": 0}, "[reticulum] announce_interval: expected a positive"),
        ({"announce": 10}, "[reticulum] announce: unknown key"),
        ([], "[reticulum] must be a table"),
    ],
)
def test_bad_reticulum_section_is_one_line(table: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_reticulum(PATH, table)
    assert needle in str(info.value) and str(info.value).startswith(str(PATH))


def test_config_file_sections_reach_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        "[reticulum]\ntransport = true\nannounce_interval = 60\n\n"
        '[[interfaces]]\nname = "hub"\ntype = "tcp_server"\nlisten_port = 4242\n'
    )
    config = load_config(path)
    assert config.reticulum == ReticulumSettings(enabled=True, transport=True, announce_interval=60)
    (hub,) = config.interfaces
    assert hub.name == "hub" and hub.type == "tcp_server"


def test_interfaces_written_as_a_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[interfaces]\nname = "lan"\n')
    with pytest.raises(ConfigError, match=r"must be an array of tables"):
        load_config(path)


def test_no_interfaces_in_the_file_gives_autointerface_lan(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[reticulum]\ntransport = false\n")
    config = load_config(path)
    assert config.interfaces == DEFAULT_INTERFACES
    (lan,) = config.interfaces
    assert (lan.name, lan.type, lan.enabled) == ("lan", "auto", True)
    assert config.reticulum.enabled is True
    assert Config().interfaces == DEFAULT_INTERFACES


def test_local_only_default_text_turns_reticulum_off(tmp_path: Path) -> None:
    off = tomllib.loads(default_config_text("pi", local_only=True))
    assert off["reticulum"]["enabled"] is False
    assert tomllib.loads(default_config_text("pi"))["reticulum"]["enabled"] is True
    path = tmp_path / "config.toml"
    path.write_text(default_config_text("pi", local_only=True))
    config = load_config(path)
    assert config.reticulum.enabled is False
    assert config == Config(name="pi", source=path, reticulum=ReticulumSettings(enabled=False))


def test_commented_examples_in_the_default_text_parse_when_uncommented(tmp_path: Path) -> None:
    lines = default_config_text("pi").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# [[interfaces]]"))
    example = []
    for line in lines[start:]:
        if line.startswith("# [[interfaces]]") or (line.startswith("# ") and " = " in line):
            example.append(line[2:])
    path = tmp_path / "config.toml"
    path.write_text("\n".join(example) + "\n")
    types = {i.type for i in load_config(path).interfaces}
    assert types == {"tcp_client", "tcp_server", "udp", "rnode"}


@pytest.mark.parametrize("path", sorted(HARDWARE.glob("*.toml")), ids=lambda p: p.name)
def test_hardware_rnode_files_parse_and_render(path: Path) -> None:
    data = tomllib.loads(path.read_text())
    assert set(data) == {"interfaces"}, "a snippet holds only [[interfaces]] entries"
    interfaces = parse_interfaces(path, data["interfaces"])
    assert interfaces and all(isinstance(i.options, RNodeOptions) for i in interfaces)
    text = render_rns_config(ReticulumSettings(), interfaces)
    for interface in interfaces:
        section = ConfigObj(text.splitlines())["interfaces"][interface.name]
        assert section["type"] == "RNodeInterface" and section.as_bool("enabled")
        assert isinstance(interface.options, RNodeOptions)
        assert interface.options.airtime_limit_long is not None
        if path.name.startswith("eu868"):
            assert interface.options.tx_power <= 27  # 869.4-869.65 MHz: 500 mW ERP at most


def test_hardware_files_exist() -> None:
    names = {p.name for p in HARDWARE.glob("*.toml")}
    assert {"eu868.toml", "us915.toml"} <= names


def test_eu868_keeps_the_one_percent_duty_cycle() -> None:
    data = tomllib.loads((HARDWARE / "eu868.toml").read_text())
    (lora,) = parse_interfaces(HARDWARE / "eu868.toml", data["interfaces"])
    assert isinstance(lora.options, RNodeOptions)
    assert lora.options.airtime_limit_long == 1.0 and lora.options.tx_power <= 14
    assert 868_000_000 + lora.options.bandwidth // 2 <= lora.options.frequency
    assert lora.options.frequency + lora.options.bandwidth // 2 <= 868_600_000


def test_missing_rnode_port_is_refused_by_name(tmp_path: Path) -> None:
    (lora,) = parse_interfaces(PATH, [_with(port="/dev/ttyUSB9-kai-mesh-test")])
    with pytest.raises(TransportError) as info:
        check_rnode_ports([lora])
    message = str(info.value)
    assert "interface 'lora': serial port /dev/ttyUSB9-kai-mesh-test does not exist" in message
    assert "\n" not in message
    device = tmp_path / "ttyUSB0"
    device.touch()
    (present,) = parse_interfaces(PATH, [_with(port=str(device))])
    (off,) = parse_interfaces(PATH, [_with(name="off", port="/dev/none", enabled=False)])
    (net,) = parse_interfaces(PATH, [_with(name="net", port="tcp://rnode.local")])
    check_rnode_ports([present, off, net, *DEFAULT_INTERFACES])


def test_interfaces_module_does_not_import_rns() -> None:
    source = (
        Path(__file__).resolve().parents[2] / "kai_mesh" / "config" / "interfaces.py"
    ).read_text()
    assert "import RNS" not in source and "from RNS" not in source
    InterfaceConfig(name="x", type="auto", options=AutoOptions())  # constructible without RNS


_RNS_CHILD = """
import json, pathlib, signal, sys
import RNS
r = RNS.Reticulum(configdir=sys.argv[1])
signal.signal(signal.SIGINT, signal.default_int_handler)
seen = [[type(i).__name__, i.name, i.bitrate, i.ingress_control, i.ifac_netname]
        for i in RNS.Transport.interfaces]
result = {"interfaces": sorted(seen), "transport": RNS.Reticulum.transport_enabled(),
          "shared": r.share_instance}
pathlib.Path(sys.argv[1], "result.json").write_text(json.dumps(result))
RNS.Reticulum.exit_handler()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_real_reticulum_creates_the_rendered_interfaces(tmp_path: Path) -> None:
    port = _free_port()
    items = [
        {
            "name": "hub",
            "type": "tcp_server",
            "listen_ip": "127.0.0.1",
            "listen_port": port,
            "ingress_control": False,
            "bitrate": 20_000,
            "ifac_netname": "kai, #1",
        },
        {"name": "off", "type": "tcp_server", "enabled": False, "listen_port": _free_port()},
    ]
    settings = ReticulumSettings(transport=True)
    (tmp_path / "config").write_text(render_rns_config(settings, parse_interfaces(PATH, items)))
    # RNS is one per process and ends in os._exit handlers: give it a process of its own.
    subprocess.run(
        [sys.executable, "-c", _RNS_CHILD, str(tmp_path)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["interfaces"] == [["TCPServerInterface", "hub", 20_000, False, "kai, #1"]]
    assert result["transport"] is True and result["shared"] is False


def test_a_hardware_snippet_appended_to_the_default_file_adds_an_interface(tmp_path: Path) -> None:
    # hardware/README.md tells the operator to append a snippet to the written config.toml.
    path = tmp_path / "config.toml"
    path.write_text(default_config_text("pi") + "\n" + (HARDWARE / "eu868.toml").read_text())
    assert [i.name for i in load_config(path).interfaces] == ["lan", "lora"]


def test_duty_cycle_is_kai_meshs_budget_and_never_reaches_rns() -> None:
    section = rendered([_with(duty_cycle=0.5)])["interfaces"]["lora"]
    assert "duty_cycle" not in section and section["airtime_limit_long"] == "1.0"


@pytest.mark.parametrize("kind", ["[]", '["tcp_server"]', "{ a = 1 }"])
def test_an_interface_type_that_is_a_list_or_table_is_a_config_error(
    tmp_path: Path, kind: str
) -> None:
    """Found by bench/fuzz.py: `type = []` raised TypeError (unhashable) with a traceback."""
    path = tmp_path / "config.toml"
    path.write_text(f'[[interfaces]]\nname = "a"\ntype = {kind}\n')
    with pytest.raises(ConfigError, match="unknown type"):
        load_config(path)
