"""The Textual TUI (`kai-mesh tui`), a client of the node's control socket only
(docs/control-protocol.md; the import contract in pyproject.toml keeps the runtime and transports
out). The node keeps running when the TUI closes. docs/tui.md says how to use it.
"""

from __future__ import annotations

import os
from pathlib import Path


def run_tui(socket: Path, *, home: str | None = None, mouse: bool | None = None) -> None:
    """Run the TUI on this terminal until the operator quits. Raises `ConfigError` for a bad
    tui.toml. `mouse=None` takes the config's choice (off by default)."""
    from tui.app import MeshApp
    from tui.config import load_tui_config

    config = load_tui_config(home)
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")  # a Pi over SSH gains nothing from them
    start = f"kai-mesh --home {home} run" if home else "kai-mesh run"
    app = MeshApp(socket, start_command=start, config=config)
    app.run(mouse=config.mouse if mouse is None else mouse)
