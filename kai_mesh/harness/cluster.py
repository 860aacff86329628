"""The harness's state: namespaces, node homes and node processes, kept in DIR/state.json.

Theory of operation: `up` checks its arguments (the admins and threshold among them) before it
makes anything, builds the network (see `netns`), writes N node homes that share one genesis
(see `homes`; the signed genesis is also kept as DIR/genesis, for `kai-mesh genesis show`),
starts each node as `kai-mesh --home DIR/nodeK run` inside its namespace (a session of its own,
so the node and its agent workers form one process group) and records everything in
`state.json` before and after each step. Every later command reads that file.

`down` must work after the harness itself crashed, so it does not trust the state file alone: it
also removes every namespace named `PREFIX-hub` / `PREFIX-nodeK`, kills every process inside
them (`ip netns pids`), and every process whose command line names a home under DIR. All the
devices live inside the namespaces, so deleting the namespaces removes them too.

Waits are bounded: polls against a deadline, never a bare sleep standing in for a condition.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from kai_mesh.client import ControlClient
from kai_mesh.config.nodefiles import write_private
from kai_mesh.config.settings import NodePaths
from kai_mesh.config.socket_path import check_socket_path
from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.harness import homes, netns
from kai_mesh.harness.netns import HarnessError
from kai_mesh.harness.radio import harness as radio_harness
from kai_mesh.harness.radio.harness import RadioPlan

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
GENESIS_FILE = "genesis"
LORA_RATE, LORA_LOSS, LORA_BITRATE = "20kbit", 1.0, 20_000
MAX_NODES = 250
RELAY_ADDRESS, RELAY_PORT = "10.77.0.254", 7447  # the hub's own address on the bridge
READY_TIMEOUT = 30.0
_PREFIX = re.compile(r"^[A-Za-z0-9_]{1,20}$")


@dataclass
class NodeState:
    name: str
    index: int
    namespace: str
    port: str
    address: str
    home: str
    transport: bool
    pid: int | None = None
    rate: str | None = None
    loss: float | None = None


@dataclass
class HarnessState:
    dir: str
    prefix: str
    topology: str
    link: str
    nodes: list[NodeState]
    shared_rate: str | None = None
    partition: list[list[str]] = field(default_factory=list)
    #: The genesis's admins (node names) and threshold; a state file from before them: node1, 1.
    admins: list[str] = field(default_factory=lambda: ["node1"])
    threshold: int = 1
    #: Nodes made with `up --fresh`: a namespace and a home with a config, no node, not started.
    fresh: list[str] = field(default_factory=list)
    #: The emulated LoRa channels (`radio.harness.RadioPlan` as JSON), or None: LAN only.
    radio: dict[str, Any] | None = None
    #: `up --islands`: groups of nodes with no Reticulum path between them, ever (`heal` keeps
    #: them apart); the first node of each is its gateway when there is a relay.
    islands: list[list[str]] = field(default_factory=list)
    #: `up --relay`: the URL of the Nostr relay in the hub namespace the gateways reach.
    relay: str | None = None

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    def node(self, name: str) -> NodeState:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise UsageError(f"no node {name!r} in this harness (nodes: {known})")

    def save(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_name(STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> HarnessState:
        """Raises `HarnessError` when no harness is up in `directory`."""
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            nodes = [NodeState(**n) for n in data.pop("nodes")]
            return cls(nodes=nodes, **data)
        except FileNotFoundError:
            raise HarnessError(
                f"no harness is up in {directory} (no {STATE_FILE}); start one with `up`"
            ) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise HarnessError(f"{path}: unreadable harness state: {exc}") from None


def neighbours(topology: str, n: int) -> list[tuple[int, int]]:
    """Adjacent node indexes (1-based) for a line or a binary tree; all pairs for a bridge."""
    if topology == "line":
        return [(k, k + 1) for k in range(1, n)]
    if topology == "tree":
        return [(k // 2, k) for k in range(2, n + 1)]
    return [(a, b) for a in range(1, n + 1) for b in range(a + 1, n + 1)]


def _is_transport(topology: str, k: int, n: int) -> bool:
    """Inner nodes of a line or tree relay for the others."""
    if topology == "line":
        return 1 < k < n
    if topology == "tree":
        return 2 * k <= n
    return False


# up / down


def up(
    directory: Path,
    n: int,
    *,
    topology: str = "bridge",
    link: str = "lan",
    prefix: str = "km",
    ready_timeout: float = READY_TIMEOUT,
    propagation: Sequence[str] = (),
    bitrate: int | None = None,
    duty_cycle: float | None = None,
    admins: Sequence[str] | None = None,
    threshold: int | None = None,
    fresh: Sequence[str] = (),
    radio: RadioPlan | None = None,
    islands: Sequence[int] = (),
    relay: bool = False,
) -> HarnessState:
    """Build the network, write the homes, start the nodes and wait until each answers.

    `islands` (sizes adding up to `n`) cut the nodes into groups with no Reticulum path between
    them; `relay` runs a Nostr relay (nostr-sdk's LocalRelay, a dev extra) in the hub namespace
    and gives it to each island's first node, its gateway (to node1 alone without islands).

    `admins` (node names; default node1) sign the genesis and govern with `threshold` (default:
    a majority, the smallest M with 2M > admins).
    `fresh` (node names) get a namespace and a home with only a config: no node, not started, not
    in the genesis (`kai-mesh join TOKEN` in that home, then `start NODE`).
    `radio` puts nodes on emulated LoRa channels (`radio.harness`): its daemons start before
    the nodes, and a node on two links becomes a transport node.

    Raises:
        UsageError: bad arguments (a threshold that is not a majority among them), before
            anything is made. HarnessError: a harness is already up, or a step failed
            (everything made so far is removed again).
    """
    if not 1 <= n <= MAX_NODES:
        raise UsageError(f"-n must be between 1 and {MAX_NODES}, got {n}")
    if not _PREFIX.match(prefix):
        raise UsageError(f"prefix {prefix!r}: use 1-20 letters, digits or _")
    chosen, m = homes.check_admins([f"node{k}" for k in range(1, n + 1)], admins, threshold)
    groups = island_groups(n, islands)
    if relay:
        _check_relay_available()
    _check_fresh(n, fresh, chosen, propagation)
    netns.require_privileges()
    directory = directory.absolute()
    unknown = sorted(set(propagation) - {f"node{k}" for k in range(1, n + 1)})
    if unknown:
        raise UsageError(f"--propagation: no node {unknown[0]!r} among node1..node{n}")
    check_socket_path(NodePaths.resolve(directory / f"node{n}").socket)
    if radio is not None:
        radio_harness.check_paths(directory, radio)
    leftovers = _harness_namespaces(prefix)
    if (directory / STATE_FILE).exists() or leftovers:
        raise HarnessError(
            f"a harness is already up (state in {directory}, namespaces {leftovers or 'none'}); "
            f"run `down --dir {directory} --prefix {prefix}` first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    state = HarnessState(str(directory), prefix, topology, link, [], admins=chosen, threshold=m)
    state.fresh = list(fresh)
    state.islands = groups
    for k in range(1, n + 1):
        state.nodes.append(
            NodeState(
                name=f"node{k}",
                index=k,
                namespace=f"{prefix}-node{k}",
                port=f"p{k}",
                address=f"10.77.0.{k}",
                home=str(directory / f"node{k}"),
                transport=_is_transport(topology, k, n)
                or bool(radio and radio.gateway(f"node{k}")),
            )
        )
    try:
        _build_network(state)
        if relay:
            state.relay = _start_relay(state)
            state.save()
        if radio is not None:
            radio_harness.start(directory, radio)
            state.radio = radio.to_json()
            state.save()
        _write_homes(state, propagation, bitrate=bitrate, duty_cycle=duty_cycle)
        state.save()
        if link == "lora":
            shape(state, [nd.name for nd in state.nodes], LORA_RATE, LORA_LOSS)
        started = [nd for nd in state.nodes if nd.name not in state.fresh]
        procs = [_spawn(state, node) for node in started]
        state.save()
        deadline = time.monotonic() + ready_timeout
        for node, proc in zip(started, procs, strict=True):
            _wait_ready(node, proc, deadline)
    except BaseException:
        down(directory, prefix)
        raise
    return state


def island_groups(n: int, sizes: Sequence[int]) -> list[list[str]]:
    """node1..nodeN cut into islands of `sizes` (in order); [] for none.

    Raises:
        UsageError: a size below 1, fewer than two islands, or sizes not adding up to `n`.
    """
    if not sizes:
        return []
    if len(sizes) < 2 or any(size < 1 for size in sizes) or sum(sizes) != n:
        raise UsageError(
            f"--islands {','.join(map(str, sizes))}: two or more sizes of at least 1 that add "
            f"up to -n {n}"
        )
    groups, k = [], 1
    for size in sizes:
        groups.append([f"node{i}" for i in range(k, k + size)])
        k += size
    return groups


def gateways(state: HarnessState) -> list[str]:
    """The nodes that reach the relay: each island's first, or node1 without islands."""
    if state.relay is None:
        return []
    return [group[0] for group in state.islands] or [state.nodes[0].name]


def _check_relay_available() -> None:
    import importlib.util

    if importlib.util.find_spec("nostr_sdk") is None:
        raise UsageError("--relay needs nostr-sdk (the dev extra): pip install -e '.[dev]'")


def _start_relay(state: HarnessState) -> str:
    """A LocalRelay in the hub namespace on the bridge's own address (reachable from every
    node, whatever islands or partitions the bridge's forward rules make); its URL."""
    netns.run(["ip", "-n", state.hub, "addr", "add", f"{RELAY_ADDRESS}/24", "dev", netns.BRIDGE])
    log_path = Path(state.dir) / "relay.log"
    argv = [sys.executable, "-m", "kai_mesh.harness.relay", "--forever"]
    argv += ["--host", RELAY_ADDRESS, "--port", str(RELAY_PORT)]
    with open(log_path, "ab") as log:
        subprocess.Popen(
            netns.ns_argv(state.hub, argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # `down` kills what runs in the hub namespace
        )
    url = f"ws://{RELAY_ADDRESS}:{RELAY_PORT}"
    _poll(
        lambda: url in log_path.read_text(errors="replace"),
        time.monotonic() + 15,
        f"the relay did not start: see {log_path}",
    )
    return url


def _build_network(state: HarnessState) -> None:
    netns.add_namespace(state.hub)
    netns.add_bridge(state.hub)
    for node in state.nodes:
        netns.add_namespace(node.namespace)
        netns.add_node_link(state.hub, node.port, node.namespace, f"{node.address}/24")
    _apply_bridge_rules(state)


def _apply_bridge_rules(state: HarnessState) -> None:
    allowed: list[tuple[str, str]] | None = None
    if state.topology != "bridge":
        ports = {nd.index: nd.port for nd in state.nodes}
        allowed = []
        for a, b in neighbours(state.topology, len(state.nodes)):
            allowed += [(ports[a], ports[b]), (ports[b], ports[a])]
    groups = [[state.node(name).port for name in group] for group in _cut(state)]
    netns.apply_nft(state.hub, netns.bridge_rules_script(allowed, groups))


def _cut(state: HarnessState) -> list[list[str]]:
    """The groups the bridge keeps apart: the islands, each split further by a partition."""
    if not state.islands:
        return state.partition
    if not state.partition:
        return state.islands
    cut = [
        [n for n in island if n in group] for island in state.islands for group in state.partition
    ]
    return [group for group in cut if group]


def _write_homes(
    state: HarnessState,
    propagation: Sequence[str] = (),
    *,
    bitrate: int | None = None,
    duty_cycle: float | None = None,
) -> None:
    names = [nd.name for nd in state.nodes if nd.name not in state.fresh]
    genesis, keys = homes.make_mesh(
        names, "harness", admins=state.admins, threshold=state.threshold
    )
    write_private(Path(state.dir) / GENESIS_FILE, genesis.to_bytes())
    if bitrate is None and state.link == "lora":
        bitrate = LORA_BITRATE
    _write_fresh_homes(state, bitrate=bitrate, duty_cycle=duty_cycle)
    radio = RadioPlan.from_json(state.radio) if state.radio else None
    for node, key in zip([nd for nd in state.nodes if nd.name in names], keys, strict=True):
        home = Path(node.home)
        if home.exists():
            shutil.rmtree(home)  # a previous run's node: this run has new keys
        paths = NodePaths.resolve(home)
        homes.write_node_files(paths, key.secrets, genesis, key.member)
        homes.write_config(
            paths,
            node.name,
            transport=node.transport,
            bitrate=bitrate,
            duty_cycle=duty_cycle,
            propagation=node.name in propagation,
            relays=[state.relay] if state.relay and node.name in gateways(state) else [],
            **_radio_config(state, radio, node.name, duty_cycle),
        )


def _radio_config(
    state: HarnessState, radio: RadioPlan | None, name: str, duty_cycle: float | None
) -> dict[str, Any]:
    """`write_config`'s radio arguments for node `name`: its LAN and channel interfaces."""
    if radio is None:
        return {}
    lines = radio_harness.interface_lines(Path(state.dir), radio, name, duty_cycle)
    return {"lan": radio.on_lan(name), "radio_lines": lines}


def _check_fresh(
    n: int, fresh: Sequence[str], admins: Sequence[str], propagation: Sequence[str]
) -> None:
    """`--fresh` names nodes among node1..nodeN that are neither admins nor propagation nodes,
    leaving at least one node in the mesh. Raises `UsageError`."""
    names = {f"node{k}" for k in range(1, n + 1)}
    for name in fresh:
        if name not in names:
            raise UsageError(f"--fresh: no node {name!r} among node1..node{n}")
        if name in admins or name in propagation:
            raise UsageError(f"--fresh {name}: an admin or propagation node cannot start fresh")
    if len(set(fresh)) >= n:
        raise UsageError("--fresh: at least one node must be in the mesh to invite the others")


def _write_fresh_homes(
    state: HarnessState, *, bitrate: int | None, duty_cycle: float | None
) -> None:
    """The `--fresh` nodes' homes: the harness's config, no node files (`kai-mesh join` makes
    the node; `start NODE` runs it)."""
    for node in state.nodes:
        if node.name not in state.fresh:
            continue
        home = Path(node.home)
        if home.exists():
            shutil.rmtree(home)
        paths = NodePaths.resolve(home)
        paths.config_file.parent.mkdir(parents=True, mode=0o700)
        radio = RadioPlan.from_json(state.radio) if state.radio else None
        homes.write_config(
            paths,
            node.name,
            transport=node.transport,
            bitrate=bitrate,
            duty_cycle=duty_cycle,
            **_radio_config(state, radio, node.name, duty_cycle),
        )


def down(directory: Path, prefix: str | None = None) -> dict[str, Any]:
    """Remove everything a harness in `directory` made, with or without its state file.

    The prefix comes from `prefix`, else the state file, else `km`. Returns what was removed.
    """
    netns.require_privileges()
    directory = directory.absolute()
    state: HarnessState | None
    try:
        state = HarnessState.load(directory)
    except HarnessError:
        state = None
    prefix = prefix or (state.prefix if state else "km")
    pids = {nd.pid for nd in state.nodes if nd.pid} if state else set()
    pids |= set(_home_processes(directory))
    namespaces = _harness_namespaces(prefix)
    for name in namespaces:
        pids |= set(netns.namespace_pids(name))
    pids.discard(os.getpid())
    killed = [pid for pid in sorted(pids) if _kill(pid)]
    _wait_gone(killed, time.monotonic() + 10)
    for name in namespaces:
        netns.delete_namespace(name)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return {"namespaces": namespaces, "killed": killed}


def _harness_namespaces(prefix: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(prefix)}-(hub|node\d+)$")
    return [name for name in netns.list_namespaces(prefix) if pattern.match(name)]


def _home_processes(directory: Path) -> list[int]:
    """Processes whose command line names a path under `directory` (the node daemons)."""
    under = f"{directory}{os.sep}"
    own = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.pid not in own and any(arg.startswith(under) for arg in cmdline):
            found.append(proc.pid)
    return found


# node processes


def _kai_mesh_argv() -> list[str]:
    """This installation's `kai-mesh`: the script next to the running interpreter if any."""
    script = Path(sys.executable).parent / "kai-mesh"
    return [str(script)] if script.exists() else [sys.executable, "-m", "kai_mesh"]


def node_env(node: NodeState) -> dict[str, str]:
    """The environment of commands run for `node`: its home, and this `kai-mesh` first on PATH."""
    env = dict(os.environ)
    env["KAI_MESH_HOME"] = node.home
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _spawn(state: HarnessState, node: NodeState) -> subprocess.Popen[bytes]:
    argv = netns.ns_argv(node.namespace, [*_kai_mesh_argv(), "--home", node.home, "run"])
    with open(Path(node.home) / "node.log", "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=node_env(node),
            start_new_session=True,  # its own process group: kill takes its agent workers too
        )
    node.pid = proc.pid
    return proc


def _wait_ready(node: NodeState, proc: subprocess.Popen[bytes], deadline: float) -> None:
    # Ask the Popen, not `alive()`: until the child has exec'd, its command line is still the
    # harness's own, and `alive()` would call a healthy start dead.
    socket_path = NodePaths.resolve(node.home).socket
    while True:
        if proc.poll() is not None:
            raise HarnessError(f"{node.name} exited while starting: {_log_tail(node)}")
        try:
            with ControlClient(socket_path, timeout=1.0) as client:
                client.call("ping")
            return
        except (KaiMeshError, OSError):
            pass
        if time.monotonic() > deadline:
            raise HarnessError(f"{node.name} did not answer on {socket_path} in time")
        time.sleep(0.05)


def _log_tail(node: NodeState, lines: int = 3) -> str:
    try:
        text = (Path(node.home) / "node.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def alive(node: NodeState) -> bool:
    """Whether the node's recorded process still runs (a zombie or a reused pid does not)."""
    if node.pid is None:
        return False
    try:
        proc = psutil.Process(node.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return node.home in proc.cmdline()
    except psutil.Error:
        return False


def _kill(pid: int) -> bool:
    """SIGKILL `pid`, and its process group when it leads one; False if it was already gone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pids: Sequence[int], deadline: float) -> None:
    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    _poll(lambda: all(gone(p) for p in pids), deadline, f"processes {list(pids)} did not exit")


def _poll(condition: Callable[[], bool], deadline: float, failure: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise HarnessError(failure)
        time.sleep(0.05)


def kill_node(state: HarnessState, name: str) -> int:
    """SIGKILL the node (and its agent workers); return its pid. Raises if it is not running."""
    node = state.node(name)
    if node.pid is None or not alive(node):
        raise HarnessError(f"{name} is not running")
    _kill(node.pid)
    _poll(lambda: not alive(node), time.monotonic() + 10, f"{name} did not die")
    return node.pid


def start_node(state: HarnessState, name: str, ready_timeout: float = READY_TIMEOUT) -> int:
    """Start a stopped node again and wait until it answers; return its pid."""
    node = state.node(name)
    if alive(node):
        raise HarnessError(f"{name} is already running (pid {node.pid})")
    proc = _spawn(state, node)
    state.save()
    _wait_ready(node, proc, time.monotonic() + ready_timeout)
    assert node.pid is not None
    return node.pid


def exec_in(state: HarnessState, name: str, argv: Sequence[str]) -> int:
    """Run `argv` in the node's namespace with its home and this kai-mesh; return its status."""
    node = state.node(name)
    if not argv:
        raise UsageError("exec needs a command: exec NODE -- CMD ...")
    done = subprocess.run(netns.ns_argv(node.namespace, argv), env=node_env(node), check=False)
    return done.returncode


# network conditions


def partition(state: HarnessState, groups: Sequence[Sequence[str]]) -> None:
    """Cut the named groups of nodes from each other; unnamed nodes form one more group."""
    named = [name for group in groups for name in group]
    for name in named:
        state.node(name)
    if len(set(named)) != len(named):
        raise UsageError("a node is named in two groups")
    rest = [nd.name for nd in state.nodes if nd.name not in named]
    state.partition = [list(g) for g in groups if g] + ([rest] if rest else [])
    _apply_bridge_rules(state)
    state.save()


def heal(state: HarnessState) -> None:
    """Undo `partition`: the topology's own adjacency stays."""
    state.partition = []
    _apply_bridge_rules(state)
    state.save()


def shape(
    state: HarnessState,
    names: Sequence[str],
    rate: str | None,
    loss: float | None,
    *,
    shared: bool = False,
) -> None:
    """Replace the nodes' shaping: `rate` on both directions of their veth (or, `shared`, one
    rate for every port together) and `loss` % random loss on what they receive."""
    nodes = [state.node(name) for name in names]
    if rate is not None:
        netns.check_rate(rate)
    clear_shaping(state, names)
    if shared and rate is not None:
        netns.set_shared_rate(state.hub, [nd.port for nd in state.nodes], rate)
        state.shared_rate = rate
    for node in nodes:
        if rate is not None and not shared:
            netns.set_tbf(node.namespace, netns.NODE_DEV, rate)
            netns.set_tbf(state.hub, node.port, rate)
            node.rate = rate
        if loss:
            netns.set_loss(node.namespace, loss)
            node.loss = loss
    state.save()


def clear_shaping(state: HarnessState, names: Sequence[str]) -> None:
    """Remove rate and loss from the nodes; the shared rate goes when every node is named."""
    for node in (state.node(name) for name in names):
        netns.clear_root_qdisc(node.namespace, netns.NODE_DEV)
        netns.clear_root_qdisc(state.hub, node.port)
        netns.clear_loss(node.namespace)
        node.rate = node.loss = None
    if state.shared_rate and set(names) >= {nd.name for nd in state.nodes}:
        netns.clear_shared_rate(state.hub, [nd.port for nd in state.nodes])
        state.shared_rate = None
    state.save()


def status(state: HarnessState) -> dict[str, Any]:
    return {
        "dir": state.dir,
        "prefix": state.prefix,
        "hub": state.hub,
        "topology": state.topology,
        "link": state.link,
        "shared_rate": state.shared_rate,
        "partition": state.partition,
        "admins": state.admins,
        "threshold": state.threshold,
        "genesis": str(Path(state.dir) / GENESIS_FILE),
        "radio": state.radio,
        "islands": state.islands,
        "relay": state.relay,
        "gateways": gateways(state),
        "nodes": [
            {
                "name": nd.name,
                "namespace": nd.namespace,
                "address": nd.address,
                "home": nd.home,
                "pid": nd.pid,
                "alive": alive(nd),
                "transport": nd.transport,
                "rate": nd.rate,
                "loss": nd.loss,
            }
            for nd in state.nodes
        ],
    }
