"""A Jepsen-style run over a harness: a nemesis breaks the network and the nodes while clients
write, send and vote, then everything heals and a checker holds the mesh to what it acknowledged.

Theory of operation. A run is `rounds` rounds on a harness that is already up (five nodes, node1-3
admins with threshold 2). Each round the nemesis takes one seeded step: partition the nodes in
two, SIGKILL one (at most two are down at once), start a killed one again, shape some links to
20 kbit/s with 1 % loss (tbf and nft numgen; this kernel has no netem), or heal it all. Then every
running node's client does its work through the control socket, as an operator's CLI would:

- `state_set shared/w_<node>_<n>`: acknowledged when the reply comes (committed before it);
- a must-arrive `send` to another node's `state` agent that sets `shared/m_<tag>` there:
  acknowledged when the reply says it is queued in the outbox (committed before it);
- governance on one running admin: vote for an open proposal it has not voted for, else propose a
  `policy_update` when it has none open; a reply `certified` is acknowledged.

An error or a timeout acknowledges nothing: such a write may or may not land, and the checker
only asks that it is not invented. After the last round the nemesis heals everything and starts
every killed node; the checker waits (bounded) until the mesh settles and then asserts:

- every node holds the same state digest and the same `shared` map;
- every acknowledged write is there with its value, and no key is there that no client wrote;
- every acknowledged must-arrive message has exactly one outbox row at its sender, delivered,
  and its effect (`m_<tag>`, set by the recipient) is in every node's state once, with its value;
- every node holds the same governance log and head, and it holds every proposal a client was
  told was certified.

Randomness comes from one seeded `random.Random`, so a seed names a schedule of faults and work
(what the network then does with it is the kernel's). tests/netns/test_chaos.py runs it short;
bench/chaos.py runs it long and prints what it checked.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kai_mesh.client import ControlClient
from kai_mesh.config.settings import NodePaths
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import KaiMeshError
from kai_mesh.harness import cluster
from kai_mesh.harness.cluster import HarnessState

#: Nodes down at once at most: three of five keep two admins up, so votes can still certify.
MAX_DOWN = 2
RATE, LOSS = "20kbit", 1.0
#: Must-arrive messages live long enough to outlast any partition a run keeps up.
MESSAGE_TTL = 3600
ADMINS, THRESHOLD = ("node1", "node2", "node3"), 2


class ChaosFailure(AssertionError):
    """The mesh broke a promise it acknowledged (or did not settle in time)."""


@dataclass
class Ledger:
    """What the clients were told, and what they tried without an answer."""

    writes: dict[str, Any] = field(default_factory=dict)  # key under shared -> value
    tried: set[str] = field(default_factory=set)  # every key a client asked to set
    messages: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # id -> src, dst, tag
    certified: set[str] = field(default_factory=set)
    proposed: int = 0
    votes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # the first error of each kind, in full
    faults: Counter[str] = field(default_factory=Counter)


@dataclass
class Chaos:
    """One run on `state` (a harness that is up); `log` gets one line per step."""

    state: HarnessState
    seed: int
    log: Callable[[str], None] = lambda line: None
    call_timeout: float = 15.0
    passes: int = 1  # client passes per round: a write and a message per running node each
    start_timeout: float = 90.0  # a restarted node's start, generous for a loaded machine
    ledger: Ledger = field(default_factory=Ledger)
    down: set[str] = field(default_factory=set)
    shaped: set[str] = field(default_factory=set)
    round: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.names = [nd.name for nd in self.state.nodes]
        self._seq = Counter[str]()
        self._backed: dict[str, set[str]] = {}  # admin -> proposals it signed or voted for

    # control socket

    def call(self, node: str, method: str, params: dict[str, Any], timeout: float = 0) -> Any:
        """One control call; raises `ControlError`, `KaiMeshError` or `OSError`."""
        path = NodePaths.resolve(Path(self.state.node(node).home)).socket
        limit = timeout or self.call_timeout
        with ControlClient(path, timeout=limit) as client:
            return client.call(method, params, timeout=limit)

    def _try(self, node: str, method: str, params: dict[str, Any]) -> Any | None:
        """The result, or None after counting the error by its code."""
        try:
            return self.call(node, method, params)
        except ControlError as exc:
            self._error(f"{method}:{exc.code}", f"{node} {method} {params}: {exc}")
        except (KaiMeshError, OSError) as exc:
            self._error(f"{method}:{type(exc).__name__}", f"{node} {method} {params}: {exc}")
        return None

    def _error(self, kind: str, text: str) -> None:
        self.ledger.errors[kind] += 1
        self.ledger.samples.setdefault(kind, f"round {self.round}: {text}")

    def up(self) -> list[str]:
        return [n for n in self.names if n not in self.down]

    # the nemesis

    def nemesis(self) -> str:
        """Take one seeded step against the network or the nodes; say what it was."""
        steps = ["partition", "kill", "restart", "shape", "heal"]
        step = self.rng.choice(steps)
        if step == "kill" and len(self.down) >= MAX_DOWN:
            step = "restart"
        if step == "restart" and not self.down:
            step = "kill"
        if step == "partition":
            order = self.names[:]
            self.rng.shuffle(order)
            cut = self.rng.randint(1, len(order) - 1)
            cluster.partition(self.state, [order[:cut], order[cut:]])
            what = f"partition {','.join(sorted(order[:cut]))} | {','.join(sorted(order[cut:]))}"
        elif step == "kill":
            victim = self.rng.choice(self.up())
            cluster.kill_node(self.state, victim)
            self.down.add(victim)
            what = f"kill -9 {victim}"
        elif step == "restart":
            back = self.rng.choice(sorted(self.down))
            cluster.start_node(self.state, back, self.start_timeout)
            self.down.discard(back)
            what = f"start {back}"
        elif step == "shape":
            chosen = self.rng.sample(self.names, self.rng.randint(1, 3))
            cluster.shape(self.state, chosen, RATE, LOSS)
            self.shaped.update(chosen)
            what = f"shape {','.join(sorted(chosen))} to {RATE}, {LOSS:g} % loss"
        else:
            self.heal_network()
            what = "heal"
        self.ledger.faults[step] += 1
        return what

    def heal_network(self) -> None:
        cluster.heal(self.state)
        if self.shaped:
            cluster.clear_shaping(self.state, sorted(self.shaped))
            self.shaped.clear()

    def heal_all(self) -> None:
        """The final heal: the network whole again and every killed node started."""
        self.heal_network()
        for name in sorted(self.down):
            cluster.start_node(self.state, name, self.start_timeout)
        self.down.clear()

    # the clients

    def write(self, node: str) -> None:
        self._seq[node] += 1
        key = f"w_{node}_{self._seq[node]}"
        value = {"round": self.round, "by": node, "n": self._seq[node]}
        self.ledger.tried.add(key)
        if self._try(node, "state_set", {"path": f"shared/{key}", "value": value}) is not None:
            self.ledger.writes[key] = value

    def message(self, src: str) -> None:
        dst = self.rng.choice([n for n in self.names if n != src])
        self._seq[src] += 1
        tag = f"m_{src}_{self._seq[src]}"
        self.ledger.tried.add(tag)
        params = {
            "to": f"kai://{dst}/state",
            "intent": "set",
            "payload": {"path": f"shared/{tag}", "value": tag},
            "must_arrive": True,
            "ttl": MESSAGE_TTL,
        }
        result = self._try(src, "send", params)
        if result is not None:
            if result.get("queued") != "outbox":
                raise ChaosFailure(f"{src}: a must-arrive send was not queued: {result}")
            self.ledger.messages[str(result["message_id"])] = (src, dst, tag)

    def govern(self) -> None:
        """One admin acts: a vote for an open proposal it has not backed, else a proposal when
        none of its own is open (a key with an open proposal cannot sign a rival one)."""
        admins = [a for a in ADMINS if a in self.up()]
        if not admins:
            return
        admin = self.rng.choice(admins)
        listed = self._try(admin, "gov_proposals", {})
        if listed is None:
            return
        open_ids = [str(p["id"]) for p in listed if p["status"] == "open"]
        backed = self._backed.setdefault(admin, set())
        votable = [pid for pid in open_ids if pid not in backed]
        if votable:
            result = self._try(admin, "gov_vote", {"id": votable[0]})
            backed.add(votable[0])
            self.ledger.votes += result is not None
        elif not open_ids or not backed & set(open_ids):
            body = {"kind": "policy_update", "body": {"chaos_round": self.round}}
            result = self._try(admin, "gov_propose", body)
            if result is not None:
                backed.add(str(result["id"]))
                self.ledger.proposed += 1
        else:
            return
        if result is not None and result.get("status") == "certified":
            self.ledger.certified.add(str(result["id"]))

    def work(self) -> None:
        """One round of every running node's client."""
        for _ in range(self.passes):
            for node in self.up():
                self.write(node)
                self.message(node)
        self.govern()

    def run(self, rounds: int) -> None:
        for self.round in range(1, rounds + 1):
            what = self.nemesis()
            self.work()
            self.log(
                f"round {self.round}: {what}; acknowledged {len(self.ledger.writes)} writes, "
                f"{len(self.ledger.messages)} messages, {len(self.ledger.certified)} certified"
            )
        self.heal_all()
        self.log("final heal: network whole, every node running")

    def wait_heard(self, timeout: float) -> None:
        """Before the nemesis: every node hears every other, so each has learnt the others'
        names (a must-arrive send names a member it has heard at least once)."""
        deadline = time.monotonic() + timeout
        for name in self.names:
            while not self._hears_all(name):
                if time.monotonic() > deadline:
                    raise ChaosFailure(f"{name} did not hear every peer in {timeout:g} s")
                time.sleep(0.2)

    def _hears_all(self, name: str) -> bool:
        try:
            alive = self.call(name, "status", {})["liveness"]["peers"]["alive"]
        except (ControlError, KaiMeshError, OSError):
            return False  # a node slow to answer on a loaded machine: ask again
        return bool(alive >= len(self.names) - 1)

    # the checker

    def view(self, node: str) -> dict[str, Any]:
        """What `node` holds now: state digest and `shared`, its outbox, its governance."""
        slow = 60.0  # `shared` and the outbox grow with the run; a shaped node answers slowly
        return {
            "digest": self.call(node, "status", {})["state"]["digest"],
            "shared": self.call(node, "state_show", {"path": "shared"}, slow)["value"] or {},
            "outbox": self.call(node, "outbox", {"all": True}, slow),
            "log": [e["id"] for e in self.call(node, "gov_log", {})],
            "head": self.call(node, "gov_policy", {})["head"],
        }

    def settle(self, timeout: float, poll: float = 2.0) -> dict[str, dict[str, Any]]:
        """Wait until every node holds everything acknowledged and all agree; each node's view.
        Raises `ChaosFailure` after `timeout` seconds, saying what was still missing."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                views = {n: self.view(n) for n in self.names}
                missing = unsettled(views, self.ledger)
            except (ControlError, KaiMeshError, OSError) as exc:
                missing = f"a node did not answer: {type(exc).__name__}: {exc}"
            if missing is None:
                return views
            if time.monotonic() > deadline:
                raise ChaosFailure(f"the mesh did not settle in {timeout:g} s: {missing}")
            self.log(f"settling: {missing}")
            time.sleep(poll)


def unsettled(views: dict[str, dict[str, Any]], ledger: Ledger) -> str | None:
    """Why the mesh has not settled yet (what is waiting, missing or differs), or None."""
    for name, view in views.items():
        waiting = [r["message_id"] for r in view["outbox"] if r["state"] == "waiting"]
        if waiting:
            return f"{name} has {len(waiting)} must-arrive messages waiting"
        lacking = [k for k in ledger.writes if k not in view["shared"]]
        lacking += [t for _, _, t in ledger.messages.values() if t not in view["shared"]]
        if lacking:
            return f"{name} lacks {len(lacking)} acknowledged keys, e.g. {lacking[:3]}"
    for what in ("digest", "log", "head"):
        seen = {name: repr(view[what]) for name, view in views.items()}
        if len(set(seen.values())) > 1:
            return f"nodes differ in {what}"
    return None


@dataclass
class Checked:
    """What the checker held the mesh to."""

    writes: int
    messages: int
    certified: int
    keys: int
    log_length: int
    served_again: int  # messages whose reply says the recipient's agent ran twice (see below)


def check(views: dict[str, dict[str, Any]], ledger: Ledger) -> Checked:
    """Assert the promises on a settled mesh's views. Raises `ChaosFailure` naming the first
    broken one."""
    first = next(iter(views.values()))
    shared: dict[str, Any] = first["shared"]
    for name, view in views.items():
        if view["shared"] != shared:
            raise ChaosFailure(f"{name}'s shared state differs from {next(iter(views))}'s")
    for key, value in ledger.writes.items():
        if shared.get(key) != value:
            raise ChaosFailure(f"acknowledged write {key}={value!r} reads {shared.get(key)!r}")
    invented = sorted(set(shared) - ledger.tried)
    if invented:
        raise ChaosFailure(f"keys that no client wrote: {invented[:5]}")
    served_again = 0
    for message_id, (src, dst, tag) in ledger.messages.items():
        rows = [r for r in views[src]["outbox"] if r["message_id"] == message_id]
        if len(rows) != 1:
            raise ChaosFailure(f"{src}'s outbox holds message {tag} {len(rows)} times")
        if rows[0]["state"] != "delivered":
            raise ChaosFailure(f"message {tag} from {src} to {dst} is {rows[0]['state']}")
        if shared.get(tag) != tag:
            raise ChaosFailure(f"message {tag}'s effect reads {shared.get(tag)!r}")
        # The recipient's agent runs a message again only when a crash cut its first serving
        # short (runtime/messaging/durable_inbox.py); the second `set` then changes nothing.
        served_again += (rows[0]["reply"] or {}).get("payload") == {"changed": False}
    log = first["log"]
    lost = sorted(ledger.certified - set(log))
    if lost:
        raise ChaosFailure(f"proposals a client saw certified are not in the log: {lost}")
    return Checked(
        writes=len(ledger.writes),
        messages=len(ledger.messages),
        certified=len(ledger.certified),
        keys=len(shared),
        log_length=len(log),
        served_again=served_again,
    )
