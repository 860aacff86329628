"""`kai-mesh` is a short-lived process per command: importing `kai_mesh.cli.main` (all that
`--help`, `send`, `status` and `peers` need) must not load the node's heavy modules (issue 17).

Each check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Top-level packages that only the daemon, the harness, the TUI or one rare command use.
HEAVY = (
    "trio",
    "anyio",
    "RNS",
    "LXMF",
    "pycrdt",
    "textual",
    "rich",
    "nacl",
    "coincurve",
    "psutil",
    "sqlite3",
    "trio_websocket",
    "kai_mesh.runtime",
    "kai_mesh.core.orchestration",
    "kai_mesh.config.settings",  # the config's parsing: `run` and `init` only
    "kai_mesh.config.interfaces",
    "kai_mesh.harness.cluster",
    "transports",
    "tui",
)


def _loaded(code: str) -> list[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    return json.loads(out.stdout)


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_importing_the_cli_loads_no_heavy_module() -> None:
    assert _heavy(_loaded("import kai_mesh.cli.main")) == []


@pytest.mark.parametrize("argv", [["--help"], ["send", "--help"], ["harness", "up", "--help"]])
def test_help_loads_no_heavy_module(argv: list[str]) -> None:
    code = (
        "import contextlib, io\n"
        "from kai_mesh.cli.main import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r})"
    )
    assert _heavy(_loaded(code)) == []


def test_send_to_no_node_loads_no_heavy_module(tmp_path: object) -> None:
    code = (
        "import contextlib, io\n"
        "from kai_mesh.cli.main import main\n"
        "with contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert main(['--home', {str(tmp_path)!r}, 'send', 'kai://a/echo', 'echo']) == 3\n"
    )
    assert _heavy(_loaded(code)) == []
