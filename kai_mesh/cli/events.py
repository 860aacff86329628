"""`kai-mesh events --mesh TOPIC…` (follow mesh events) and `kai-mesh publish TOPIC [FIELDS]`.

Following a mesh topic subscribes the control connection to `mesh:TOPIC`; the node adds the topic
to the interest it tells its peers, so events published anywhere in the mesh start coming here
within one round of the node's loop (about a second). Without topics: `*`, every topic.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from kai_mesh.cli.common import CliError, ExitCode, _client, load_json, print_json
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import UsageError

HUB_PREFIX = "mesh:"


def _line(data: dict[str, Any]) -> str:
    at = time.strftime("%H:%M:%S", time.localtime(data.get("at") or 0))
    who = data.get("origin_name") or str(data.get("origin", ""))[:8]
    fields = " ".join(f"{k}={v}" for k, v in (data.get("fields") or {}).items())
    return f"{at} {who} {data.get('topic')} {fields}".rstrip()


def follow_mesh(args: argparse.Namespace) -> ExitCode:
    from kai_mesh.core.events.wire import check_topic  # here: the CLI's import stays light

    topics = [check_topic(t, pattern=True) for t in (args.topics or ["*"])]
    with _client(args, timeout=None) as client:
        client.subscribe([HUB_PREFIX + t for t in topics])
        for topic, data in client.events():
            if not topic.startswith(HUB_PREFIX):  # `lagged`: say so, keep following
                print_json({"event": topic, "data": data}) if args.json else print(
                    f"(missed {data.get('dropped', '?')} events: this terminal fell behind)"
                )
            elif "*" in topics and topic != HUB_PREFIX + "*":
                continue  # each event also comes as mesh:*; print it once
            elif args.json:
                print_json(data)
            else:
                print(_line(data))
            sys.stdout.flush()
    return ExitCode.OK


def cmd_publish(args: argparse.Namespace) -> ExitCode:
    from kai_mesh.core.events.wire import check_topic

    try:
        check_topic(args.topic)
    except UsageError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    fields = load_json(args.fields, "fields") if args.fields is not None else {}
    if not isinstance(fields, dict):
        raise CliError("fields: a JSON object such as '{\"zone\": 3}'", ExitCode.USAGE)
    params: dict[str, Any] = {"topic": args.topic, "fields": fields}
    if args.must_arrive:
        params["must_arrive"] = True
    with _client(args) as client:
        try:
            reply = client.call("events_publish", params)
        except ControlError as exc:
            code = ExitCode.USAGE if exc.code == "bad_request" else ExitCode.FAILURE
            raise CliError(f"{exc.code}: {exc.message}", code) from None
    if args.json:
        print_json(reply)
    else:
        print(f"published {reply['topic']} #{reply['seq']} to {reply['peers']} interested node(s)")
    return ExitCode.OK


def add_publish_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "publish a mesh event to every node that follows its topic"
    p = sub.add_parser("publish", parents=[common], help=text, description=text)
    p.set_defaults(fn=cmd_publish)
    p.add_argument("topic", help="e.g. camera.motion, or a built-in such as task.created")
    p.add_argument("fields", nargs="?", help="the event's fields as a JSON object")
    p.add_argument(
        "--must-arrive",
        action="store_true",
        help="deliver through the outbox (retried until acknowledged) instead of at most once",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
