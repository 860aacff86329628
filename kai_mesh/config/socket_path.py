"""Whether a control socket path fits a Unix socket address: checked by the node before it binds
and by the client before it connects, so both fail with the same clear message."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from kai_mesh.core.errors import UsageError

#: Longest socket path, in bytes, that fits `sockaddr_un.sun_path` with its NUL (Linux has 108
#: bytes, macOS and the BSDs 104).
MAX_SOCKET_PATH: Final = 107 if sys.platform.startswith("linux") else 103


class SocketPathTooLong(UsageError):
    """The control socket path does not fit in a Unix socket address."""


def check_socket_path(path: Path, *, spare: int = 0) -> None:
    """Raise `SocketPathTooLong`, naming the path, if it cannot be a Unix socket address.

    `spare` reserves bytes for a longer sibling name the caller binds first.
    """
    size = len(os.fsencode(path))
    allowed = MAX_SOCKET_PATH - spare
    if size > allowed:
        raise SocketPathTooLong(
            f"control socket path {str(path)!r} is {size} bytes; it must be at most {allowed} "
            "to fit in a Unix socket address. Use a shorter --home."
        )
