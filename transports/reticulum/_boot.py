"""Starting Reticulum, the process-wide singleton, without letting it take the process over.

`RNS.Reticulum` is one instance per process; it installs SIGINT/SIGTERM handlers of its own and
answers an interface it cannot create with `os._exit(255)` (LAB.md). `start_reticulum` writes the
config it is given, starts RNS with its log lines routed into `logging` (the last errors kept, to
explain a failed start) and `RNS.panic` made an exception for the while, then puts the signal
handlers and `RNS.panic` back. Main thread only, before `trio.run`.

RNS remembers the hash of every packet it has seen, to drop duplicates, in a set it rotates when
it passes half of `Transport.hashlist_maxsize` (RNS's default: 1,000,000, so up to a million
hashes alive): on a broadcast segment every node hashes every packet, flood or not, and the soak
(bench/soak.py) measured 580,000 hashes, most of the node's RSS growth, after 23 minutes. We
keep `DUPLICATE_WINDOW` instead: at most that many hashes (~22 MB), which still covers hours of
a radio's packets and minutes of a busy LAN's; a duplicate arrives within seconds, and what is
older is refused by our own layer (replay guard, link encryption, signed records).
"""

from __future__ import annotations

import logging
import signal
from collections import deque
from pathlib import Path
from typing import Any

import RNS

from kai_mesh.core.errors import TransportError

_RECENT_ERRORS: deque[str] = deque(maxlen=2)
DUPLICATE_WINDOW = 200_000  # packet hashes RNS keeps to drop duplicates (see the docstring)


def start_reticulum(configdir: Path, config_text: str) -> Any:
    """Write `config_text` as RNS's config in `configdir` and start RNS. Raises
    `TransportError`, naming RNS's last errors, when it does not start."""
    configdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (configdir / "config").write_text(config_text)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    panic = RNS.panic
    # RNS answers an interface it cannot create (a port in use, a missing device) with
    # os._exit(255) and no word to the user: make that an exception we can explain.
    RNS.panic = _raise_panic
    RNS.Transport.hashlist_maxsize = DUPLICATE_WINDOW  # read by RNS's job loop when it rotates
    try:
        return RNS.Reticulum(configdir=str(configdir), loglevel=RNS.LOG_NOTICE, logdest=_rns_log)
    except Exception as exc:
        detail = "; ".join(_RECENT_ERRORS) or str(exc)
        raise TransportError(f"Reticulum did not start: {detail}") from None
    finally:
        RNS.panic = panic
        for signum, handler in saved.items():
            signal.signal(signum, handler)


class _RnsPanic(Exception):
    pass


def _raise_panic() -> None:
    raise _RnsPanic("Reticulum gave up")


def _rns_log(message: str) -> None:
    # RNS hands over finished lines: "[time] [Level]   text". Keep the last errors to explain a
    # failed start; pass everything on to logging at a level matching RNS's own.
    level = logging.INFO
    if "[Error]" in message or "[Critical]" in message:
        level = logging.ERROR
        text = message.split("]", 2)[-1].strip()
        if not text.startswith(("Traceback", "File ", "An unhandled")):
            _RECENT_ERRORS.append(text)
    elif "[Warning]" in message:
        level = logging.WARNING
    logging.getLogger("RNS").log(level, "%s", message)
