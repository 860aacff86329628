"""Thin wrappers over `ip`, `tc` and `nft` for the multi-node harness.

Theory of operation: every device the harness makes lives inside a network namespace it created,
never in the host's: a hub namespace holds a Linux bridge `br0` and one veth end per node (`pK`),
and node K's namespace holds the other end (`veth0`). The veth pair is created straight into the
two namespaces (`ip -n HUB link add … peer … netns NODE`), so deleting the namespaces removes
every device and a crash leaves nothing in the host's own network stack.

Adjacency (line, tree) and partitions are nft rules in the **bridge family** on the hub's forward
hook: a flooded broadcast passes the hook once per egress port, so per-port rules also cut
broadcasts. Link shaping is `tbf` (this kernel has no netem) on both ends of a node's veth, and
random loss is nft `numgen random` on the node's **input** hook (dropping on output makes
`sendto` fail with EPERM). A shared channel — one rate for all ports, as on one radio channel —
redirects every hub port's ingress into one `ifb` device that carries the `tbf`: bridged frames
never pass the bridge device's own qdisc, so a `tbf` on `br0` would not limit them.

Every command runs through `run`, which raises `HarnessError` naming the command and its stderr.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from kai_mesh.core.errors import KaiMeshError, UsageError

# How the nodes are joined (adjacency rules on the hub's bridge) and what their links are like;
# `cluster` uses them, and the `harness up` parser offers them without importing `cluster`.
TOPOLOGIES = ("bridge", "line", "tree")
LINKS = ("lan", "lora")

BRIDGE = "br0"
NODE_DEV = "veth0"
SHARED_DEV = "air0"
NFT_TABLE = "kai_harness"
TBF_ARGS = ("burst", "1600", "limit", "3200")
_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps)$")
_NETNS_DIR = Path("/run/netns")


class HarnessError(KaiMeshError):
    """A harness operation failed; the message names the command and what it printed."""


class NotPrivileged(HarnessError, UsageError):
    """The harness cannot run here: not root, no network namespaces, or a tool is missing."""


def require_privileges(euid: int | None = None) -> None:
    """Raise `NotPrivileged` (one line) unless this process can build namespaces.

    `euid` defaults to `os.geteuid()`; tests pass another.
    """
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        raise NotPrivileged(
            "the harness needs root (network namespaces, nft, tc): run it with sudo"
        )
    if not Path("/proc/self/ns/net").exists():
        raise NotPrivileged("this kernel has no network namespace support")
    missing = [tool for tool in ("ip", "tc", "nft") if shutil.which(tool) is None]
    if missing:
        raise NotPrivileged(
            f"the harness needs {', '.join(missing)}: apt-get install iproute2 nftables"
        )


def run(
    argv: Sequence[str], *, netns: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (inside `netns` if given); raise `HarnessError` if it fails."""
    full = ns_argv(netns, argv) if netns else list(argv)
    try:
        done = subprocess.run(
            full, input=stdin, capture_output=True, text=True, timeout=30, check=False
        )
    except FileNotFoundError:
        raise HarnessError(f"{full[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise HarnessError(f"`{' '.join(full)}` did not finish within 30 s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().replace("\n", "; ")
        if "Operation not permitted" in detail and argv[:2] == ["ip", "netns"]:
            raise NotPrivileged(f"cannot create network namespaces here: {detail}")
        raise HarnessError(f"`{' '.join(full)}` failed ({done.returncode}): {detail}")
    return done


def ns_argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    """`argv` as run inside `netns` (unchanged when `netns` is None)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


# Namespaces


def list_namespaces(prefix: str | None = None) -> list[str]:
    """Names of the named network namespaces, those starting with `prefix-` if given."""
    done = run(["ip", "netns", "list"])
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    if prefix is not None:
        names = [n for n in names if n.startswith(f"{prefix}-")]
    return sorted(names)


def add_namespace(name: str) -> None:
    """Create namespace `name` with its loopback up."""
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def delete_namespace(name: str) -> None:
    """Delete namespace `name`; its devices (and their veth peers) go with it."""
    if (_NETNS_DIR / name).exists():
        run(["ip", "netns", "delete", name])


def namespace_pids(name: str) -> list[int]:
    """Pids of every process inside namespace `name` (empty if it is gone)."""
    try:
        done = run(["ip", "netns", "pids", name])
    except HarnessError:
        return []
    return [int(p) for p in done.stdout.split() if p.isdigit()]


# Links


def add_bridge(hub: str) -> None:
    run(["ip", "-n", hub, "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "-n", hub, "link", "set", BRIDGE, "up"])


def add_node_link(hub: str, port: str, node_ns: str, cidr: str) -> None:
    """A veth pair: `port` on the hub's bridge, `veth0` with address `cidr` in `node_ns`."""
    veth = ["type", "veth", "peer", "name", NODE_DEV, "netns", node_ns]
    run(["ip", "-n", hub, "link", "add", port, *veth])
    run(["ip", "-n", hub, "link", "set", port, "master", BRIDGE])
    run(["ip", "-n", hub, "link", "set", port, "up"])
    # No IPv6 DAD: Reticulum's AutoInterface cannot bind while an address is tentative.
    run(["sysctl", "-q", "-w", f"net.ipv6.conf.{NODE_DEV}.accept_dad=0"], netns=node_ns)
    run(["ip", "-n", node_ns, "addr", "add", cidr, "brd", "+", "dev", NODE_DEV])
    run(["ip", "-n", node_ns, "link", "set", NODE_DEV, "up"])


# nft in the hub's bridge: adjacency and partitions


def bridge_rules_script(
    allowed: Iterable[tuple[str, str]] | None, groups: Sequence[Sequence[str]]
) -> str:
    """An nft script (re)creating the hub's bridge table.

    `allowed`: ordered (in-port, out-port) pairs that may exchange frames; None lets all pass.
    `groups`: port groups cut from each other (a partition); empty for none.
    """
    lines = [
        f"add table bridge {NFT_TABLE}",
        f"delete table bridge {NFT_TABLE}",
        f"table bridge {NFT_TABLE} {{",
        "  chain partition {",
        "    type filter hook forward priority -10; policy accept;",
    ]
    for i, group in enumerate(groups):
        for j, other in enumerate(groups):
            if i != j and group and other:
                lines.append(f"    iifname {_nft_set(group)} oifname {_nft_set(other)} drop")
    lines += ["  }", "  chain adjacency {"]
    if allowed is None:
        lines.append("    type filter hook forward priority 0; policy accept;")
    else:
        lines.append("    type filter hook forward priority 0; policy drop;")
        lines += [f'    iifname "{a}" oifname "{b}" accept' for a, b in allowed]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _nft_set(names: Sequence[str]) -> str:
    return "{ " + ", ".join(f'"{n}"' for n in names) + " }"


def apply_nft(netns: str, script: str) -> None:
    """Load `script` atomically with `nft -f -` inside `netns`."""
    run(["nft", "-f", "-"], netns=netns, stdin=script)


# Shaping: tbf for rate, nft for loss


def check_rate(rate: str) -> str:
    """Return `rate` if `tc` understands it (e.g. 20kbit); raise `UsageError` otherwise."""
    if not _RATE.match(rate):
        raise UsageError(f"rate {rate!r}: expected a number and a unit, e.g. 20kbit or 1mbit")
    return rate


def parse_loss(text: str) -> float:
    """`'1%'` or `'1'` → 1.0; raise `UsageError` outside 0..100."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise UsageError(f"loss {text!r}: expected a percentage, e.g. 1%") from None
    if not 0 <= value <= 100:
        raise UsageError(f"loss {text!r}: must be between 0% and 100%")
    return value


def set_tbf(netns: str, dev: str, rate: str) -> None:
    run(["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, *TBF_ARGS], netns=netns)


def clear_root_qdisc(netns: str, dev: str) -> None:
    """Remove a `tbf` at `dev`'s root; the default qdisc (noqueue) cannot be deleted."""
    shown = run(["tc", "qdisc", "show", "dev", dev, "root"], netns=netns).stdout
    if "tbf" in shown:
        run(["tc", "qdisc", "del", "dev", dev, "root"], netns=netns)


def set_loss(netns: str, percent: float) -> None:
    """Drop `percent` % of the frames arriving on `veth0` inside `netns`, at random."""
    per_10k = round(percent * 100)
    apply_nft(
        netns,
        f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
        f"table inet {NFT_TABLE} {{\n  chain input {{\n"
        "    type filter hook input priority -10; policy accept;\n"
        f'    iifname "{NODE_DEV}" numgen random mod 10000 < {per_10k} drop\n  }}\n}}\n',
    )


def clear_loss(netns: str) -> None:
    apply_nft(netns, f"add table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n")


def set_shared_rate(hub: str, ports: Sequence[str], rate: str) -> None:
    """One `tbf` for every frame any node sends: each port's ingress goes through `air0`."""
    clear_shared_rate(hub, ports)
    run(["ip", "-n", hub, "link", "add", SHARED_DEV, "type", "ifb"])
    run(["ip", "-n", hub, "link", "set", SHARED_DEV, "up"])
    set_tbf(hub, SHARED_DEV, rate)
    for port in ports:
        run(["tc", "qdisc", "add", "dev", port, "handle", "ffff:", "ingress"], netns=hub)
        match_all = ["protocol", "all", "u32", "match", "u32", "0", "0"]
        redirect = ["action", "mirred", "egress", "redirect", "dev", SHARED_DEV]
        run(
            ["tc", "filter", "add", "dev", port, "parent", "ffff:", *match_all, *redirect],
            netns=hub,
        )


def clear_shared_rate(hub: str, ports: Sequence[str]) -> None:
    for port in ports:
        with contextlib.suppress(HarnessError):  # no ingress qdisc: nothing to clear
            run(["tc", "qdisc", "del", "dev", port, "ingress"], netns=hub)
    with contextlib.suppress(HarnessError):  # no shared device
        run(["ip", "-n", hub, "link", "del", SHARED_DEV])
