"""`kai-mesh relays …`: the Nostr relays this node reaches other islands through.

`list`, `add URL` and `remove URL` read and edit `[nostr] relays` in the node's config (the
daemon takes a change at its next start); `status` asks the running node how each relay is
doing: connected or not, demoted, the last ping's latency, its NIP-11 message limit, events
sent, accepted and received, and what it refused, by reason.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kai_mesh.cli.common import ExitCode, _paths, add_verb, call_node, print_json
from kai_mesh.core.errors import ConfigError, UsageError

# The config's parsers load only when a relays command runs: every other command's start-up
# stays light (tests/cli/test_import_cost.py).


def _configured(args: argparse.Namespace) -> list[str]:
    from kai_mesh.config.settings import load_config

    return list(load_config(_paths(args).config_file).nostr.relays)


def cmd_list(args: argparse.Namespace) -> ExitCode:
    relays = _configured(args)
    if args.json:
        print_json({"relays": relays})
    elif relays:
        print("\n".join(relays))
    else:
        print("no relays: this node has no Nostr transport (`kai-mesh relays add URL`)")
    return ExitCode.OK


def _edit(args: argparse.Namespace, change: Callable[[list[str], str], list[str]]) -> ExitCode:
    from kai_mesh.config.nostr import check_relay_url, write_relays

    try:
        url = check_relay_url(args.url)
    except ConfigError as exc:
        raise UsageError(f"{args.url!r}: {exc}") from None
    config_file = _paths(args).config_file
    before = _configured(args)
    after = change(before, url)
    if after != before:
        write_relays(config_file, after)
    if args.json:
        print_json({"relays": after, "changed": after != before})
    elif after == before:
        print(f"{url}: nothing to change")
    else:
        print(f"relays now: {', '.join(after) or 'none'} (the node takes it at its next start)")
    return ExitCode.OK


def _add(relays: list[str], url: str) -> list[str]:
    return relays if url in relays else [*relays, url]


def _remove(relays: list[str], url: str) -> list[str]:
    if url not in relays:
        raise UsageError(f"{url} is not one of this node's relays ({', '.join(relays) or 'none'})")
    return [r for r in relays if r != url]


def cmd_add(args: argparse.Namespace) -> ExitCode:
    return _edit(args, _add)


def cmd_remove(args: argparse.Namespace) -> ExitCode:
    return _edit(args, _remove)


def cmd_status(args: argparse.Namespace) -> ExitCode:
    relays = call_node(args, "relays", {})
    if args.json:
        print_json({"relays": relays})
        return ExitCode.OK
    if not relays:
        print("no relays: this node has no Nostr transport")
        return ExitCode.OK
    for r in relays:
        print(_line(r))
    return ExitCode.OK


def _line(r: dict[str, Any]) -> str:
    state = "connected" if r["connected"] else "down"
    if r["demoted"]:
        state += ", demoted"
    latency = "-" if r["latency"] is None else f"{r['latency'] * 1000:.1f} ms"
    refused = ", ".join(f"{k} {v}" for k, v in sorted(r["refused"].items())) or "nothing"
    return (
        f"{r['url']}: {state}; ping {latency}; max message {r['max_message_length']} B; "
        f"sent {r['sent']}, accepted {r['accepted']}, received {r['received']}; "
        f"refused {refused}; connections {r['successes']}/{r['attempts']}"
    )


def add_relays_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    text = "the Nostr relays this node reaches other islands through"
    p = sub.add_parser("relays", parents=[common], help=text, description=__doc__)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_verb(verbs, common, "list", cmd_list, "the relays in this node's config")
    one = add_verb(verbs, common, "add", cmd_add, "add a relay (ws:// or wss://) to the config")
    one.add_argument("url", metavar="URL")
    one = add_verb(verbs, common, "remove", cmd_remove, "remove a relay from the config")
    one.add_argument("url", metavar="URL")
    add_verb(verbs, common, "status", cmd_status, "each relay's state on the running node")
