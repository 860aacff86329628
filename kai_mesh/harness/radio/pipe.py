"""The command a node's Reticulum `PipeInterface` runs: a byte relay to the channel daemon.

RNS writes HDLC frames to this process's stdin and reads frames from its stdout. The relay does
not parse them: it connects to the daemon's Unix socket, introduces itself (`node NAME`) and
copies bytes both ways until either side closes; then it exits and RNS respawns it after the
interface's `respawn_delay`. The daemon may start a moment after the node, so connecting is
retried for `--wait` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import sys
import time
from collections.abc import Sequence

CHUNK = 65536


def connect(path: str, wait: float) -> socket.socket:
    """Connect to the daemon at `path`, retrying for `wait` seconds. Raises `OSError`."""
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def relay(sock: socket.socket, stdin: int, stdout: int) -> None:
    """Copy stdin → socket and socket → stdout until one of them ends."""
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, "in")
    selector.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in selector.select():
            if key.data == "in":
                data = os.read(stdin, CHUNK)
                if not data:
                    return
                sock.sendall(data)
            else:
                data = sock.recv(CHUNK)
                if not data:
                    return
                _write_all(stdout, data)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kai_mesh.harness.radio.pipe")
    p.add_argument("--socket", required=True, help="the channel daemon's Unix socket")
    p.add_argument("--node", required=True, help="this node's name on the channel")
    p.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the daemon")
    args = p.parse_args(argv)
    try:
        sock = connect(args.socket, args.wait)
    except OSError as exc:
        print(f"pipe: cannot reach the channel at {args.socket}: {exc}", file=sys.stderr)
        return 1
    with sock:
        sock.sendall(f"node {args.node}\n".encode())
        with contextlib.suppress(BrokenPipeError, ConnectionError):  # either side went away
            relay(sock, sys.stdin.fileno(), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
