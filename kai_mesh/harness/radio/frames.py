"""What the frames on an emulated channel are: Reticulum packets told apart by their headers.

The channel daemon's frame log (`--frame-log`, one JSON line per frame a node sent: `t`, `node`,
`len`, `hex`) holds whole RNS packets. `classify` reads one packet's header (RNS's wire format,
without importing RNS): its type (data, announce, link request, proof), its destination, its
context byte. Announces name their destination's aspects only as a 10-byte hash, so they are
matched against the aspects kai-mesh, LXMF and Reticulum use; PLAIN destinations (heartbeats, path
requests) are matched by their hash, which is the hash of their name alone; link traffic (its
destination is a link id) is told apart by its context (keepalive, close, identify, RTT,
resource parts…), and a link's plain data (kai-mesh's own frames) by nothing more than its size.

`summarise` turns a log into bytes and frames per node and per kind over a time window.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ASPECTS = (
    "kai_mesh.node",
    "kai_mesh.heartbeat",
    "lxmf.delivery",
    "lxmf.propagation",
    "rnstransport.path.request",
    "rnstransport.tunnel.synthesize",
    "rnstransport.remote.management",
    "nomadnetwork.node",
)
_DATA, _ANNOUNCE, _LINKREQUEST, _PROOF = 0, 1, 2, 3
_PLAIN, _LINK = 2, 3
_CONTEXTS = {
    0x01: "resource",
    0x02: "resource adv",
    0x03: "resource req",
    0x04: "resource hmu",
    0x05: "resource proof",
    0x06: "resource cancel",
    0x07: "resource cancel",
    0x09: "request",
    0x0A: "response",
    0x0B: "path response",
    0x0E: "channel",
    0xFA: "keepalive",
    0xFB: "identify",
    0xFC: "close",
    0xFD: "link proof",
    0xFE: "rtt",
    0xFF: "link request proof",
}
_PUBLIC_KEY = 64
_NAME_HASH = 10


def name_hash(aspects: str) -> bytes:
    """RNS's name hash of `app.aspect…`: the first 10 bytes of its SHA-256."""
    return hashlib.sha256(aspects.encode()).digest()[:_NAME_HASH]


def plain_hash(aspects: str) -> bytes:
    """The destination hash of a PLAIN destination (no identity): hash of its name hash."""
    return hashlib.sha256(name_hash(aspects)).digest()[:16]


_BY_NAME_HASH = {name_hash(a): a for a in ASPECTS}
_BY_PLAIN_HASH = {plain_hash(a): a for a in ASPECTS}


@dataclass(frozen=True)
class Packet:
    """The header of one RNS packet, as far as `classify` needs it."""

    packet_type: int
    destination_type: int
    header_2: bool  # a transport node forwards it (a second address: the transport id)
    hops: int
    destination: bytes
    context: int
    data: bytes


def parse(raw: bytes) -> Packet:
    """Raises ValueError for a packet too short for its header."""
    if len(raw) < 19:
        raise ValueError(f"{len(raw)} bytes: shorter than an RNS header")
    flags = raw[0]
    header_2 = bool(flags & 0x40)
    offset = 18 if header_2 else 2
    if len(raw) < offset + 17:
        raise ValueError(f"{len(raw)} bytes: shorter than an RNS header with a transport id")
    return Packet(
        packet_type=flags & 0x03,
        destination_type=(flags >> 2) & 0x03,
        header_2=header_2,
        hops=raw[1],
        destination=raw[offset : offset + 16],
        context=raw[offset + 16],
        data=raw[offset + 17 :],
    )


def classify(raw: bytes) -> str:
    """A short name for what the packet is, e.g. `announce kai_mesh.node`, `heartbeat`,
    `path request`, `link keepalive`, `link data`; `unparsable` for garbage."""
    try:
        p = parse(raw)
    except ValueError:
        return "unparsable"
    relayed = " (relayed)" if p.hops > 0 or p.header_2 else ""
    if p.packet_type == _ANNOUNCE:
        hashed = p.data[_PUBLIC_KEY : _PUBLIC_KEY + _NAME_HASH]
        return f"announce {_BY_NAME_HASH.get(hashed, 'other')}{relayed}"
    if p.packet_type == _LINKREQUEST:
        return "link request"
    if p.packet_type == _PROOF:
        if p.context == 0xFF:
            return "link request proof"
        return "link proof" if p.destination_type == _LINK else "proof"
    if p.destination_type == _PLAIN:
        name = _BY_PLAIN_HASH.get(p.destination)
        if name == "kai_mesh.heartbeat":
            return "heartbeat"
        if name == "rnstransport.path.request":
            return "path request"
        return f"plain {name or 'other'}"
    if p.destination_type == _LINK:
        return f"link {_CONTEXTS.get(p.context, 'data')}"
    if p.context == 0x0B:
        return "path response"
    return f"data to {'single' if p.destination_type == 0 else 'group'}{relayed}"


@dataclass(frozen=True)
class Frame:
    t: float
    node: str
    raw: bytes


def read(path: Path) -> Iterator[Frame]:
    """The frames of a channel daemon's frame log (lines that do not parse are skipped)."""
    with open(path) as f:
        for line in f:
            try:
                entry = json.loads(line)
                yield Frame(float(entry["t"]), str(entry["node"]), bytes.fromhex(entry["hex"]))
            except (ValueError, KeyError, TypeError):
                continue


def summarise(
    frames: Iterable[Frame], start: float = 0.0, end: float | None = None
) -> dict[str, Any]:
    """Per node, per kind: frames and bytes sent between `start` and `end` (seconds in the
    log's time base), and bytes an hour over that window."""
    table: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    last = start
    for frame in frames:
        if frame.t < start or (end is not None and frame.t > end):
            continue
        last = max(last, frame.t)
        cell = table[frame.node][classify(frame.raw)]
        cell[0] += 1
        cell[1] += len(frame.raw)
    hours = max((end if end is not None else last) - start, 1e-9) / 3600
    out: dict[str, Any] = {"hours": round(hours, 4), "nodes": {}}
    for node in sorted(table):
        kinds = table[node]
        total = sum(b for _, b in kinds.values())
        out["nodes"][node] = {
            "bytes_per_hour": round(total / hours),
            "kinds": {
                kind: {"frames": n, "bytes": b, "bytes_per_hour": round(b / hours)}
                for kind, (n, b) in sorted(kinds.items(), key=lambda kv: -kv[1][1])
            },
        }
    return out


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="classify a channel daemon's frame log")
    p.add_argument("log", type=Path)
    p.add_argument("--start", type=float, default=0.0, help="seconds since the daemon started")
    p.add_argument("--end", type=float)
    args = p.parse_args()
    print(json.dumps(summarise(read(args.log), args.start, args.end), indent=2))


if __name__ == "__main__":
    main()
