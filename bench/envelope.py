"""Envelope throughput and size.

Run from the repository root::

    .venv/bin/python bench/envelope.py           # plain text, one figure a line
    .venv/bin/python bench/envelope.py --json    # one JSON object
    .venv/bin/python bench/envelope.py --seconds 0.5

Each rate runs for about `--seconds` (2 s by default). Decoding gives every message a fresh id, so
the replay guard never refuses (a fresh decoder every 20,000 messages); the guard's cost is part
of the figure. The size figures are for a
realistic message: sender by 16-byte node id + agent "cli", to kai://pi1/echo, intent "echo", a
100-byte payload.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable

from kai_mesh.core.mesh.address import AgentAddress, NodeRef, parse_address
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, StandardMessage, encode

MESH_ID = b"M" * 32
NOW = 1_700_000_000
TTL = 3600
POOL = 20_000  # distinct message ids per decoder; the replay guard grows to this size


def _message(secrets: NodeSecrets, message_id: bytes) -> StandardMessage:
    return StandardMessage(
        sender=AgentAddress(NodeRef(node_id=secrets.node_id), "cli"),
        to=parse_address("kai://pi1/echo"),
        intent="echo",
        payload=os.urandom(100),
        timestamp=NOW,
        message_id=message_id,
        expires_at=NOW + TTL,
    )


def _rate(seconds: float, step: Callable[[int], object]) -> float:
    """Calls per second of `step(i)`, timed in batches so the clock is read rarely."""
    done, batch = 0, 64
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(done, done + batch):
            step(i)
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def _decode_rate(
    seconds: float, encoded: list[bytes], new_decoder: Callable[[], EnvelopeDecoder]
) -> float:
    """Decodes per second over a pool of distinct messages, with a fresh decoder (and so a fresh
    replay guard) each time the pool comes round again."""
    state = [new_decoder()]

    def step(i: int) -> None:
        j = i % len(encoded)
        if j == 0:
            state[0] = new_decoder()
        state[0].decode(encoded[j], NOW)

    return _rate(seconds, step)


def run(seconds: float) -> dict[str, float | int]:
    secrets = NodeSecrets.generate(random.Random(1).randbytes)
    message = _message(secrets, b"\x00" * 8)
    pool = [_message(secrets, i.to_bytes(8, "big")) for i in range(POOL)]

    def decoder() -> EnvelopeDecoder:
        return EnvelopeDecoder(
            mesh_id=MESH_ID,
            max_bytes=500,
            max_ttl=TTL,
            verify_key_for={secrets.node_id: secrets.verify_key}.get,
        )

    sign_rate = _rate(seconds, lambda i: encode(message, secrets, MESH_ID))
    plain_rate = _rate(seconds, lambda i: encode(message))
    verify_rate = _decode_rate(seconds, [encode(m, secrets, MESH_ID) for m in pool], decoder)
    decode_rate = _decode_rate(seconds, [encode(m) for m in pool], decoder)

    return {
        "encode_sign_per_s": round(sign_rate),
        "decode_verify_per_s": round(verify_rate),
        "encode_unsigned_per_s": round(plain_rate),
        "decode_unsigned_per_s": round(decode_rate),
        "size_unsigned_bytes": len(encode(message)),
        "size_signed_bytes": len(encode(message, secrets, MESH_ID)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per rate (default 2)")
    args = parser.parse_args()
    result = run(args.seconds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"encode+sign      {result['encode_sign_per_s']:>10,} /s")
    print(f"decode+verify    {result['decode_verify_per_s']:>10,} /s")
    print(f"encode unsigned  {result['encode_unsigned_per_s']:>10,} /s")
    print(f"decode unsigned  {result['decode_unsigned_per_s']:>10,} /s")
    print(f"size unsigned    {result['size_unsigned_bytes']:>10} bytes (100-byte payload)")
    print(f"size signed      {result['size_signed_bytes']:>10} bytes (100-byte payload)")


if __name__ == "__main__":
    main()
