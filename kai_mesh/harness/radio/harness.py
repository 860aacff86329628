"""The harness's side of the radio: which nodes sit on which channels, the channel daemons, the
nodes' PipeInterface config, and `kai-mesh harness radio`.

`plan` checks the options of `up` (`--radio MODEM`, `--channel NAME=NODES[@MODEM]`, `--radio-lan`,
`--hidden`…) into a `RadioPlan` before anything is made; `start` runs one channel daemon per
channel (`python -m kai_mesh.harness.radio.channel`, a session of its own, its socket, log and
frame log in DIR/radio) and waits until each answers; `interface_lines` is the `[[interfaces]]`
entry a node gets per channel, carrying the modem's bitrate and the duty cycle so Reticulum's
timeouts and kai-mesh's airtime lanes budget for the radio. A node on no channel keeps the LAN; a
node on a channel loses the LAN unless named in `--radio-lan`; a node on two links (two channels,
or a channel and the LAN) is a gateway and relays (Reticulum transport). `down` needs nothing from
here: every daemon and relay names a path under DIR on its command line, and `down` kills those.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kai_mesh.core.errors import UsageError
from kai_mesh.harness.netns import HarnessError
from kai_mesh.harness.radio.airtime import parse_modem
from kai_mesh.harness.radio.channel import parse_hidden, query_stats

RADIO_DIR = "radio"
DEFAULT_DUTY = 1.0  # percent: the EU 868 MHz budget, kai-mesh's default on a radio
START_TIMEOUT = 10.0
_NAME = re.compile(r"^[a-z0-9_-]{1,16}$")
SOCKET_MAX = 100  # bytes: a Unix socket path must fit sockaddr_un (108)


@dataclass(frozen=True)
class ChannelPlan:
    name: str
    modem: str
    nodes: list[str]


@dataclass
class RadioPlan:
    channels: list[ChannelPlan]
    lan: list[str] = field(default_factory=list)  # radio nodes that keep the LAN too
    loss: float = 0.0  # percent
    seed: int | None = None
    hidden: list[tuple[str, str]] = field(default_factory=list)
    duty_limit: float | None = None  # percent, enforced by the channel
    csma: bool = True
    capture_db: float | None = None
    pids: dict[str, int] = field(default_factory=dict)

    def channels_of(self, node: str) -> list[ChannelPlan]:
        return [c for c in self.channels if node in c.nodes]

    def on_lan(self, node: str) -> bool:
        return node in self.lan or not self.channels_of(node)

    def gateway(self, node: str) -> bool:
        return len(self.channels_of(node)) + self.on_lan(node) >= 2

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RadioPlan:
        data = dict(data)
        channels = [ChannelPlan(**c) for c in data.pop("channels")]
        hidden = [(a, b) for a, b in data.pop("hidden", [])]
        return cls(channels=channels, hidden=hidden, **data)


def plan(
    names: Sequence[str],
    modem: str | None,
    channels: Sequence[str] = (),
    *,
    lan: Sequence[str] = (),
    loss: float = 0.0,
    seed: int | None = None,
    hidden: str | None = None,
    duty_limit: float | None = None,
    csma: bool = True,
    capture_db: float | None = None,
) -> RadioPlan | None:
    """The radio layout from `up`'s options, or None when there is no radio.

    `channels` are `NAME=NODE,NODE[@MODEM]`; without any, `modem` puts every node on one
    channel `ch0`.

    Raises:
        UsageError: an unknown modem, node or channel name, a node twice on one channel, a
            hidden pair or LAN node not on the radio, a loss outside 0..100.
    """
    if modem is None and not channels:
        if lan or hidden or loss:
            raise UsageError("--radio-lan, --hidden and --radio-loss need --radio or --channel")
        return None
    known = set(names)
    out: list[ChannelPlan] = []
    for spec in channels or [f"ch0={','.join(names)}"]:
        name, sep, rest = spec.partition("=")
        members, _, own_modem = rest.partition("@")
        if not sep or not _NAME.match(name):
            raise UsageError(f"--channel {spec!r}: expected NAME=NODE,NODE[@MODEM]")
        chosen = own_modem or modem
        if chosen is None:
            raise UsageError(f"--channel {spec!r}: give @MODEM or --radio MODEM")
        parse_modem(chosen)
        nodes = [n for n in members.split(",") if n]
        _check_names(f"--channel {name}", nodes, known)
        if len(set(nodes)) != len(nodes) or not nodes:
            raise UsageError(f"--channel {spec!r}: name each node once, at least one")
        if name in {c.name for c in out}:
            raise UsageError(f"--channel {name}: named twice")
        out.append(ChannelPlan(name, chosen, nodes))
    radio = {n for c in out for n in c.nodes}
    _check_names("--radio-lan", lan, radio)
    pairs = parse_hidden(hidden)
    _check_names("--hidden", [n for p in pairs for n in p], radio)
    if not 0 <= loss < 100:
        raise UsageError(f"--radio-loss {loss}: expected a percentage from 0 to below 100")
    if duty_limit is not None and not 0 < duty_limit <= 100:
        raise UsageError(f"--radio-duty-limit {duty_limit}: expected a percentage above 0")
    return RadioPlan(out, list(lan), loss, seed, pairs, duty_limit, csma, capture_db)


def _check_names(option: str, names: Sequence[str], known: set[str]) -> None:
    for name in names:
        if name not in known:
            raise UsageError(f"{option}: {name!r} is not a node here (or not on the radio)")


def socket_path(directory: Path, channel: str) -> Path:
    return directory / RADIO_DIR / f"{channel}.sock"


def frames_path(directory: Path, channel: str) -> Path:
    """The channel daemon's frame log: every frame sent, one JSON line each."""
    return directory / RADIO_DIR / f"{channel}.frames"


def check_paths(directory: Path, radio: RadioPlan) -> None:
    """Raises `UsageError` when a channel's socket path would not fit a Unix socket address."""
    for channel in radio.channels:
        path = socket_path(directory.absolute(), channel.name)
        if len(str(path).encode()) > SOCKET_MAX:
            raise UsageError(f"{path}: too long for a Unix socket; use a shorter --dir")


def start(directory: Path, radio: RadioPlan) -> None:
    """Start one channel daemon per channel and wait until each answers; records their pids.

    Raises:
        HarnessError: a daemon exited or did not answer within START_TIMEOUT.
    """
    (directory / RADIO_DIR).mkdir(parents=True, exist_ok=True)
    procs = {}
    for channel in radio.channels:
        path = socket_path(directory, channel.name)
        path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "kai_mesh.harness.radio.channel", "--socket", str(path)]
        argv += ["--modem", channel.modem, "--name", channel.name, "--loss", str(radio.loss)]
        argv += ["--seed", str(radio.seed)] if radio.seed is not None else []
        deaf = [p for p in radio.hidden if set(p) <= set(channel.nodes)]
        argv += ["--hidden", ",".join(f"{a}:{b}" for a, b in deaf)] if deaf else []
        argv += ["--duty-limit", str(radio.duty_limit)] if radio.duty_limit else []
        argv += ["--capture-db", str(radio.capture_db)] if radio.capture_db is not None else []
        argv += [] if radio.csma else ["--no-csma"]
        argv += ["--frame-log", str(frames_path(directory, channel.name))]
        with open(directory / RADIO_DIR / f"{channel.name}.log", "ab") as log:
            procs[channel.name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        radio.pids[channel.name] = procs[channel.name].pid
    deadline = time.monotonic() + START_TIMEOUT
    for name, proc in procs.items():
        while True:
            if proc.poll() is not None:
                raise HarnessError(f"channel {name} exited while starting (see its log)")
            try:
                query_stats(socket_path(directory, name), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"channel {name} did not answer in time") from None
                time.sleep(0.05)


def interface_lines(
    directory: Path, radio: RadioPlan, node: str, duty_cycle: float | None
) -> list[str]:
    """The `[[interfaces]]` entries (TOML lines) for `node`'s radios: one PipeInterface per
    channel it is on."""
    lines: list[str] = []
    for channel in radio.channels_of(node):
        modem = parse_modem(channel.modem)
        sock = str(socket_path(directory, channel.name))
        pipe = [sys.executable, "-m", "kai_mesh.harness.radio.pipe"]
        command = shlex.join([*pipe, "--socket", sock, "--node", node])
        lines += [
            "",
            f"# the emulated LoRa channel {channel.name}: {modem.describe()}",
            "[[interfaces]]",
            f'name = "radio_{channel.name.replace("-", "_")}"',
            'type = "pipe"',
            f"command = '''{command}'''",
            "respawn_delay = 1",
            "ingress_control = false",
            f"bitrate = {modem.bitrate}",
            f"duty_cycle = {duty_cycle if duty_cycle is not None else DEFAULT_DUTY}",
        ]
    return lines


def stats(directory: Path, radio: RadioPlan) -> list[dict[str, Any]]:
    """Each channel daemon's stats; a daemon that does not answer is reported as down."""
    out = []
    for channel in radio.channels:
        try:
            out.append(query_stats(socket_path(directory, channel.name)))
        except (OSError, ValueError) as exc:
            out.append({"channel": channel.name, "error": f"not answering: {exc}", "nodes": {}})
    return out


def render(channels: list[dict[str, Any]]) -> str:
    """`kai-mesh harness radio` as text: one table per channel."""
    lines = []
    for ch in channels:
        if "error" in ch:
            lines.append(f"{ch['channel']}: {ch['error']}")
            continue
        late = ch["late"]
        lines.append(
            f"{ch['channel']}: {ch['modem']}, {ch['bitrate']} bit/s, loss {100 * ch['loss']:g}%, "
            f"csma {'on' if ch['csma'] else 'off'}; {ch['frames_in']} frames in, delivered "
            f"late by {late['mean_ms']:.1f} ms mean / {late['max_ms']:.1f} ms max, "
            f"cpu {ch['cpu_pct']:.1f}%"
        )
        lines.append(
            f"  {'node':8} {'frames':>7} {'bytes':>9} {'air s':>8} {'duty/h':>7} "
            f"{'recv':>6} {'collide':>7} {'lost':>5} {'queued':>6}"
        )
        for name, n in sorted(ch["nodes"].items()):
            lines.append(
                f"  {name:8} {n['frames_sent']:>7} {n['bytes_sent']:>9} {n['airtime_s']:>8.2f} "
                f"{n['duty_cycle_hour_pct']:>6.3f}% {n['received']:>6} {n['collisions']:>7} "
                f"{n['lost']:>5} {n['queued']:>6}"
            )
    return "\n".join(lines)
