"""What every `kai-mesh` command module shares: exit codes, errors, JSON output, the client."""

from __future__ import annotations

import argparse
import base64
import enum
import json
from collections.abc import Callable
from typing import Any

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.control.errors import ControlError, NodeNotRunning


class ExitCode(enum.IntEnum):
    """Exit codes of every `kai-mesh` command (also listed in the README)."""

    OK = 0
    FAILURE = 1  # an unexpected failure; the message says what
    USAGE = 2  # bad arguments, a broken config file, a malformed address or payload
    NOT_RUNNING = 3  # no daemon is running on this home
    CONFLICT = 4  # a node already exists (init) or already runs (run) on this home
    REMOTE_ERROR = 5  # the message was delivered and answered with an error
    TIMEOUT = 6  # no reply in time
    INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.code = code


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def print_json(value: Any) -> None:
    print(json.dumps(value, default=_json_default, ensure_ascii=False))


def _paths(args: argparse.Namespace) -> NodePaths:
    return NodePaths.resolve(args.home)


def _client(args: argparse.Namespace, timeout: float | None = 10.0) -> ControlClient:
    paths = _paths(args)
    try:
        return ControlClient(paths.socket, timeout=timeout)
    except NodeNotRunning:
        home = f" --home {args.home}" if args.home else ""
        raise CliError(
            f"no node is running on {paths.config_file.parent} "
            f"(no control socket at {paths.socket}); start one with: kai-mesh{home} run",
            ExitCode.NOT_RUNNING,
        ) from None


def call_node(args: argparse.Namespace, method: str, params: dict[str, Any]) -> Any:
    """One control request; an error reply is a `CliError` (exit 2 for a bad request, else 1)."""
    with _client(args, timeout=60) as client:
        try:
            return client.call(method, params)
        except ControlError as exc:
            code = ExitCode.USAGE if exc.code == "bad_request" else ExitCode.FAILURE
            raise CliError(f"{exc.code}: {exc.message}", code) from None


def add_verb(
    verbs: Any,
    common: argparse.ArgumentParser,
    name: str,
    fn: Callable[[argparse.Namespace], ExitCode],
    help: str,
) -> argparse.ArgumentParser:
    """A sub-command of a group (`state show`, `genesis sign`, …) that takes `--json`."""
    p: argparse.ArgumentParser = verbs.add_parser(
        name, parents=[common], help=help, description=help
    )
    p.set_defaults(fn=fn)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    return p
