"""What the TUI knows about the node, and the pure formatting the screens share.

`NodeView` is plain data: the link (tui/link.py) writes into it as replies and pushes arrive, and
bumps `version`; the app's 10 Hz clock repaints the current screen only when `version` moved.
That is the coalescing the design asks for: a storm of a thousand events between two ticks costs
one repaint, and keys are never queued behind paints (LAB.md: repainting per event starves input).
Events only add lines: they move `lines_added`, not `version`, so they repaint the screens that
show lines (the Log) and no other.

Nothing here touches Textual or the socket, so it is tested with plain values.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

#: Events and log lines kept for the Log screen; older ones fall off.
LOG_LIMIT: Final = 2000
#: Samples of airtime use kept per interface for its sparkline (one per status poll).
SPARK_LIMIT: Final = 30
#: Link-quality history per peer: one sample every `LINK_EVERY` seconds, the last `LINK_LIMIT`
#: kept (an hour), so the trend shows minutes, not the last few one-second polls.
LINK_EVERY: Final = 60.0
LINK_LIMIT: Final = 60
#: Airtime use, as a fraction of the budget, from which the Overview warns.
AIRTIME_WARN: Final = 0.8
#: One Reticulum packet: the MTU every interface must carry (500 bytes), the size a message
#: must stay under to leave in one radio frame.
RADIO_PACKET: Final = 500
#: Last-heard filters of the Peers screen, in seconds (None: all).
HEARD_FILTERS: Final[tuple[tuple[str, float | None], ...]] = (
    ("all", None),
    ("1 h", 3600.0),
    ("8 h", 8 * 3600.0),
    ("24 h", 24 * 3600.0),
)
LEVELS: Final = ("debug", "info", "warning", "error")
_SPARKS: Final = "▁▂▃▄▅▆▇█"


@dataclass
class LogLine:
    """One line of the Log screen: a log record or an event of another topic."""

    time: float
    topic: str
    level: str
    text: str

    def render(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        return f"{stamp} {self.level[:4].upper():4} {self.topic:10} {self.text}"


@dataclass
class NodeView:
    """Everything the screens draw. `version` moves on every change."""

    socket: str = ""
    start_command: str = "kai-mesh run"
    connected: bool = False
    problem: str = "connecting…"
    reconnects: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    peers: list[dict[str, Any]] = field(default_factory=list)
    agents: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    doc: Any = None
    proposals: list[dict[str, Any]] = field(default_factory=list)
    gov_log: list[dict[str, Any]] = field(default_factory=list)
    lines: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_LIMIT))
    #: Count of lines ever added: screens append what is new since the count they last saw.
    lines_added: int = 0
    airtime_history: dict[str, deque[float]] = field(default_factory=dict)
    #: Per peer row (`peer_key`): round trips in ms, None where the peer was not alive.
    link_history: dict[str, deque[float | None]] = field(default_factory=dict)
    link_sampled_at: float | None = None
    #: Mesh services (`services_list`): replicas, owner, health; empty on a node without them.
    services: list[dict[str, Any]] = field(default_factory=list)
    events_seen: int = 0
    version: int = 0

    def touch(self) -> None:
        self.version += 1

    def add_line(self, line: LogLine) -> None:
        """A line for the Log: moves `lines_added`, not `version` (see the module docstring)."""
        self.lines.append(line)
        self.lines_added += 1

    def record_event(self, topic: str, data: Any, now: float | None = None) -> None:
        """A push from the node, as a Log line (logs keep their level and time)."""
        self.events_seen += 1
        if topic == "logs" and isinstance(data, dict):
            self.add_line(
                LogLine(
                    time=float(data.get("time") or now or time.time()),
                    topic=str(data.get("logger", "logs")),
                    level=str(data.get("level", "info")),
                    text=str(data.get("message", "")),
                )
            )
            return
        level = "warning" if topic == "lagged" else "info"
        self.add_line(
            LogLine(time=now or time.time(), topic=topic, level=level, text=describe_event(data))
        )

    def set_status(self, status: dict[str, Any]) -> None:
        self.status = status
        for lane in status.get("airtime") or []:
            key = f"{lane.get('transport')}/{lane.get('interface')}"
            history = self.airtime_history.setdefault(key, deque(maxlen=SPARK_LIMIT))
            history.append(float(lane.get("used_fraction") or 0.0))
        self.touch()

    def set_peers(self, peers: list[dict[str, Any]], now: float) -> None:
        """New `peers` rows; every `LINK_EVERY` seconds also a link-quality sample per peer."""
        self.peers = peers
        if self.link_sampled_at is not None and now - self.link_sampled_at < LINK_EVERY:
            return
        self.link_sampled_at = now
        for peer in peers:
            history = self.link_history.setdefault(peer_key(peer), deque(maxlen=LINK_LIMIT))
            rtt = peer.get("rtt_ms")
            alive = (peer.get("status") or "alive") == "alive"
            history.append(float(rtt) if alive and isinstance(rtt, int | float) else None)

    def peer_counts(self) -> dict[str, int]:
        counts = {"alive": 0, "suspect": 0, "failed": 0, "heard": 0}
        for peer in self.peers:
            counts[peer.get("status") or "heard"] = counts.get(peer.get("status") or "heard", 0) + 1
        return counts

    def airtime_warnings(self) -> list[str]:
        """One sentence per interface whose airtime nears its budget."""
        out = []
        for lane in self.status.get("airtime") or []:
            used = float(lane.get("used_fraction") or 0.0)
            if used >= AIRTIME_WARN:
                out.append(
                    f"{lane.get('interface')}: airtime {used:.0%} of its budget; "
                    "background traffic is held back, only high priority leaves soon"
                )
        return out


def peer_key(peer: dict[str, Any]) -> str:
    """One row of `peers`: a node heard on two transports is two rows."""
    return f"{peer.get('node_id')}/{peer.get('transport')}"


def link_trend(samples: list[float | None] | deque[float | None], width: int = 8) -> str:
    """Round trips as a sparkline, newest last: a taller bar is a slower link, scaled to the
    slowest in view; `✗` where the peer was not alive. Empty while nothing was sampled."""
    tail = list(samples)[-width:]
    known = [s for s in tail if s is not None]
    top = max(known, default=0.0) or 1.0
    return "".join(
        "✗" if s is None else _SPARKS[min(int(s / top * (len(_SPARKS) - 1)), len(_SPARKS) - 1)]
        for s in tail
    )


def describe_event(data: Any) -> str:
    """A one-line summary of an event's data, `event` first."""
    if not isinstance(data, dict):
        return compact(data)
    head = str(data.get("event", ""))
    rest = {k: v for k, v in data.items() if k != "event"}
    body = " ".join(f"{k}={short(v)}" for k, v in rest.items())
    return f"{head} {body}".strip()


def short(value: Any, limit: int = 24) -> str:
    text = value if isinstance(value, str) else compact(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact(value: Any) -> str:
    return json.dumps(value, default=_plain, ensure_ascii=False, separators=(",", ":"))


def pretty(value: Any) -> str:
    return json.dumps(value, default=_plain, ensure_ascii=False, indent=2)


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


def duration(seconds: float | None) -> str:
    """`3d 4h`, `2h 05m`, `4m 10s`, `12s`: two units at most, for narrow columns."""
    if seconds is None:
        return "—"
    s = max(int(seconds), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"


def size(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def bitrate(bps: float | None) -> str:
    if not bps:
        return "—"
    for unit, scale in (("Gb/s", 1e9), ("Mb/s", 1e6), ("kb/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f} {unit}"
    return f"{bps:.0f} b/s"


def sparkline(values: list[float] | deque[float], width: int = 12) -> str:
    """Fractions 0..1 as block characters, newest last."""
    tail = list(values)[-width:]
    return "".join(_SPARKS[min(int(max(v, 0.0) * len(_SPARKS)), len(_SPARKS) - 1)] for v in tail)


def bar(fraction: float, width: int = 10) -> str:
    filled = round(max(0.0, min(fraction, 1.0)) * width)
    return "█" * filled + "░" * (width - filled)


def hops_histogram(peers: list[dict[str, Any]], width: int = 20) -> list[str]:
    """One line per hop count: `1 hop  ███ 3`; unknown hops count as `?`."""
    counts: dict[str, int] = {}
    for peer in peers:
        hops = peer.get("hops")
        key = "?" if hops is None else str(hops)
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return []
    top = max(counts.values())
    keys = sorted(counts, key=lambda k: (k == "?", int(k) if k != "?" else 0))
    return [
        f"{k:>2} hop{'s' if k != '1' else ' '} {'█' * max(1, round(counts[k] / top * width))} "
        f"{counts[k]}"
        for k in keys
    ]


def heard_within(peers: list[dict[str, Any]], limit: float | None) -> list[dict[str, Any]]:
    if limit is None:
        return list(peers)
    return [p for p in peers if (p.get("last_heard_s_ago") or 0.0) <= limit]


def shape_of(status: dict[str, Any]) -> str:
    """The mesh's shape (DESIGN.md): `status.shape` as the node tells it (local, supervised,
    edge, federated); from an older node that lacks it, a guess: no transports is `local`, a
    Nostr transport `federated`, else `edge` (it cannot tell `supervised`)."""
    if isinstance(status.get("shape"), str):
        return str(status["shape"])
    transports = status.get("transports") or []
    if not transports:
        return "local"
    names = {str(t.get("name")) for t in transports}
    if "nostr" in names:
        return "federated"
    return "edge"


def payload_check(text: str) -> tuple[Any, str | None]:
    """The payload as a value, or the reason it is not JSON (empty means null)."""
    if not text.strip():
        return None, None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at column {exc.colno}"


def message_bytes(to: str, intent: str, payload: Any) -> int:
    """About what the message weighs on the air: its msgpack body plus a signed envelope."""
    from kai_mesh.core.codec import pack

    # Envelope: format byte, ids (16+16), sender and recipient addresses, time, ttl, priority,
    # an Ed25519 signature (64): about 140 bytes around the addresses, intent and payload.
    return 140 + len(pack([to, intent, payload]))
