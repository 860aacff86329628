"""`kai-mesh relays …`: the Nostr relays this node reaches other islands through.

`list`, `add URL [--read | --write]` and `remove URL` read and edit `[nostr] relays` in the
node's config (the daemon takes a change at its next start). A relay is read from and written to,
or, with a NIP-65 marker, only read (`--read`: subscribed on, never published to) or only written
(`--write`: published to, never subscribed on); `add` on a listed relay changes its marker.
`status` asks the running node how each relay is doing: read/write, connected or not, demoted,
the last ping's latency, its NIP-11 message limit, events sent, accepted and received, and what
it refused, by reason.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from kai_mesh.cli.common import ExitCode, _paths, add_verb, call_node, print_json
from kai_mesh.core.errors import ConfigError, UsageError

# The config's parsers load only when a relays command runs: every other command's start-up
# stays light (tests/cli/test_import_cost.py).


Relays = tuple[list[str], dict[str, str]]  # URLs in order, and the markers of some


def _configured(args: argparse.Namespace) -> Relays:
    from kai_mesh.config.settings import load_config

    nostr = load_config(_paths(args).config_file).nostr
    return list(nostr.relays), dict(nostr.markers)


def _listed(relays: Relays) -> dict[str, Any]:
    """The `--json` shape: URLs in order, and the NIP-65 marker of those read or written only."""
    urls, markers = relays
    return {"relays": urls, "markers": markers}


def _show(relays: Relays) -> str:
    from kai_mesh.core.nostr.markers import describe

    urls, markers = relays
    return ", ".join(f"{u} ({describe(markers, u)})" for u in urls) or "none"


def cmd_list(args: argparse.Namespace) -> ExitCode:
    relays = _configured(args)
    if args.json:
        print_json(_listed(relays))
    elif relays[0]:
        print("\n".join(_show(([u], relays[1])) for u in relays[0]))
    else:
        print("no relays: this node has no Nostr transport (`kai-mesh relays add URL`)")
    return ExitCode.OK


def _edit(
    args: argparse.Namespace, change: Callable[[Relays, str, str | None], Relays]
) -> ExitCode:
    from kai_mesh.config.nostr import check_relay_url, write_relays

    try:
        url = check_relay_url(args.url)
    except ConfigError as exc:
        raise UsageError(f"{args.url!r}: {exc}") from None
    config_file = _paths(args).config_file
    before = _configured(args)
    after = change(before, url, getattr(args, "marker", None))
    if after != before:
        write_relays(config_file, *after)
    if args.json:
        print_json({**_listed(after), "changed": after != before})
    elif after == before:
        print(f"{url}: nothing to change")
    else:
        print(f"relays now: {_show(after)} (the node takes it at its next start)")
    return ExitCode.OK


def _add(relays: Relays, url: str, marker: str | None) -> Relays:
    """Add `url`, or give a listed one `marker` (None: read and write)."""
    urls, markers = relays[0], dict(relays[1])
    markers.pop(url, None)
    if marker is not None:
        markers[url] = marker
    return (urls if url in urls else [*urls, url]), markers


def _remove(relays: Relays, url: str, _marker: str | None) -> Relays:
    urls, markers = relays
    if url not in urls:
        raise UsageError(f"{url} is not one of this node's relays ({', '.join(urls) or 'none'})")
    return [r for r in urls if r != url], {u: m for u, m in markers.items() if u != url}


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
    use = "+".join(k for k in ("read", "write") if r.get(k, True))
    state = f"{use}, " + ("connected" if r["connected"] else "down")
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
    use = one.add_mutually_exclusive_group()
    only = "only %s this relay (NIP-65 marker); neither flag: read and write"
    use.add_argument(
        "--read", dest="marker", action="store_const", const="read", help=only % "read"
    )
    use.add_argument(
        "--write", dest="marker", action="store_const", const="write", help=only % "write to"
    )
    one = add_verb(verbs, common, "remove", cmd_remove, "remove a relay from the config")
    one.add_argument("url", metavar="URL")
    add_verb(verbs, common, "status", cmd_status, "each relay's state on the running node")
