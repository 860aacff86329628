"""Where a node keeps its files, and its TOML configuration.

Lookup order, as httpie does it: a command-line flag, then the environment (`KAI_MESH_HOME`,
`KAI_MESH_LOG_LEVEL`), then the config file, then the defaults below. `--home DIR` puts config,
data and the control socket under one directory (tests and the harness use it); without it the
XDG locations apply (platformdirs).

Every key is checked against `_SCHEMA`: a typo or a wrong type is a `ConfigError` naming the file,
the key and what is wrong, never a traceback later.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kai_mesh.config.interfaces import (
    DEFAULT_INTERFACES,
    InterfaceConfig,
    LxmfSettings,
    ReticulumSettings,
    parse_interfaces,
    parse_lxmf,
    parse_reticulum,
)
from kai_mesh.config.nostr import NostrSettings, parse_nostr

# Re-exported: the paths were here before they had a module of their own.
from kai_mesh.config.paths import APP as APP
from kai_mesh.config.paths import CONFIG_NAME as CONFIG_NAME
from kai_mesh.config.paths import NodePaths as NodePaths
from kai_mesh.core.control.frames import HEADER_SIZE, MAX_FRAME_LIMIT
from kai_mesh.core.errors import AddressError, ConfigError
from kai_mesh.core.mesh.address import check_name

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class ExtraAgent:
    """An agent named in config rather than by entry point: a Python class or a program."""

    name: str
    class_path: str | None = None
    command: tuple[str, ...] = ()
    timeout: float | None = None
    isolation: str | None = None


@dataclass(frozen=True)
class Config:
    """A node's settings.

    Defaults give a node that runs Reticulum with one AutoInterface ("lan"): it finds peers on
    the local network and is still a working mesh of one without any.
    `reticulum.enabled = False` is the offline mesh of one, with no Reticulum at all.
    """

    name: str = "node"
    log_level: str = "info"
    capabilities: tuple[str, ...] = ()
    max_message_bytes: int = 64 * 1024
    max_ttl: int = 7 * 24 * 3600
    default_ttl: int = 300
    queue_capacity: int = 256
    max_frame_bytes: int = 1 << 20
    agents: tuple[str, ...] = ("echo", "sysinfo")
    agent_timeout: float = 10.0
    extra_agents: tuple[ExtraAgent, ...] = field(default=())
    must_arrive: tuple[str, ...] = ()
    retry_cap: float = 15.0
    handoff_after: float = 60.0
    liveness_share: float = 0.04
    announce_share: float = 0.01
    background_share: float = 0.25
    reticulum: ReticulumSettings = field(default_factory=ReticulumSettings)
    lxmf: LxmfSettings = field(default_factory=LxmfSettings)
    nostr: NostrSettings = field(default_factory=NostrSettings)
    interfaces: tuple[InterfaceConfig, ...] = DEFAULT_INTERFACES
    source: Path | None = None


def _positive_int(v: Any) -> str | None:
    return None if type(v) is int and v > 0 else "expected a positive whole number"


def _frame_bytes(v: Any) -> str | None:
    ok = type(v) is int and HEADER_SIZE <= v <= MAX_FRAME_LIMIT
    return None if ok else f"expected a whole number of bytes, {HEADER_SIZE} to {MAX_FRAME_LIMIT}"


def _positive_number(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and v > 0
    return None if ok else "expected a positive number"


def _name(v: Any) -> str | None:
    if not isinstance(v, str):
        return "expected a string"
    try:
        check_name("node", v)
    except AddressError as exc:
        return str(exc)
    return None


_CAPABILITY_RE = re.compile(r"[A-Za-z0-9._:/-]{1,64}")


def _capabilities(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) <= 32
    if not ok or not all(isinstance(x, str) and _CAPABILITY_RE.fullmatch(x) for x in v):
        return "expected a list of at most 32 words (letters, digits, . _ : / -)"
    return None


def _level(v: Any) -> str | None:
    return None if v in LOG_LEVELS else f"expected one of {', '.join(LOG_LEVELS)}"


def _names(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return "expected a list of agent names"
    return None


def _intents(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        return "expected a list of intents"
    return None


def _share(v: Any) -> str | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1
    return None if ok else "expected a share of the budget in (0, 1]"


# (section, key) -> (Config field, check)
_SCHEMA: dict[tuple[str, str], tuple[str, Callable[[Any], str | None]]] = {
    ("node", "name"): ("name", _name),
    ("node", "log_level"): ("log_level", _level),
    ("node", "capabilities"): ("capabilities", _capabilities),
    ("bus", "max_message_bytes"): ("max_message_bytes", _positive_int),
    ("bus", "max_ttl"): ("max_ttl", _positive_int),
    ("bus", "default_ttl"): ("default_ttl", _positive_int),
    ("bus", "queue_capacity"): ("queue_capacity", _positive_int),
    ("control", "max_frame_bytes"): ("max_frame_bytes", _frame_bytes),
    ("agents", "enabled"): ("agents", _names),
    ("agents", "timeout"): ("agent_timeout", _positive_number),
    ("delivery", "must_arrive"): ("must_arrive", _intents),
    ("delivery", "retry_cap"): ("retry_cap", _positive_number),
    ("delivery", "handoff_after"): ("handoff_after", _positive_number),
    ("airtime", "liveness_share"): ("liveness_share", _share),
    ("airtime", "announce_share"): ("announce_share", _share),
    ("airtime", "background_share"): ("background_share", _share),
}
_SECTIONS = {section for section, _ in _SCHEMA} | {"reticulum", "interfaces", "lxmf", "nostr"}


def _toml_line(exc: tomllib.TOMLDecodeError) -> str:
    match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
    message = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
    return f"line {match.group(1)}: {message}" if match else message


def load_config(path: Path, *, log_level: str | None = None) -> Config:
    """Read and check `path`. A missing file gives the defaults.

    Raises:
        ConfigError: one line naming the file, the key and what is wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        data: dict[str, Any] = {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML at {_toml_line(exc)}") from None
    values: dict[str, Any] = {"source": path}
    for section, table in data.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{section}]")
        if section == "reticulum":
            values["reticulum"] = parse_reticulum(path, table)
            continue
        if section == "lxmf":
            values["lxmf"] = parse_lxmf(path, table)
            continue
        if section == "nostr":
            values["nostr"] = parse_nostr(path, table)
            continue
        if section == "interfaces":  # an empty list is kept: no interfaces at all
            values["interfaces"] = parse_interfaces(path, table)
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, value in table.items():
            if section == "agents" and key == "extra":
                values["extra_agents"] = _extra_agents(path, value)
                continue
            if (section, key) not in _SCHEMA:
                known = ", ".join(k for s, k in _SCHEMA if s == section)
                raise ConfigError(f"{path}: [{section}] {key}: unknown key (known: {known})")
            field_name, check = _SCHEMA[(section, key)]
            problem = check(value)
            if problem:
                raise ConfigError(f"{path}: [{section}] {key}: {problem}, got {value!r}")
            values[field_name] = tuple(value) if isinstance(value, list) else value
    env_level = os.environ.get("KAI_MESH_LOG_LEVEL")
    for origin, level in (("KAI_MESH_LOG_LEVEL", env_level), ("--log-level", log_level)):
        if level is not None:
            if _level(level):
                raise ConfigError(f"{origin}: {_level(level)}, got {level!r}")
            values["log_level"] = level
    config = Config(**values)
    if config.default_ttl > config.max_ttl:
        raise ConfigError(f"{path}: [bus] default_ttl is longer than max_ttl")
    return config


def _extra_agents(path: Path, tables: Any) -> tuple[ExtraAgent, ...]:
    where = f"{path}: [agents.extra"
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}] must be a table of agents")
    out = []
    for name, spec in tables.items():
        if _name(name) or not isinstance(spec, Mapping):
            raise ConfigError(f"{where}.{name}]: invalid agent name or not a table")
        unknown = set(spec) - {"class", "command", "timeout", "isolation"}
        if unknown:
            raise ConfigError(f"{where}.{name}] {sorted(unknown)[0]}: unknown key")
        class_path, command = spec.get("class"), spec.get("command", [])
        if (class_path is None) == (not command):
            raise ConfigError(f"{where}.{name}]: give exactly one of class or command")
        if class_path is not None and (not isinstance(class_path, str) or ":" not in class_path):
            raise ConfigError(f"{where}.{name}] class: expected 'module:Class'")
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise ConfigError(f"{where}.{name}] command: expected a list of strings")
        timeout = spec.get("timeout")
        if timeout is not None and _positive_number(timeout):
            raise ConfigError(f"{where}.{name}] timeout: {_positive_number(timeout)}")
        isolation = spec.get("isolation")
        if isolation not in (None, "inline", "thread", "process"):
            raise ConfigError(f"{where}.{name}] isolation: expected thread or process")
        out.append(ExtraAgent(name, class_path, tuple(command), timeout, isolation))
    return tuple(out)


DEFAULT_CONFIG = """\
# kai-mesh node configuration. Every key is optional; the values shown are the defaults.
# Lookup order: command-line flag, then environment (KAI_MESH_*), then this file.

[node]
# Display name, unique in your mesh: 1-32 characters a-z 0-9 - _.
name = "{name}"
# debug, info, warning or error. Overridden by --log-level or KAI_MESH_LOG_LEVEL.
log_level = "info"
# What this node offers services (manifests' `capabilities`), beyond what it detects itself
# (its architecture, e.g. "arm64", and "gpu" when one is present):
# capabilities = ["camera", "lora"]

[bus]
# Largest encoded message accepted, in bytes.
max_message_bytes = 65536
# Longest a message may live (expires_at - timestamp), in seconds. Longer requests are capped.
max_ttl = 604800
# Lifetime given to a message when the sender names none, in seconds.
default_ttl = 300
# Messages waiting per agent. When full, the lowest priority is shed with an error reply;
# critical messages are never shed.
queue_capacity = 256

[control]
# Largest frame accepted on the control socket, in bytes.
max_frame_bytes = 1048576

[agents]
# Agents to run, by entry-point name (group kai_mesh.agents).
enabled = ["echo", "sysinfo"]
# Seconds an agent has to answer before the caller gets a timeout and the agent is restarted.
timeout = 10.0

# An agent of your own, as a Python class (run in its own process) or a program speaking
# JSON lines on stdin/stdout (see docs/agents.md):
# [agents.extra.weather]
# class = "my_package.weather:WeatherAgent"
# command = ["/usr/local/bin/weather-agent"]
# timeout = 5.0

[delivery]
# Intents whose messages must arrive: committed to the outbox, retried until the recipient
# acknowledges them (`kai-mesh send --must-arrive` does the same for one message).
must_arrive = []
# Longest wait between two tries of an unacknowledged message, in seconds.
retry_cap = 15.0
# Seconds without an acknowledgement before the message is also left with LXMF propagation.
handoff_after = 60.0

[airtime]
# Shares of each radio interface's airtime budget (its duty cycle) for heartbeats and failure
# probes, and for announces; their intervals stretch to fit on slow links.
liveness_share = 0.04
announce_share = 0.01
# The most of the budget all background traffic together may use (heartbeats, probes, state
# sync, relayed announces); the rest is kept for messages.
background_share = 0.25

[reticulum]
# false: no Reticulum at all, the offline mesh of one (kai-mesh init --local-only writes false).
enabled = {reticulum_enabled}
# Relay packets and paths for other nodes: set true on gateways and on nodes inside a mesh
# that others reach through this one.
transport = false
# Seconds between this node's announces. Every announce costs airtime on radio links.
announce_interval = 300

[lxmf]
# Store-and-forward over LXMF (needs Reticulum), and guests: LXMF clients such as Sideband or
# NomadNet messaging this node's agents (see docs/lxmf.md).
enabled = true
# Keep messages for nodes that are offline (an LXMF propagation node). Costs disk and airtime.
propagation_node = false
# Proof-of-work a sender pays to leave a message here (13, LXMF's minimum, is ~0.5 s of CPU).
stamp_cost = 13
# Seconds a propagation node waits before its first announce.
node_announce_delay = 20
# The intents a guest may call (`AGENT INTENT [JSON]` as the message text).
guest_intents = ["echo", "sysinfo"]

[nostr]
# Relays (ws:// or wss://) that carry this node's traffic to islands no radio or LAN reaches.
# Empty: no Nostr at all. Every payload is NIP-44 encrypted to its recipient (docs/nostr.md).
# A relay only read from or only written to (NIP-65): {{url = "wss://...", marker = "read"}}.
relays = []
# Seconds between this node's hellos (its encrypted member record) to the mesh on the relays.
hello_interval = 300
# NIP-59 gift wrap: relays see neither which member sends a frame nor quite when, at about two
# to three times the bytes and four times the CPU per frame (bench/giftwrap.py).
gift_wrap = false

# The links Reticulum uses, one [[interfaces]] entry each. Names: 1-32 characters a-z 0-9 - _.
# Keys every interface takes:
#   enabled = true          false keeps the entry but does not start it
#   bitrate = 20000         bits/s; Reticulum bases its timeouts on it: set it on slow links
#   duty_cycle = 1.0        percent of airtime this node may use on it per hour (default: 1 on
#                           rnode interfaces, the EU 868 MHz rule; none elsewhere)
#   ingress_control = true  holds bursts of announces from new peers (turn off only in tests)
#   ifac_netname = "..."    a virtual network name: only peers with the same name and
#   ifac_passphrase = "..." passphrase are heard on this interface
# A file with no [[interfaces]] at all gets the "lan" interface below.
[[interfaces]]
name = "lan"
# Finds peers on the local network (Ethernet, WiFi) by IPv6 multicast, as rnsd does.
type = "auto"
# group_id = "my-mesh"         only peers with the same group id
# devices = ["eth0", "wlan0"]  only these network devices
# ignored_devices = ["docker0"]

# A Reticulum node reachable over TCP, such as a gateway on the internet:
# [[interfaces]]
# name = "gateway"
# type = "tcp_client"
# target_host = "gateway.example.org"
# target_port = 4242

# Accept TCP connections from other nodes (a gateway):
# [[interfaces]]
# name = "tcp-in"
# type = "tcp_server"
# listen_ip = "0.0.0.0"
# listen_port = 4242

# UDP broadcast on one IP segment (starts faster than auto):
# [[interfaces]]
# name = "udp"
# type = "udp"
# listen_ip = "0.0.0.0"
# listen_port = 4242
# forward_ip = "192.168.1.255"
# forward_port = 4242

# A LoRa radio running the RNode firmware. Ready-made settings per region are in
# hardware/rnode/*.toml. These are for EU 868 MHz (sub-band 868.0-868.6 MHz: 25 mW ERP and a
# 1 % duty cycle, which leaves ~36 s of airtime an hour).
# [[interfaces]]
# name = "lora"
# type = "rnode"
# port = "/dev/ttyUSB0"        # ls /dev/serial/by-id/ shows a stable name
# frequency = 868300000        # Hz
# bandwidth = 125000           # Hz
# spreading_factor = 9         # 7..12: higher reaches further, slower
# coding_rate = 5              # 5..8
# tx_power = 14                # dBm, within your region's legal limit
# airtime_limit_long = 1.0     # percent of airtime over the last hour (the radio enforces it)
# airtime_limit_short = 10.0   # percent over the last 15 seconds
"""


def default_config_text(name: str, *, local_only: bool = False) -> str:
    """The commented config file `kai-mesh init` writes.

    `local_only` writes `[reticulum] enabled = false`: the offline mesh of one.
    """
    return DEFAULT_CONFIG.format(name=name, reticulum_enabled="false" if local_only else "true")
