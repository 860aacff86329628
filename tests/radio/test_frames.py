"""The frame log classifier: RNS headers told apart without RNS, checked against its hashes."""

from __future__ import annotations

import json
from pathlib import Path

import RNS

from kai_mesh.harness.radio.frames import classify, name_hash, plain_hash, read, summarise


def _packet(flags: int, destination: bytes, context: int, data: bytes, hops: int = 0) -> bytes:
    return bytes([flags, hops]) + destination + bytes([context]) + data


def test_hashes_are_rns_hashes() -> None:
    for name in ("kai_mesh.heartbeat", "rnstransport.path.request"):
        assert plain_hash(name) == RNS.Destination.hash_from_name_and_identity(name, None)
    assert name_hash("lxmf.delivery") == RNS.Identity.full_hash(b"lxmf.delivery")[:10]


def test_announces_are_named_by_aspect() -> None:
    def announce(aspect: str, hops: int = 0) -> bytes:
        data = bytes(64) + name_hash(aspect) + bytes(10) + bytes(64) + b"app"
        return _packet(0x01, bytes(16), 0, data, hops)  # SINGLE destination, ANNOUNCE

    assert classify(announce("kai_mesh.node")) == "announce kai_mesh.node"
    assert classify(announce("lxmf.delivery")) == "announce lxmf.delivery"
    assert classify(announce("lxmf.propagation", hops=1)) == "announce lxmf.propagation (relayed)"
    assert classify(announce("someone.else")) == "announce other"


def test_plain_link_and_proof_packets() -> None:
    heartbeat = _packet(0x08, plain_hash("kai_mesh.heartbeat"), 0, b"x" * 40)  # PLAIN, DATA
    assert classify(heartbeat) == "heartbeat"
    path_request = _packet(0x08, plain_hash("rnstransport.path.request"), 0, bytes(32))
    assert classify(path_request) == "path request"
    link = bytes(range(16))
    assert classify(_packet(0x0C, link, 0xFA, b"\xff")) == "link keepalive"  # LINK, DATA
    assert classify(_packet(0x0C, link, 0xFC, bytes(80))) == "link close"
    assert classify(_packet(0x0C, link, 0x00, bytes(80))) == "link data"
    assert classify(_packet(0x0C, link, 0x01, bytes(400))) == "link resource"
    assert classify(_packet(0x0F, link, 0xFF, bytes(99))) == "link request proof"  # LINK, PROOF
    assert classify(_packet(0x02, bytes(16), 0, bytes(64))) == "link request"
    assert classify(b"\x00\x00short") == "unparsable"


def test_summarise_a_window(tmp_path: Path) -> None:
    heartbeat = _packet(0x08, plain_hash("kai_mesh.heartbeat"), 0, bytes(100))
    log = tmp_path / "ch0.frames"
    lines = [
        {"t": t, "node": node, "len": len(heartbeat), "hex": heartbeat.hex()}
        for t, node in ((5.0, "a"), (20.0, "a"), (30.0, "b"), (50.0, "a"))
    ]
    log.write_text("".join(json.dumps(e) + "\n" for e in lines) + "not json\n")
    out = summarise(read(log), start=10.0, end=46.0)  # 36 s: a hundredth of an hour
    assert out["nodes"]["a"]["kinds"]["heartbeat"] == {
        "frames": 1,
        "bytes": 119,
        "bytes_per_hour": 11900,
    }
    assert out["nodes"]["b"]["bytes_per_hour"] == 11900
