"""Where one node's files live: a home directory, or the XDG locations.

Its own module, apart from the config's parsing (`settings`), because every short-lived
`kai-mesh` command needs the control socket's path and nothing else of the config (issue 17:
`kai-mesh send` and `--help` import as little as they can).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP = "kai-mesh"
CONFIG_NAME = "config.toml"


@dataclass(frozen=True)
class NodePaths:
    """The files of one node. `home` set: all under it; unset: XDG locations."""

    config_file: Path
    data_dir: Path
    runtime_dir: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> NodePaths:
        home = home or os.environ.get("KAI_MESH_HOME") or None
        if home is not None:
            root = Path(home).expanduser().absolute()
            return cls(root / CONFIG_NAME, root / "data", root / "run")
        xdg_runtime = os.environ.get("XDG_RUNTIME_DIR")
        if xdg_runtime and Path(xdg_runtime).is_dir():
            runtime = Path(platformdirs.user_runtime_dir(APP))
        else:  # no per-user runtime dir (containers, cron, root over SSH): not a shared /tmp
            runtime = Path(platformdirs.user_data_dir(APP)) / "run"
        return cls(
            Path(platformdirs.user_config_dir(APP)) / CONFIG_NAME,
            Path(platformdirs.user_data_dir(APP)),
            runtime,
        )

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "control.sock"

    @property
    def lock(self) -> Path:
        return self.runtime_dir / "node.lock"

    @property
    def secrets(self) -> Path:
        return self.data_dir / "node.key"

    @property
    def genesis(self) -> Path:
        return self.data_dir / "genesis.kai"

    @property
    def member(self) -> Path:
        return self.data_dir / "member.kai"

    @property
    def database(self) -> Path:
        return self.data_dir / "node.db"
