"""What NIP-59 gift wrap costs per message, against kai-mesh's plain frame event.

    .venv/bin/python bench/giftwrap.py [--count 300] [--json]

Plain: the frame's NIP-44 payload to the recipient in one event signed by the sender (what
`NostrTransport.send` publishes). Wrapped: the same bytes (base64, as a rumor's content is
text) in a rumor, sealed and wrapped (`kai_mesh/core/nostr/giftwrap.py`). Per message, for a
few frame sizes: the event's JSON bytes on the wire, and CPU milliseconds to make it (sign,
encrypt) and to take it (verify, decrypt) on this machine, medians. No relay: the relay's share
is the same per byte either way (bench/nostr.py measures it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kai_mesh.core.nostr import nip44
from kai_mesh.core.nostr.event import public_key, sign_event, verify_event
from kai_mesh.core.nostr.giftwrap import KIND_EPHEMERAL_WRAP, unwrap, wrap

ALICE, BOB = bytes([7]) * 32, bytes([9]) * 32
SIZES = (100, 1000, 10_000)


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def one_size(size: int, count: int) -> dict[str, Any]:
    bob = public_key(BOB)
    conv_a, conv_b = nip44.conversation_key(ALICE, bytes.fromhex(bob)), None
    conv_b = nip44.conversation_key(BOB, bytes.fromhex(public_key(ALICE)))
    frame = os.urandom(size)
    tags = [["p", bob], ["m", "0" * 32], ["expiration", "1800000060"]]
    make_plain, take_plain, make_wrap, take_wrap = [], [], [], []
    plain_bytes = wrap_bytes = 0
    for _ in range(count):
        t0 = time.perf_counter()
        content = nip44.encrypt(frame, conv_a, os.urandom(32))
        event = sign_event(
            ALICE, created_at=1_800_000_000, kind=28931, tags=tags, content=content,
            aux=os.urandom(32),
        )  # fmt: skip
        t1 = time.perf_counter()
        verify_event(event)
        assert nip44.decrypt(event.content, conv_b) == frame
        t2 = time.perf_counter()
        w = wrap(
            sender_secret=ALICE, recipient=bob, kind=28931, tags=tags[1:],
            content=base64.b64encode(frame).decode(), now=1_800_000_000,
            randbytes=os.urandom, wrap_kind=KIND_EPHEMERAL_WRAP, backdate=5,
            public_tags=[tags[2]],
        )  # fmt: skip
        t3 = time.perf_counter()
        verify_event(w)
        _sender, rumor = unwrap(w, BOB)
        assert base64.b64decode(rumor.content) == frame
        t4 = time.perf_counter()
        make_plain.append(t1 - t0)
        take_plain.append(t2 - t1)
        make_wrap.append(t3 - t2)
        take_wrap.append(t4 - t3)
        plain_bytes = len(json.dumps(["EVENT", event.to_json()], separators=(",", ":")).encode())
        wrap_bytes = len(json.dumps(["EVENT", w.to_json()], separators=(",", ":")).encode())
    return {
        "frame_bytes": size,
        "plain_event_bytes": plain_bytes,
        "wrapped_event_bytes": wrap_bytes,
        "bytes_ratio": round(wrap_bytes / plain_bytes, 2),
        "plain_make_ms": _median_ms(make_plain),
        "plain_take_ms": _median_ms(take_plain),
        "wrapped_make_ms": _median_ms(make_wrap),
        "wrapped_take_ms": _median_ms(take_wrap),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [one_size(size, args.count) for size in SIZES]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(", ".join(f"{k} {v}" for k, v in row.items()))
