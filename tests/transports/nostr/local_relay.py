"""A real Nostr relay for tests and benches: nostr-sdk's `LocalRelay`, in its own process.

    python tests/transports/nostr/local_relay.py [--nip42] [--notes-per-minute N]

prints the relay's `ws://127.0.0.1:PORT` URL on one line, then serves until its standard input
closes (so a test that dies takes its relay with it). nostr-sdk's API is asyncio and changes
between versions (LAB.md), which is why it runs here and not in the trio test process, and why the
dev extra pins it. Its default rate limit (60 notes/min) is raised: tests publish in bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import nostr_sdk


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nip42", action="store_true", help="require NIP-42 AUTH to read/write")
    parser.add_argument("--notes-per-minute", type=int, default=1_000_000)
    args = parser.parse_args()
    # LocalRelay reports port 0 back when asked for one: pick a free port ourselves.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    builder = nostr_sdk.LocalRelayBuilder().addr("127.0.0.1").port(port)
    builder = builder.rate_limit(
        nostr_sdk.RateLimit(max_reqs=500, notes_per_minute=args.notes_per_minute)
    )
    if args.nip42:
        mode = nostr_sdk.LocalRelayBuilderNip42Mode.BOTH
        builder = builder.nip42(nostr_sdk.LocalRelayBuilderNip42(mode=mode))
    relay = builder.build()
    await relay.run()
    print(str(await relay.url()), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    relay.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
