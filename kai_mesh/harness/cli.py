"""`kai-mesh harness …`: many nodes, one per network namespace, on this machine.

`add_harness_parser` hangs the subcommands under `kai-mesh harness`; each sets `fn`, which
returns an exit code and raises the project's errors for `kai_mesh.cli.main.main` to map (a
`UsageError`, including `NotPrivileged`, is exit 2). `main` runs the same parser standalone:
`python -m kai_mesh.harness.cli up -n 3`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kai_mesh.core.errors import ConfigError, KaiMeshError, UsageError
from kai_mesh.harness import netns

if TYPE_CHECKING:
    from kai_mesh.harness import cluster


def _dir(args: argparse.Namespace) -> Path:
    return Path(args.dir).absolute()


def _print(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, ensure_ascii=False) if args.json else text)


def _islands(text: str | None, n: int | None) -> tuple[int, list[int]]:
    """(-n, island sizes) from `--islands` ("3,3"; or "2": two islands sharing -n evenly)."""
    if not text:
        if n is None:
            raise UsageError("give -n (how many nodes), or --islands")
        return n, []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--islands {text!r}: sizes such as 3,3, or a count with -n") from None
    if len(sizes) == 1:
        if n is None or sizes[0] < 2 or n < sizes[0]:
            raise UsageError(f"--islands {text}: a count of 2 or more needs -n at least as large")
        count = sizes[0]
        sizes = [n // count + (1 if k < n % count else 0) for k in range(count)]
    return (n if n is not None else sum(sizes)), sizes


def cmd_up(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster
    from kai_mesh.harness.radio import harness as radio_harness

    args.n, islands = _islands(args.islands, args.n)

    radio = radio_harness.plan(
        [f"node{k}" for k in range(1, args.n + 1)],
        args.radio,
        args.channel,
        lan=_names(args.radio_lan) or (),
        loss=args.radio_loss,
        seed=args.radio_seed,
        hidden=args.hidden,
        duty_limit=args.radio_duty_limit,
        csma=not args.no_csma,
        capture_db=args.capture_db,
    )
    state = cluster.up(
        _dir(args),
        args.n,
        topology=args.topology,
        link=args.link,
        prefix=args.prefix,
        propagation=args.propagation,
        bitrate=args.bitrate,
        duty_cycle=args.duty_cycle,
        admins=_names(args.admins),
        threshold=args.threshold,
        fresh=_names(args.fresh) or (),
        radio=radio,
        islands=islands,
        relay=args.relay,
    )
    names = ", ".join(f"{nd.name} (pid {nd.pid})" for nd in state.nodes)
    text = f"up: {state.topology} of {names}; {_governance(state)}"
    if state.islands:
        text += "; islands " + " | ".join(",".join(g) for g in state.islands)
    if state.relay:
        text += f"; relay {state.relay} for {','.join(cluster.gateways(state))}"
    _print(args, cluster.status(state), text)
    return 0


def _names(text: str | None) -> list[str] | None:
    return [name for name in text.split(",") if name] if text else None


def _governance(state: cluster.HarnessState) -> str:
    return f"admins {','.join(state.admins)}, threshold {state.threshold}"


def cmd_down(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    done = cluster.down(_dir(args), args.prefix)
    text = f"down: removed {len(done['namespaces'])} namespaces, killed {len(done['killed'])}"
    _print(args, done, text)
    return 0


def _state(args: argparse.Namespace) -> cluster.HarnessState:
    from kai_mesh.harness import cluster

    netns.require_privileges()
    return cluster.HarnessState.load(_dir(args))


def cmd_status(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    data = cluster.status(_state(args))
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    print(f"{data['topology']} in {data['dir']} (hub {data['hub']}, link {data['link']})")
    print(
        f"genesis {data['genesis']}: admins {','.join(data['admins'])}, "
        f"threshold {data['threshold']}"
    )
    if data["shared_rate"]:
        print(f"shared channel: {data['shared_rate']}")
    if data["partition"]:
        print("partition: " + " | ".join(",".join(g) for g in data["partition"]))
    for nd in data["nodes"]:
        shaping = " ".join(
            part
            for part in (nd["rate"] or "", f"{nd['loss']:g}% loss" if nd["loss"] else "")
            if part
        )
        print(
            f"{nd['name']:8} {nd['namespace']:16} {nd['address']:12} pid {nd['pid'] or '-':>7} "
            f"{'alive' if nd['alive'] else 'DEAD':5} {'transport ' if nd['transport'] else ''}"
            f"{shaping}".rstrip()
        )
    return 0


def cmd_radio(args: argparse.Namespace) -> int:
    from kai_mesh.harness.radio import harness as radio_harness

    state = _state(args)
    if not state.radio:
        raise UsageError("this harness has no radio: start it with `up --radio MODEM`")
    channels = radio_harness.stats(Path(state.dir), radio_harness.RadioPlan.from_json(state.radio))
    _print(args, channels, radio_harness.render(channels))
    return 0


def cmd_exec(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    command = list(args.argv)
    if command[:1] == ["--"]:
        command = command[1:]
    elif command[:1] and command[0].startswith("--dir") and "--" in command:
        # `exec NODE --dir D -- CMD`: REMAINDER also took the options that follow NODE.
        cut = command.index("--")
        options = argparse.ArgumentParser(prog="kai-mesh harness exec", add_help=False)
        options.add_argument("--dir", default=args.dir)
        args.dir = options.parse_args(command[:cut]).dir
        command = command[cut + 1 :]
    return cluster.exec_in(_state(args), args.node, command)


def cmd_partition(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    state = _state(args)
    groups = [[name for name in group.split(",") if name] for group in args.groups]
    cluster.partition(state, groups)
    print("partition: " + " | ".join(",".join(g) for g in state.partition))
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    cluster.heal(_state(args))
    print("healed")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    pid = cluster.kill_node(_state(args), args.node)
    print(f"killed {args.node} (pid {pid})")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    pid = cluster.start_node(_state(args), args.node)
    print(f"started {args.node} (pid {pid})")
    return 0


def cmd_shape(args: argparse.Namespace) -> int:
    from kai_mesh.harness import cluster

    state = _state(args)
    if args.all == (args.node is not None):
        raise UsageError("shape: name one NODE or give --all")
    if args.shared and not args.all:
        raise UsageError("shape: --shared puts every port on one channel: use it with --all")
    names = [nd.name for nd in state.nodes] if args.all else [args.node]
    if args.clear:
        cluster.clear_shaping(state, names)
        print(f"shaping cleared on {', '.join(names)}")
        return 0
    loss = netns.parse_loss(args.loss) if args.loss is not None else None
    if args.rate is None and not loss:
        raise UsageError("shape: give --rate, --loss or --clear")
    cluster.shape(state, names, args.rate, loss, shared=args.shared)
    what = f"rate {args.rate}{' shared' if args.shared else ''}" if args.rate else "no rate limit"
    print(f"shaped {', '.join(names)}: {what}, {loss or 0:g}% loss")
    return 0


def add_harness_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common_parent: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """Add `harness` and its subcommands to `subparsers`; return the `harness` parser."""
    text = "run many nodes on this machine, one per network namespace (needs root)"
    harness = subparsers.add_parser("harness", parents=[common_parent], help=text, description=text)
    _fill(harness)
    return harness


def _fill(harness: argparse.ArgumentParser) -> None:
    sub = harness.add_subparsers(dest="harness_command", required=True, metavar="SUBCOMMAND")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir",
        metavar="DIR",
        default=os.environ.get("KAI_MESH_HARNESS_DIR") or "./harness",
        help="the harness's node homes and state (default: $KAI_MESH_HARNESS_DIR or ./harness)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON for scripts")

    def add(name: str, fn: Any, text: str, *parents: argparse.ArgumentParser) -> Any:
        p = sub.add_parser(name, parents=[where, *parents], help=text, description=text)
        p.set_defaults(fn=fn)
        return p

    p = add("up", cmd_up, "create the namespaces and node homes, start the nodes", as_json)
    p.add_argument("-n", type=int, help="how many nodes (with --islands SIZES: their sum)")
    p.add_argument(
        "--islands",
        metavar="SIZES",
        help="cut the nodes into islands with no Reticulum path between them: sizes (3,3) or a "
        "count (2) sharing -n; with --relay each island's first node is its gateway",
    )
    p.add_argument(
        "--relay",
        action="store_true",
        help="run a Nostr relay (nostr-sdk's LocalRelay, the dev extra) the gateways reach",
    )
    p.add_argument("--link", choices=netns.LINKS, default="lan", help="lora: 20kbit, 1%% loss")
    p.add_argument(
        "--bitrate",
        type=int,
        metavar="BPS",
        help="the interface bitrate the nodes are told (Reticulum's timeouts, kai-mesh's airtime "
        "budget); shape the link itself with `shape --rate`",
    )
    p.add_argument(
        "--duty-cycle",
        type=float,
        metavar="PCT",
        help="the airtime budget, percent of each hour (e.g. 1 for EU 868 MHz)",
    )
    p.add_argument("--topology", choices=netns.TOPOLOGIES, default="bridge")
    p.add_argument("--prefix", default="km", help="namespace names start PREFIX- (km)")
    p.add_argument(
        "--propagation",
        action="append",
        default=[],
        metavar="NODE",
        help="make NODE an LXMF propagation node (repeatable), e.g. --propagation node1",
    )
    p.add_argument(
        "--admins",
        metavar="NAMES",
        help="the genesis's admins, comma-separated node names (default node1); each signs it",
    )
    p.add_argument(
        "--threshold",
        type=int,
        metavar="M",
        help="admin votes that certify a proposal; 2M must exceed the admins (default: the "
        "smallest such M)",
    )
    p.add_argument(
        "--fresh",
        metavar="NAMES",
        help="comma-separated nodes that get a namespace and an empty home (a config, no node) "
        "and are not started: `exec NODE -- kai-mesh join TOKEN`, then `start NODE`",
    )
    _radio_options(p)
    p = add("down", cmd_down, "remove every namespace and process, even after a crash", as_json)
    p.add_argument("--prefix", help="namespace prefix (default: from the state, else km)")
    add("status", cmd_status, "nodes, namespaces, addresses, pids, liveness, shaping", as_json)
    add(
        "radio",
        cmd_radio,
        "per node on each emulated LoRa channel: frames, air time, duty cycle, collisions, losses",
        as_json,
    )
    p = add("exec", cmd_exec, "run a command in a node's namespace with its KAI_MESH_HOME")
    p.add_argument("node")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command to run")
    p = add("partition", cmd_partition, "cut groups of nodes off from each other")
    p.add_argument("groups", nargs="+", help="comma-separated node names, e.g. node1 node2,node3")
    add("heal", cmd_heal, "undo the partition")
    p = add("kill", cmd_kill, "SIGKILL a node (and its agent workers)")
    p.add_argument("node")
    p = add("start", cmd_start, "start a killed node again and wait until it answers")
    p.add_argument("node")
    p = add("shape", cmd_shape, "limit rate (tbf) and add random loss (nft) on nodes' links")
    p.add_argument("node", nargs="?")
    p.add_argument("--all", action="store_true", help="every node")
    p.add_argument("--rate", help="e.g. 20kbit (both directions)")
    p.add_argument("--loss", help="e.g. 1%% of received frames dropped at random")
    p.add_argument("--shared", action="store_true", help="one rate for all ports (one channel)")
    p.add_argument("--clear", action="store_true", help="remove rate and loss")


def _radio_options(p: argparse.ArgumentParser) -> None:
    radio = p.add_argument_group("emulated LoRa radio (kai_mesh.harness.radio)")
    radio.add_argument(
        "--radio",
        metavar="MODEM",
        help="put every node on one emulated LoRa channel: a preset (long-fast, medium-fast, "
        "short-fast, lora-5k…) or raw settings such as sf7bw125 or sf9bw250cr8",
    )
    radio.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME=NODES[@MODEM]",
        help="a channel of the named nodes (repeatable; a node on two is a gateway), e.g. "
        "--channel a=node1,node2 --channel b=node2,node3@long-fast; nodes on none keep the LAN",
    )
    radio.add_argument("--radio-lan", metavar="NAMES", help="radio nodes that keep the LAN too")
    radio.add_argument("--radio-loss", type=float, default=0.0, metavar="PCT")
    radio.add_argument("--radio-seed", type=int, metavar="N", help="seed of loss and backoff")
    radio.add_argument(
        "--hidden", metavar="A:B,…", help="pairs of nodes that do not hear each other"
    )
    radio.add_argument(
        "--radio-duty-limit",
        type=float,
        metavar="PCT",
        help="the channel holds a node's frames beyond this duty cycle, as RNode firmware does",
    )
    radio.add_argument("--no-csma", action="store_true", help="transmit without carrier sense")
    radio.add_argument("--capture-db", type=float, metavar="DB", help="capture effect threshold")


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point; the same exit codes as `kai-mesh`."""
    parser = argparse.ArgumentParser(prog="kai-mesh harness")
    _fill(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130
    except (ConfigError, UsageError) as exc:
        print(f"kai-mesh harness: {exc}", file=sys.stderr)
        return 2
    except KaiMeshError as exc:
        print(f"kai-mesh harness: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
