"""The TUI's own settings: rebound keys, theme, mouse. A small TOML file, looked up in order:

1. `$KAI_MESH_TUI_CONFIG` (tests point it at a throw-away file, as Harlequin keeps the
   developer's config out of its tests);
2. `<home>/tui.toml` when the node's home is given (`--home` or `$KAI_MESH_HOME`);
3. `$XDG_CONFIG_HOME/kai-mesh/tui.toml` (platformdirs' user config dir).

```toml
theme = "textual-light"     # any Textual theme; the palette's "theme" command lists them
mouse = false               # over SSH split mouse sequences leak into inputs: off by default

[keys]                      # binding id = keys, comma-separated (ids: press ? in the TUI)
"screen.peers" = "p,f3"
"app.quit" = "q,f10"
```

A file that is not TOML, or a value of the wrong type, is a `ConfigError` naming the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from kai_mesh.core.errors import ConfigError

FILE_NAME = "tui.toml"


@dataclass(frozen=True)
class TuiConfig:
    keys: dict[str, str] = field(default_factory=dict)
    theme: str | None = None
    mouse: bool = False
    path: Path | None = None


def config_path(home: str | None) -> Path:
    explicit = os.environ.get("KAI_MESH_TUI_CONFIG")
    if explicit:
        return Path(explicit)
    home = home or os.environ.get("KAI_MESH_HOME") or None
    if home:
        return Path(home).expanduser() / FILE_NAME
    return Path(platformdirs.user_config_dir("kai-mesh")) / FILE_NAME


def load_tui_config(home: str | None = None) -> TuiConfig:
    """The settings, or defaults when there is no file. Raises `ConfigError`."""
    path = config_path(home)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return TuiConfig(path=path)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    keys = raw.get("keys", {})
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
    ):
        raise ConfigError(f'{path}: [keys] maps binding ids to key strings, e.g. "app.quit" = "q"')
    theme = raw.get("theme")
    if theme is not None and not isinstance(theme, str):
        raise ConfigError(f"{path}: theme must be a string")
    mouse = raw.get("mouse", False)
    if not isinstance(mouse, bool):
        raise ConfigError(f"{path}: mouse must be true or false")
    return TuiConfig(keys=dict(keys), theme=theme, mouse=mouse, path=path)
