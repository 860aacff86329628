"""Reticulum interfaces in kai-mesh's TOML, checked, and rendered into an RNS `config` file.

The operator writes `[reticulum]` and `[[interfaces]]` in the node's `config.toml` with kai-mesh's
own key names (`spreading_factor`, `tx_power`…); `parse_reticulum` and `parse_interfaces` check
every key and raise a one-line `ConfigError` naming the file, the interface and the key.
`render_rns_config` then writes the text RNS reads from its config directory, with RNS's names
(`spreadingfactor`, `txpower`…). Rendering, not passing RNS a dict, keeps this module free of
`RNS` (only the `transports.reticulum` package and `transports.lxmf` import it) and leaves a
file an operator can read.

RNS's config reader fails silently, so the renderer always writes what LAB.md found missing:
`enabled = yes` on every interface (without it RNS creates nothing), `share_instance = No` (else a
second process attaches to the first over 127.0.0.1), `panic_on_interface_error = No`, and
`ingress_control` explicitly. Strings are quoted for ConfigObj, which RNS vendors: an unquoted `#`
starts a comment, a `,` makes a list, and `%(x)s` is interpolated, so values that cannot survive
the round trip are refused at parse time rather than mangled.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeAlias, get_args

from kai_mesh.core.errors import AddressError, ConfigError, TransportError
from kai_mesh.core.mesh.address import check_name

InterfaceType: TypeAlias = Literal["auto", "udp", "tcp_server", "tcp_client", "rnode", "pipe"]
INTERFACE_TYPES: tuple[str, ...] = get_args(InterfaceType)

#: RNS ignores a configured bitrate below this (`Reticulum.MINIMUM_BITRATE`), silently.
RNS_MINIMUM_BITRATE = 5


@dataclass(frozen=True)
class ReticulumSettings:
    """The `[reticulum]` section: whether this node runs Reticulum at all, and how."""

    enabled: bool = True
    transport: bool = False
    announce_interval: int = 300


@dataclass(frozen=True)
class LxmfSettings:
    """The `[lxmf]` section: store-and-forward over LXMF and guest access (docs/lxmf.md)."""

    enabled: bool = True
    propagation_node: bool = False  # this node stores messages for others
    stamp_cost: int = 13  # propagation stamp cost; LXMF's minimum is 13
    node_announce_delay: float = 20.0  # seconds before a propagation node's first announce
    guest_intents: tuple[str, ...] = ("echo", "sysinfo")


@dataclass(frozen=True, kw_only=True)
class AutoOptions:
    """AutoInterface: finds peers on the local links by IPv6 multicast."""

    group_id: str | None = None
    devices: tuple[str, ...] = ()
    ignored_devices: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class UdpOptions:
    """UDPInterface: broadcast (or unicast) datagrams on an IP segment."""

    listen_ip: str
    listen_port: int
    forward_ip: str
    forward_port: int


@dataclass(frozen=True, kw_only=True)
class TcpServerOptions:
    """TCPServerInterface: accepts Reticulum peers over TCP."""

    listen_ip: str = "0.0.0.0"
    listen_port: int


@dataclass(frozen=True, kw_only=True)
class TcpClientOptions:
    """TCPClientInterface: connects to a TCP server interface (reconnects on its own)."""

    target_host: str
    target_port: int


@dataclass(frozen=True, kw_only=True)
class RNodeOptions:
    """RNodeInterface: a LoRa radio running the RNode firmware, on a serial port."""

    port: str
    frequency: int
    bandwidth: int
    spreading_factor: int
    coding_rate: int
    tx_power: int
    airtime_limit_long: float | None = None
    airtime_limit_short: float | None = None


@dataclass(frozen=True, kw_only=True)
class PipeOptions:
    """PipeInterface: a command whose stdin/stdout carry HDLC frames (the harness's emulated
    LoRa channel, `kai_mesh.harness.radio.pipe`); RNS respawns it `respawn_delay` s after it
    exits."""

    command: str
    respawn_delay: float | None = None


InterfaceOptions: TypeAlias = (
    AutoOptions | UdpOptions | TcpServerOptions | TcpClientOptions | RNodeOptions | PipeOptions
)


@dataclass(frozen=True)
class InterfaceConfig:
    """One `[[interfaces]]` entry. `options` holds the keys of its type."""

    name: str
    type: InterfaceType
    options: InterfaceOptions
    enabled: bool = True
    bitrate: int | None = None
    duty_cycle: float | None = None  # percent; kai-mesh's airtime budget, not given to RNS
    ingress_control: bool = True
    ifac_netname: str | None = None
    ifac_passphrase: str | None = None


#: What a node uses when its file has no `[[interfaces]]`: AutoInterface on the LAN, as rnsd does.
DEFAULT_INTERFACES: tuple[InterfaceConfig, ...] = (
    InterfaceConfig(name="lan", type="auto", options=AutoOptions()),
)

# --- checks: each returns None or what is wrong ------------------------------------------------

Check: TypeAlias = Callable[[Any], str | None]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DEVICE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")


def _quote(text: str) -> str | None:
    """`text` quoted so ConfigObj reads it back unchanged, or None if no quoting can."""
    if _CONTROL.search(text) or "%(" in text:
        return None
    if '"' not in text:
        return f'"{text}"'
    if "'" not in text:
        return f"'{text}'"
    for triple in ('"""', "'''"):
        if triple not in text and not text.endswith(triple[0]):
            return f"{triple}{text}{triple}"
    return None


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "expected true or false"


def _int_range(low: int, high: int, unit: str = "") -> Check:
    def check(v: Any) -> str | None:
        if type(v) is int and low <= v <= high:
            return None
        return f"expected a whole number from {low} to {high}{unit}"

    return check


def _positive_int(v: Any) -> str | None:
    return None if type(v) is int and v > 0 else "expected a positive whole number"


def _percent(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 100
    return None if ok else "expected a percentage from 0 to 100"


def _duty(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 100
    return None if ok else "expected a percentage above 0, at most 100"


def _text(v: Any) -> str | None:
    if not isinstance(v, str) or not v:
        return "expected a non-empty string"
    if v == "None":
        return "Reticulum ignores the value 'None'"
    if _quote(v) is None:
        return "contains characters Reticulum's config file cannot hold (control characters, '%(')"
    return None


def _ip(v: Any) -> str | None:
    if not isinstance(v, str):
        return "expected an IP address string"
    try:
        ipaddress.ip_address(v)
    except ValueError:
        return "expected an IP address such as 0.0.0.0 or 192.168.1.255"
    return None


def _host(v: Any) -> str | None:
    if not isinstance(v, str) or not v or any(c.isspace() for c in v) or _quote(v) is None:
        return "expected a host name or IP address"
    return None


def _devices(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(d, str) and _DEVICE.fullmatch(d) for d in v):
        return 'expected a list of network device names such as ["eth0", "wlan0"]'
    return None


_PORT = _int_range(1, 65535)


def _delay_s(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 3600
    return None if ok else "expected seconds above 0, at most 3600"


# Per type: RNS's type name, the options class, and for each kai-mesh key its check and RNS name.
_TYPES: dict[str, tuple[str, type[Any], dict[str, tuple[Check, str]]]] = {
    "auto": (
        "AutoInterface",
        AutoOptions,
        {
            "group_id": (_text, "group_id"),
            "devices": (_devices, "devices"),
            "ignored_devices": (_devices, "ignored_devices"),
        },
    ),
    "udp": (
        "UDPInterface",
        UdpOptions,
        {
            "listen_ip": (_ip, "listen_ip"),
            "listen_port": (_PORT, "listen_port"),
            "forward_ip": (_ip, "forward_ip"),
            "forward_port": (_PORT, "forward_port"),
        },
    ),
    "tcp_server": (
        "TCPServerInterface",
        TcpServerOptions,
        {"listen_ip": (_ip, "listen_ip"), "listen_port": (_PORT, "listen_port")},
    ),
    "tcp_client": (
        "TCPClientInterface",
        TcpClientOptions,
        {"target_host": (_host, "target_host"), "target_port": (_PORT, "target_port")},
    ),
    "rnode": (
        "RNodeInterface",
        RNodeOptions,
        {
            "port": (_text, "port"),
            "frequency": (_int_range(137_000_000, 3_000_000_000, " Hz"), "frequency"),
            "bandwidth": (_int_range(7_800, 1_625_000, " Hz"), "bandwidth"),
            "spreading_factor": (_int_range(7, 12), "spreadingfactor"),
            "coding_rate": (_int_range(5, 8), "codingrate"),
            "tx_power": (_int_range(0, 30, " dBm"), "txpower"),
            "airtime_limit_long": (_percent, "airtime_limit_long"),
            "airtime_limit_short": (_percent, "airtime_limit_short"),
        },
    ),
    "pipe": (
        "PipeInterface",
        PipeOptions,
        {"command": (_text, "command"), "respawn_delay": (_delay_s, "respawn_delay")},
    ),
}

# Keys every interface may carry: check and RNS name.
_COMMON: dict[str, tuple[Check, str]] = {
    "enabled": (_bool, "enabled"),
    "bitrate": (_int_range(RNS_MINIMUM_BITRATE, 10**12, " bit/s"), "bitrate"),
    "duty_cycle": (_duty, ""),
    "ingress_control": (_bool, "ingress_control"),
    "ifac_netname": (_text, "networkname"),
    "ifac_passphrase": (_text, "passphrase"),
}

_RETICULUM: dict[str, Check] = {
    "enabled": _bool,
    "transport": _bool,
    "announce_interval": _positive_int,
}


def _stamp_cost(v: Any) -> str | None:
    ok = type(v) is int and 13 <= v <= 254
    return None if ok else "expected a whole number from 13 (LXMF's minimum) to 254"


def _delay(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 3600
    return None if ok else "expected seconds from 0 to 3600"


def _intents(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(x, str) and x for x in v)
    return None if ok else "expected a list of intent names"


_LXMF: dict[str, Check] = {
    "enabled": _bool,
    "propagation_node": _bool,
    "stamp_cost": _stamp_cost,
    "node_announce_delay": _delay,
    "guest_intents": _intents,
}

# --- parsing -----------------------------------------------------------------------------------


def parse_lxmf(path: Path, table: Any) -> LxmfSettings:
    """Check the `[lxmf]` table of `path`.

    Raises:
        ConfigError: one line naming the file, `[lxmf]`, the key and the problem.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: [lxmf] must be a table")
    for key, value in table.items():
        if key not in _LXMF:
            raise ConfigError(f"{path}: [lxmf] {key}: unknown key (known: {', '.join(_LXMF)})")
        problem = _LXMF[key](value)
        if problem:
            raise ConfigError(f"{path}: [lxmf] {key}: {problem}, got {value!r}")
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
    return LxmfSettings(**values)


def parse_reticulum(path: Path, table: Any) -> ReticulumSettings:
    """Check the `[reticulum]` table of `path`.

    Raises:
        ConfigError: one line naming the file, `[reticulum]`, the key and the problem.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: [reticulum] must be a table")
    for key, value in table.items():
        if key not in _RETICULUM:
            known = ", ".join(_RETICULUM)
            raise ConfigError(f"{path}: [reticulum] {key}: unknown key (known: {known})")
        problem = _RETICULUM[key](value)
        if problem:
            raise ConfigError(f"{path}: [reticulum] {key}: {problem}, got {value!r}")
    return ReticulumSettings(**table)


def parse_interfaces(path: Path, items: Any) -> tuple[InterfaceConfig, ...]:
    """Check the `[[interfaces]]` array of `path`; names must be unique.

    Raises:
        ConfigError: one line naming the file, the interface (`[[interfaces]] "lora"`, or its
            position when it has no usable name), the key and the problem.
    """
    if not isinstance(items, list):
        raise ConfigError(
            f"{path}: [[interfaces]] must be an array of tables: write each one as [[interfaces]]"
        )
    seen: set[str] = set()
    out = []
    for index, item in enumerate(items, start=1):
        interface = _parse_one(path, index, item)
        if interface.name in seen:
            raise ConfigError(
                f'{path}: [[interfaces]] "{interface.name}" name: '
                "duplicate interface name (names must be unique)"
            )
        seen.add(interface.name)
        out.append(interface)
    return tuple(out)


def _parse_one(path: Path, index: int, item: Any) -> InterfaceConfig:
    where = f"{path}: [[interfaces]] #{index}"
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where} must be a table")
    name = item.get("name")
    if name is None:
        raise ConfigError(f"{where} name: missing required key")
    if not isinstance(name, str):
        raise ConfigError(f"{where} name: expected a string, got {name!r}")
    try:
        check_name("interface", name)
    except AddressError as exc:
        raise ConfigError(f"{where} name: {exc}") from None
    where = f'{path}: [[interfaces]] "{name}"'
    kind = item.get("type")
    if isinstance(kind, list | dict) or kind not in _TYPES:  # a list or table is unhashable
        what = "missing required key" if kind is None else f"unknown type {kind!r}"
        raise ConfigError(f"{where} type: {what} (known: {', '.join(INTERFACE_TYPES)})")
    _rns_type, options_class, specific = _TYPES[kind]
    for key, value in item.items():
        if key in ("name", "type"):
            continue
        spec = _COMMON.get(key) or specific.get(key)
        if spec is None:
            known = ", ".join([*_COMMON, *specific])
            raise ConfigError(f'{where} {key}: unknown key for type "{kind}" (known: {known})')
        problem = spec[0](value)
        if problem:
            raise ConfigError(f"{where} {key}: {problem}, got {value!r}")
    for f in fields(options_class):
        if f.default is MISSING and f.name not in item:
            raise ConfigError(f'{where} {f.name}: missing required key for type "{kind}"')
    options = options_class(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in item.items() if k in specific}
    )
    common = {k: v for k, v in item.items() if k in _COMMON}
    return InterfaceConfig(name=name, type=kind, options=options, **common)


# --- rendering ---------------------------------------------------------------------------------


def _value(value: Any) -> str:
    """One value in ConfigObj syntax (strings were checked to be quotable when parsed)."""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple):
        quoted = [_value(v) for v in value]
        return ", ".join(quoted) + ("," if len(quoted) == 1 else "")
    quoted_text = _quote(str(value))
    if quoted_text is None:
        raise ValueError(f"cannot write {value!r} into a Reticulum config file")
    return quoted_text


def _interface_lines(interface: InterfaceConfig) -> list[str]:
    rns_type, _options_class, specific = _TYPES[interface.type]
    lines = [
        f"  [[{interface.name}]]",
        f"    type = {rns_type}",
        "    enabled = yes",  # without it RNS silently creates nothing (LAB.md)
        f"    ingress_control = {_value(interface.ingress_control)}",
    ]
    for key in ("bitrate", "ifac_netname", "ifac_passphrase"):
        value = getattr(interface, key)
        if value is not None:
            lines.append(f"    {_COMMON[key][1]} = {_value(value)}")
    for f in fields(interface.options):
        value = getattr(interface.options, f.name)
        if value is not None and value != ():
            lines.append(f"    {specific[f.name][1]} = {_value(value)}")
    return lines


def render_rns_config(
    settings: ReticulumSettings, interfaces: Iterable[InterfaceConfig], *, loglevel: int = 2
) -> str:
    """The text of an RNS `config` file for these settings; disabled interfaces are left out.

    `loglevel` is RNS's own scale (0 critical … 7 extreme; 2 is warnings).

    Raises:
        ValueError: a string value cannot be quoted for ConfigObj (only if it skipped
            `parse_interfaces`, which refuses such values).
    """
    lines = [
        "# Written by kai-mesh from its config.toml at every start: edit that file, not this one.",
        "",
        "[reticulum]",
        f"  enable_transport = {_value(settings.transport)}",
        "  share_instance = No",
        "  panic_on_interface_error = No",
        "",
        "[logging]",
        f"  loglevel = {int(loglevel)}",
        "",
        "[interfaces]",
    ]
    for interface in interfaces:
        if interface.enabled:
            lines.extend(_interface_lines(interface))
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def check_rnode_ports(interfaces: Iterable[InterfaceConfig]) -> None:
    """Refuse to start when an enabled RNode's serial port is missing (RNS would only log it).

    `tcp://` and `ble://` ports (RNodes over WiFi or Bluetooth) are not checked.

    Raises:
        TransportError: "interface 'lora': serial port /dev/ttyUSB9 does not exist".
    """
    for interface in interfaces:
        options = interface.options
        if not interface.enabled or not isinstance(options, RNodeOptions):
            continue
        if options.port.lower().startswith(("tcp://", "ble://")):
            continue
        if not Path(options.port).exists():
            raise TransportError(
                f"interface {interface.name!r}: serial port {options.port} does not exist "
                "(is the RNode plugged in? `ls /dev/serial/by-id/` lists serial devices)"
            )
