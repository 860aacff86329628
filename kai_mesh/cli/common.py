"""What every `kai-mesh` command module shares: exit codes, errors, JSON output, the client."""

from __future__ import annotations

import argparse
import base64
import enum
import json
import math
from collections.abc import Callable
from typing import Any

from kai_mesh.client import ControlClient
from kai_mesh.config.paths import NodePaths
from kai_mesh.core.control.errors import ControlError, NodeNotRunning
from kai_mesh.core.errors import UsageError

MAX_SECONDS = 7 * 24 * 3600.0  # the longest wait a command takes (a message lives a week at most)
MAX_JSON_DEPTH = 64  # deeper JSON from the command line is refused, not a RecursionError


def seconds(text: str, *, allow_zero: bool = False) -> float:
    """An argparse type: a finite number of seconds, positive (or zero), at most a week."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        which = "zero or more" if allow_zero else "positive"
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite, {which} number of seconds")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_SECONDS:.0f} seconds (a week)")
    return value


def load_json(text: str, what: str) -> Any:
    """JSON from the command line, nested at most `MAX_JSON_DEPTH` deep.

    Raises:
        UsageError: not JSON, or nested too deep (named `what`: "payload", "value", "body").
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"{what}: JSON nested more than {MAX_JSON_DEPTH} deep") from None
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise UsageError(f"{what}: JSON nested more than {MAX_JSON_DEPTH} deep")
            children = item.values() if isinstance(item, dict) else item
            todo.extend((child, depth + 1) for child in children)
    return value


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
