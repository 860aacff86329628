"""The `kai-mesh` commands that show the running node: status, peers, agents, outbox."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from kai_mesh.cli.common import ExitCode, _client, print_json


def cmd_peers(args: argparse.Namespace) -> ExitCode:
    with _client(args) as client:
        peers = client.call("peers")
    if args.json:
        print_json(peers)
        return ExitCode.OK
    if not peers:
        print("no peers heard yet")
        return ExitCode.OK
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "node id", "status", "hops", "interface", "last heard", "rtt")
    now = time.time()
    for p in peers:
        rtt = "-" if p["rtt_ms"] is None else f"{p['rtt_ms']:.1f} ms"
        hops = "?" if p["hops"] is None else str(p["hops"])
        status = p.get("status") or "-"
        if p.get("since") is not None:
            status += f" for {_duration(now - p['since'])}"
        table.add_row(
            p["name"] or "?",
            p["node_id"],
            status,
            hops,
            p["interface"] or "-",
            f"{p['last_heard_s_ago']:.0f} s ago",
            rtt,
        )
    Console().print(table)
    return ExitCode.OK


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_outbox(args: argparse.Namespace) -> ExitCode:
    with _client(args) as client:
        rows = client.call("outbox", {"all": args.all})
    if args.json:
        print_json(rows)
        return ExitCode.OK
    if not rows:
        print("the outbox is empty" if args.all else "nothing waits in the outbox")
        return ExitCode.OK
    from rich.console import Console
    from rich.table import Table

    table = Table("message", "to", "intent", "priority", "state", "tries", "age", "why / reply")
    for r in rows:
        if r["state"] == "waiting":
            why = r["last_error"] or ("no ack yet" if r["attempts"] else "not sent yet")
            if r.get("sending"):
                why = f"sending now (try {r['attempts'] + 1}); before: {why}"
            if r["handed_off"]:
                why += "; left with LXMF propagation"
        else:
            why = json.dumps(r["reply"]["payload"]) if r["reply"] else "-"
        table.add_row(
            r["message_id"],
            r["to"],
            r["intent"],
            r["priority"],
            r["state"],
            str(r["attempts"]),
            _duration(r["age_s"]),
            why,
        )
    Console().print(table)
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> ExitCode:
    with _client(args) as client:
        status = client.call("status")
    if args.json:
        print_json(status)
        return ExitCode.OK
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    rows = [
        ("node", f"{status['name']}  {status['node_id']}"),
        (
            "mesh",
            f"{status['mesh_name']}  {status['mesh_id'][:32]}…  "
            f"({status['threshold']} of {status['admins']} admins)",
        ),
        ("uptime", f"{status['uptime_s']:.0f} s"),
        ("memory", f"{status['rss_bytes'] / 2**20:.1f} MiB RSS"),
        ("agents", _agents_line(status)),
        (
            "transports",
            "; ".join(map(_transport_line, status["transports"])) or "none (local only)",
        ),
        ("messages", ", ".join(f"{k} {v}" for k, v in status["bus"].items() if k != "queued")),
        *_delivery_rows(status),
        (
            "refused input",
            ", ".join(f"{k} {v}" for k, v in status["refused"].items() if v) or "none",
        ),
    ]
    for key, value in rows:
        table.add_row(f"[bold]{key}[/]", value)
    Console().print(table)
    return ExitCode.OK


def _agents_line(status: dict[str, Any]) -> str:
    line = ", ".join(f"{a['name']} ({a['state']})" for a in status["agents"]) or "none"
    governance = status.get("governance") or {}
    if governance.get("shutdown"):
        reason = governance.get("shutdown_reason") or "no reason given"
        line += f" — all stopped by the mesh's emergency shutdown: {reason}"
    return line


def _delivery_rows(status: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for lane in status.get("airtime") or []:
        rows.append(
            (
                f"airtime {lane['interface']}",
                f"{lane['used_s']:.1f} of {lane['budget_s']:.1f} s/h "
                f"({lane['used_fraction']:.0%}; duty cycle {lane['duty_cycle']:.4g}, "
                f"{lane['bitrate']} bit/s), {lane['queued']} waiting, "
                f"shed {sum(lane['shed'].values())}",
            )
        )
    outbox = status.get("outbox")
    if outbox:
        rows.append(
            (
                "outbox",
                f"{outbox['waiting']} waiting, {outbox['delivered']} delivered, "
                f"{outbox['expired']} expired, {outbox['attempts']} attempts",
            )
        )
    live = status.get("liveness")
    if live:
        peers = ", ".join(f"{n} {k}" for k, n in live["peers"].items())
        rows.append(
            (
                "liveness",
                f"peers {peers}; heartbeat every {live['heartbeat_interval_s']:g} s, "
                f"local health {live['local_health']}",
            )
        )
    return rows


def _transport_line(transport: dict[str, Any]) -> str:
    interfaces = ", ".join(
        f"{i['name']} ({i['kind']}, {'up' if i['online'] else 'down'}, "
        f"tx {i['tx_bytes'] / 1000:.1f} kB, rx {i['rx_bytes'] / 1000:.1f} kB)"
        for i in transport["interfaces"]
    )
    return f"{transport['name']}: {transport['peers']} peers via {interfaces or 'no interface'}"


def cmd_agents(args: argparse.Namespace) -> ExitCode:
    if getattr(args, "mesh", False):
        from kai_mesh.cli.mesh import mesh_agents

        return mesh_agents(args)
    with _client(args) as client:
        agents = client.call("agents")
    if args.json:
        print_json(agents)
        return ExitCode.OK
    from rich.console import Console
    from rich.table import Table

    table = Table("agent", "intents", "isolation", "state", "served", "errors", "restarts")
    for a in agents:
        table.add_row(
            a["name"],
            ", ".join(a["intents"]),
            a["isolation"],
            f"{a['state']} ({a['reason']})"
            if a["state"] == "stopped" and a.get("reason")
            else a["state"],
            str(a["served"]),
            str(a["errors"]),
            str(a["restarts"]),
        )
    Console().print(table)
    return ExitCode.OK
