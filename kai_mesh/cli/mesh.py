"""`kai-mesh drain`, `kai-mesh top` and `kai-mesh agents --mesh`: the mesh's nodes and replicas
as this node sees them (issue 11, item 10)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from kai_mesh.cli.common import ExitCode, call_node, print_json


def cmd_drain(args: argparse.Namespace) -> ExitCode:
    params: dict[str, Any] = {"on": not args.undo}
    if args.node:
        params["node"] = args.node
    result = call_node(args, "services_drain", params)
    if args.json:
        print_json(result)
    elif result["draining"]:
        print(f"{result['node']}: draining; its replicas move to other nodes as they get ready")
    else:
        print(f"{result['node']}: no longer draining")
    return ExitCode.OK


def mesh_agents(args: argparse.Namespace) -> ExitCode:
    rows = call_node(args, "services_replicas", {})["replicas"]
    if args.json:
        print_json(rows)
        return ExitCode.OK
    if not rows:
        print("no replicas in the mesh")
        return ExitCode.OK
    from rich.console import Console
    from rich.table import Table

    table = Table("service", "version", "replica", "node", "state", "agent", "in flight")
    for r in rows:
        reported = "" if r["reported_in_flight"] is None else f" ({r['reported_in_flight']})"
        table.add_row(
            r["service"],
            r["version"] or "-",
            str(r["replica"]),
            r["node"],
            r["state"],
            r["agent"] or "-",
            f"{r['in_flight']}{reported}",
        )
    Console().print(table)
    return ExitCode.OK


def _table(snapshot: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table("node", "cpus", "cpu", "memory", "replicas", "in flight", "queue", "served/s")
    table.add_column("airtime")
    table.add_column("reported")
    for n in snapshot["nodes"]:
        name = n["node"] + (" (draining)" if n["draining"] else "")
        air = ", ".join(f"{k} {v / 10:.1f}%" for k, v in n["airtime_permille"].items()) or "-"
        ago = (
            "now"
            if n["local"]
            else ("-" if n["reported_s_ago"] is None else f"{n['reported_s_ago']:.0f} s ago")
        )
        table.add_row(
            name,
            "-" if n["cpus"] is None else str(n["cpus"]),
            "-" if n["cpu_percent"] is None else f"{n['cpu_percent']}%",
            "-" if n["memory_percent"] is None else f"{n['memory_percent']}%",
            str(n["replicas"]),
            str(n["in_flight"]),
            str(n["queue"]),
            f"{n['served_per_s']:.1f}",
            air,
            ago,
        )
    return table


def cmd_top(args: argparse.Namespace) -> ExitCode:
    if args.json:
        print_json(call_node(args, "telemetry_top", {}))
        return ExitCode.OK
    from rich.live import Live

    with Live(_table(call_node(args, "telemetry_top", {})), auto_refresh=False) as live:
        while True:
            time.sleep(args.interval)
            live.update(_table(call_node(args, "telemetry_top", {})), refresh=True)
