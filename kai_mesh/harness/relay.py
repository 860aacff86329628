"""A real Nostr relay for the harness, tests and benches: nostr-sdk's `LocalRelay`, in its own
process (a dev/test extra: `pip install -e .[dev]`).

    python -m kai_mesh.harness.relay [--host H] [--port P] [--nip42] [--notes-per-minute N]
                                     [--forever]

prints the relay's `ws://HOST:PORT` URL on one line, then serves until its standard input
closes (so a test that dies takes its relay with it), or with `--forever` until SIGTERM (the
harness runs it so, in its hub namespace, for `up --relay`). nostr-sdk's API is asyncio and changes
between versions (LAB.md), which is why it runs here and not in the trio test process, and why the
dev extra pins it. Its default rate limit (60 notes/min) is raised: tests publish in bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import nostr_sdk  # type: ignore[import-untyped]  # a dev extra, untyped bindings


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nip42", action="store_true", help="require NIP-42 AUTH to read/write")
    parser.add_argument("--notes-per-minute", type=int, default=1_000_000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--forever", action="store_true", help="serve until SIGTERM")
    args = parser.parse_args()
    port = args.port
    if not port:
        # LocalRelay reports port 0 back when asked for one: pick a free port ourselves.
        with socket.socket() as probe:
            probe.bind((args.host, 0))
            port = probe.getsockname()[1]
    builder = nostr_sdk.LocalRelayBuilder().addr(args.host).port(port)
    builder = builder.rate_limit(
        nostr_sdk.RateLimit(max_reqs=500, notes_per_minute=args.notes_per_minute)
    )
    if args.nip42:
        mode = nostr_sdk.LocalRelayBuilderNip42Mode.BOTH
        builder = builder.nip42(nostr_sdk.LocalRelayBuilderNip42(mode=mode))
    relay = builder.build()
    await relay.run()
    print(str(await relay.url()), flush=True)
    if args.forever:
        await asyncio.Event().wait()  # SIGTERM ends the process
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    relay.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
