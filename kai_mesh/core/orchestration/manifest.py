"""The service manifest: TOML in, a frozen and validated `Manifest` out (docs/services.md).

A manifest says what to run (an agent entry point, a `pkg.mod:Class`, or a command speaking the
JSON-lines agent protocol), how many replicas (`min`..`max`), on which nodes (capabilities,
roles, names, spread), with what resources, how senders balance across the replicas, how a replica
proves it is healthy, and what happens to a node's replicas while it is disconnected (Nomad's
`disconnect` block: `lost_after`, `replace`, `reconcile`).

Validation is strict and total: every key is known, every value has its type and range, and the
first problem found raises `ManifestError` whose one-line message names the source, the key and
what is wrong. Parsing never raises anything else, whatever the input bytes (the Hypothesis test
holds us to it). `Manifest.to_table()` is the canonical table (defaults filled in) that goes on the
wire; `manifest_from_table` reads it back through the same checks, so a manifest from a peer is
held to the rules a local file is.

Versions are dotted integers ("1", "2.3"); they order numerically, trailing zeros ignored, so "a
newer version always wins" (Nomad) has one meaning on every node.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kai_mesh.core.errors import AddressError, ConfigError
from kai_mesh.core.mesh.address import NodeRef, check_name
from kai_mesh.core.orchestration.autoscale import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    METRIC_KINDS,
    SELECTS,
    AutoscaleSpec,
    MetricTarget,
    ScalingPolicy,
    ScalingRules,
)
from kai_mesh.core.orchestration.rules import Rule, RuleError, rules_from_table

Strategy = Literal["round_robin", "least_connections", "weighted"]
ReconcileOption = Literal["best_score", "keep_original", "keep_replacement", "longest_running"]
AgentKind = Literal["entry_point", "class", "command"]

STRATEGIES: tuple[str, ...] = ("round_robin", "least_connections", "weighted")
# Nomad's ReconcileOption* constants (nomad/structs/group.go), same spelling.
RECONCILE_OPTIONS: tuple[str, ...] = (
    "best_score",
    "keep_original",
    "keep_replacement",
    "longest_running",
)

MAX_MANIFEST = 64 * 1024  # bytes of TOML
MAX_REPLICAS = 1024
MAX_ITEMS = 64  # intents, capabilities, roles, nodes, command words
MAX_TEXT = 256
MAX_CPU = 1024.0  # cores
MAX_MEMORY_MB = 1 << 22  # 4 TiB
MAX_DURATION = 366 * 24 * 3600.0  # seconds

DEFAULT_CPU = 0.1
DEFAULT_MEMORY_MB = 64
DEFAULT_HEALTH_INTERVAL = 10.0
DEFAULT_TTL = 30.0
# Nomad's `shutdown_delay` is 0 by default because Consul deregisters a task before Nomad stops
# it; here the "deregistration" (a replica's record leaving the replicated state) reaches the
# senders by gossip, so a moved or replaced copy keeps serving this long after it (see hosting).
DEFAULT_SHUTDOWN_DELAY = 5.0

_VERSION_RE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}")
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")
_ENTRY_POINT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_CLASS_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_TOP_KEYS = frozenset(
    {
        "name",
        "version",
        "agent",
        "command",
        "intents",
        "capabilities",
        "replicas",
        "resources",
        "strategy",
        "health",
        "placement",
        "disconnect",
        "autoscaling",
        "rules",
        "shutdown_delay",
    }
)
# The kind a well-known metric has unless the manifest says otherwise.
_METRIC_KIND = {
    "cpu": "utilization",
    "memory": "utilization",
    "queue_depth": "total",
    "requests_per_s": "total",
}


class ManifestError(ConfigError):
    """A manifest is refused. `key` is the dotted key at fault ("" for the whole document)."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """What a replica runs. `kind` "entry_point": `ref` names one in the `kai_mesh.agents` group;
    "class": `ref` is "pkg.mod:Class"; "command": `argv` speaks JSON lines on stdin/stdout."""

    kind: AgentKind
    ref: str = ""
    argv: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Replicas:
    min: int
    max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """`cpu` in cores (0.5 is half a core); `memory_mb` in MiB."""

    cpu: float = DEFAULT_CPU
    memory_mb: int = DEFAULT_MEMORY_MB


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """Either an active check (`intent` called every `interval` seconds) or a TTL (`ttl`: the
    replica must report within this many seconds), as Consul's script/TTL checks."""

    intent: str | None = None
    interval: float | None = None
    ttl: float | None = DEFAULT_TTL


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementRules:
    """Empty `roles`/`nodes`: any. `spread`: at most one replica per node while nodes last."""

    roles: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    spread: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnect:
    """Nomad's `disconnect` block (nomad/structs/group.go `DisconnectStrategy`, defaults from
    `NewDefaultDisconnectStrategy`: replace true, reconcile best_score, lost_after 0)."""

    lost_after: float = 0.0
    replace: bool = True
    reconcile: ReconcileOption = "best_score"


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    name: str
    version: str
    agent: AgentSpec
    replicas: Replicas
    strategy: Strategy = "round_robin"
    intents: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    health: HealthCheck = field(default_factory=HealthCheck)
    placement: PlacementRules = field(default_factory=PlacementRules)
    disconnect: Disconnect = field(default_factory=Disconnect)
    autoscaling: AutoscaleSpec | None = None
    rules: tuple[Rule, ...] = ()  # reactive rules (core.orchestration.rules), run by the owner
    shutdown_delay: float = DEFAULT_SHUTDOWN_DELAY

    @property
    def version_key(self) -> tuple[int, ...]:
        return version_key(self.version)

    def to_table(self) -> dict[str, Any]:
        """The canonical table: every key present, defaults explicit, lists for tuples."""
        table: dict[str, Any] = {"name": self.name, "version": self.version}
        if self.agent.kind == "command":
            table["command"] = list(self.agent.argv)
        else:
            table["agent"] = self.agent.ref
        health: dict[str, Any] = (
            {"ttl": self.health.ttl}
            if self.health.ttl is not None
            else {"intent": self.health.intent, "interval": self.health.interval}
        )
        table.update(
            intents=list(self.intents),
            capabilities=list(self.capabilities),
            replicas={"min": self.replicas.min, "max": self.replicas.max},
            resources={"cpu": self.resources.cpu, "memory": self.resources.memory_mb},
            strategy=self.strategy,
            health=health,
            placement={
                "roles": list(self.placement.roles),
                "nodes": list(self.placement.nodes),
                "spread": self.placement.spread,
            },
            disconnect={
                "lost_after": self.disconnect.lost_after,
                "replace": self.disconnect.replace,
                "reconcile": self.disconnect.reconcile,
            },
        )
        if self.autoscaling is not None:  # absent stays absent: older wire tables are unchanged
            table["autoscaling"] = _autoscaling_table(self.autoscaling)
            if self.replicas.min != 0:  # `idle` is refused there: the table must parse again
                del table["autoscaling"]["idle"]
        if self.rules:  # likewise absent stays absent
            table["rules"] = [r.to_table() for r in self.rules]
        if self.shutdown_delay != DEFAULT_SHUTDOWN_DELAY:  # likewise
            table["shutdown_delay"] = self.shutdown_delay
        return table


def _rules_table(r: ScalingRules) -> dict[str, Any]:
    return {
        "window": r.window,
        "select": r.select,
        "policies": [{p.kind: p.value, "period": p.period} for p in r.policies],
    }


def _autoscaling_table(a: AutoscaleSpec) -> dict[str, Any]:
    return {
        "metrics": [{"name": m.name, "target": m.target, "kind": m.kind} for m in a.metrics],
        "tolerance": a.tolerance,
        "idle": a.idle,
        "activation_threshold": a.activation_threshold,
        "scale_up": _rules_table(a.scale_up),
        "scale_down": _rules_table(a.scale_down),
    }


def version_key(version: str) -> tuple[int, ...]:
    """A version as a comparable tuple, trailing zeros dropped ("1.0" == "1")."""
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def parse_manifest(data: bytes | str, source: str = "<manifest>") -> Manifest:
    """Parse and validate a TOML manifest.

    Raises:
        ManifestError: one line naming `source`, the key and what is wrong (never anything else).
    """
    if isinstance(data, bytes | bytearray):
        if len(data) > MAX_MANIFEST:
            raise ManifestError(source, "", f"larger than {MAX_MANIFEST} bytes")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(source, "", f"not UTF-8 (byte {exc.start})") from None
    else:
        text = data
    if len(text) > MAX_MANIFEST:
        raise ManifestError(source, "", f"larger than {MAX_MANIFEST} bytes")
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(source, "", f"not valid TOML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. NUL characters, absurd nesting
        raise ManifestError(source, "", f"not valid TOML: {exc}") from None
    return manifest_from_table(table, source)


def manifest_from_table(table: object, source: str = "<manifest>") -> Manifest:
    """Validate a table (parsed TOML, or the wire form from `Manifest.to_table`).

    Raises:
        ManifestError: as `parse_manifest`.
    """
    return _Reader(source).manifest(table)


class _Reader:
    """Checks one document; each method names the key it reads in its errors."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ManifestError:
        return ManifestError(self.source, key, problem)

    def table(self, value: object, key: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a table, got {_kind(value)}")
        for k in value:
            if k not in allowed:
                # A quoted TOML key can hold anything, a newline too: shown escaped, one line.
                name = k if isinstance(k, str) and k.isprintable() and k else repr(k)[:40]
                at = f"{key}.{name}" if key else name
                raise self.fail(at, f"unknown key (known: {', '.join(sorted(allowed))})")
        return value

    def text(self, value: object, key: str, pattern: re.Pattern[str], hint: str) -> str:
        if type(value) is not str:
            raise self.fail(key, f"must be a string, got {_kind(value)}")
        if not pattern.fullmatch(value):
            raise self.fail(key, f"{value[:40]!r} is not {hint}")
        return value

    def words(self, value: object, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list of strings, got {_kind(value)}")
        if len(value) > MAX_ITEMS:
            raise self.fail(key, f"at most {MAX_ITEMS} items")
        out = tuple(
            self.text(v, f"{key}[{i}]", _WORD_RE, "a word of 1-64 letters, digits or ._:/-")
            for i, v in enumerate(value)
        )
        if len(set(out)) != len(out):
            raise self.fail(key, "lists a value twice")
        return out

    def integer(self, value: object, key: str, low: int, high: int) -> int:
        if type(value) is not int or not low <= value <= high:
            raise self.fail(key, f"must be an integer from {low} to {high}, got {_show(value)}")
        return value

    def number(self, value: object, key: str, low: float, high: float) -> float:
        if type(value) not in (int, float):
            raise self.fail(key, f"must be a number, got {_kind(value)}")
        num = float(value)  # type: ignore[arg-type]
        if not (math.isfinite(num) and low <= num <= high):
            raise self.fail(key, f"must be from {low:g} to {high:g}, got {_show(value)}")
        return num

    def boolean(self, value: object, key: str) -> bool:
        if type(value) is not bool:
            raise self.fail(key, f"must be true or false, got {_kind(value)}")
        return value

    def duration(self, value: object, key: str, *, zero: bool) -> float:
        """Seconds, as a number or a string with a unit ("250ms", "30s", "5m", "1h")."""
        if type(value) is str:
            m = _DURATION_RE.fullmatch(value)
            if m is None:
                raise self.fail(key, f'{value[:40]!r} is not a duration like "30s", "5m", "1h"')
            value = float(m.group(1)) * _UNITS[m.group(2)]
        seconds = self.number(value, key, 0.0, MAX_DURATION)
        if seconds == 0 and not zero:
            raise self.fail(key, "must be more than zero")
        return seconds

    def choice(self, value: object, key: str, options: tuple[str, ...]) -> str:
        if type(value) is not str or value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}, got {_show(value)}")
        return value

    def manifest(self, doc: object) -> Manifest:
        t = self.table(doc, "", _TOP_KEYS)
        for required in ("name", "version", "replicas"):
            if required not in t:
                raise self.fail(required, "is required")
        name = self.name(t["name"])
        version = t["version"]
        if type(version) is int and version >= 0:
            version = str(version)
        version = self.text(version, "version", _VERSION_RE, 'a version like "1" or "2.3"')
        replicas = self.replicas(t["replicas"])
        return Manifest(
            name=name,
            version=version,
            agent=self.agent(t),
            replicas=replicas,
            strategy=self.choice(t.get("strategy", "round_robin"), "strategy", STRATEGIES),  # type: ignore[arg-type]
            intents=self.words(t.get("intents"), "intents"),
            capabilities=self.words(t.get("capabilities"), "capabilities"),
            resources=self.resources(t.get("resources", {})),
            health=self.health(t.get("health")),
            placement=self.placement(t.get("placement", {})),
            disconnect=self.disconnect(t.get("disconnect", {})),
            autoscaling=self.autoscaling(t.get("autoscaling"), replicas),
            rules=self.rules(t.get("rules")),
            shutdown_delay=self.duration(
                t.get("shutdown_delay", DEFAULT_SHUTDOWN_DELAY), "shutdown_delay", zero=True
            ),
        )

    def rules(self, value: object) -> tuple[Rule, ...]:
        if value is None:
            return ()
        try:
            return rules_from_table(value, self.source, "rules")
        except RuleError as exc:
            raise self.fail(exc.key, exc.problem) from None

    def autoscaling(self, value: object, replicas: Replicas) -> AutoscaleSpec | None:
        if value is None:
            return None
        keys = {"metrics", "tolerance", "idle", "activation_threshold", "scale_up", "scale_down"}
        t = self.table(value, "autoscaling", frozenset(keys))
        if "idle" in t and replicas.min != 0:
            raise self.fail("autoscaling.idle", "only with replicas.min = 0 (scale to zero)")
        raw = t.get("metrics", [])
        if not isinstance(raw, list) or len(raw) > MAX_ITEMS:
            raise self.fail("autoscaling.metrics", f"must be a list of at most {MAX_ITEMS} tables")
        metrics = []
        for i, m in enumerate(raw):
            at = f"autoscaling.metrics[{i}]"
            mt = self.table(m, at, frozenset({"name", "target", "kind"}))
            if "name" not in mt or "target" not in mt:
                raise self.fail(at, "give name = ... and target = ...")
            name = self.text(mt["name"], f"{at}.name", _WORD_RE, "a metric name")
            target = self.number(mt["target"], f"{at}.target", 0.0, 1e12)
            if target <= 0:
                raise self.fail(f"{at}.target", "must be more than zero")
            kind = self.choice(
                mt.get("kind", _METRIC_KIND.get(name, "average")), f"{at}.kind", METRIC_KINDS
            )
            metrics.append(MetricTarget(name=name, target=target, kind=kind))  # type: ignore[arg-type]
        return AutoscaleSpec(
            metrics=tuple(metrics),
            tolerance=self.number(t.get("tolerance", 0.1), "autoscaling.tolerance", 0.0, 1.0),
            idle=self.duration(t.get("idle", 300), "autoscaling.idle", zero=True),
            activation_threshold=self.number(
                t.get("activation_threshold", 0), "autoscaling.activation_threshold", 0.0, 1e12
            ),
            scale_up=self.scaling_rules(
                t.get("scale_up"), "autoscaling.scale_up", DEFAULT_SCALE_UP
            ),
            scale_down=self.scaling_rules(
                t.get("scale_down"), "autoscaling.scale_down", DEFAULT_SCALE_DOWN
            ),
        )

    def scaling_rules(self, value: object, key: str, default: ScalingRules) -> ScalingRules:
        if value is None:
            return default
        t = self.table(value, key, frozenset({"window", "select", "policies"}))
        policies = default.policies
        if "policies" in t:
            raw = t["policies"]
            if not isinstance(raw, list) or len(raw) > MAX_ITEMS:
                raise self.fail(f"{key}.policies", "must be a list of tables")
            out = []
            for i, p in enumerate(raw):
                at = f"{key}.policies[{i}]"
                pt = self.table(p, at, frozenset({"pods", "percent", "period"}))
                if ("pods" in pt) == ("percent" in pt):
                    raise self.fail(at, "give exactly one of pods = N or percent = N")
                kind = "pods" if "pods" in pt else "percent"
                amount = self.integer(pt[kind], f"{at}.{kind}", 1, 100_000)
                period = self.duration(pt.get("period", 15), f"{at}.period", zero=False)
                out.append(ScalingPolicy(kind=kind, value=amount, period=period))  # type: ignore[arg-type]
            policies = tuple(out)
        return ScalingRules(
            window=self.duration(t.get("window", default.window), f"{key}.window", zero=True),
            select=self.choice(t.get("select", "max"), f"{key}.select", SELECTS),  # type: ignore[arg-type]
            policies=policies,
        )

    def name(self, value: object) -> str:
        if type(value) is not str:
            raise self.fail("name", f"must be a string, got {_kind(value)}")
        try:
            return check_name("service", value)
        except AddressError as exc:
            raise self.fail("name", str(exc)) from None

    def agent(self, t: Mapping[str, Any]) -> AgentSpec:
        if ("agent" in t) == ("command" in t):
            raise self.fail("agent", "give exactly one of agent = ... or command = [...]")
        if "command" in t:
            argv = t["command"]
            if not isinstance(argv, list) or not 1 <= len(argv) <= MAX_ITEMS:
                raise self.fail("command", f"must be a list of 1 to {MAX_ITEMS} strings")
            for i, word in enumerate(argv):
                if type(word) is not str or not 0 < len(word) <= MAX_TEXT or "\x00" in word:
                    raise self.fail(
                        f"command[{i}]", f"must be a non-empty string, got {_show(word)}"
                    )
            return AgentSpec(kind="command", argv=tuple(argv))
        ref = t["agent"]
        if type(ref) is str and ":" in ref:
            ref = self.text(ref, "agent", _CLASS_RE, 'a class reference like "pkg.mod:Class"')
            return AgentSpec(kind="class", ref=ref)
        ref = self.text(ref, "agent", _ENTRY_POINT_RE, "an agent entry point name")
        return AgentSpec(kind="entry_point", ref=ref)

    def replicas(self, value: object) -> Replicas:
        if type(value) is int:
            n = self.integer(value, "replicas", 1, MAX_REPLICAS)
            return Replicas(min=n, max=n)
        t = self.table(value, "replicas", frozenset({"min", "max"}))
        if "min" not in t:
            raise self.fail("replicas.min", "is required")
        low = self.integer(t["min"], "replicas.min", 0, MAX_REPLICAS)
        high = self.integer(t.get("max", max(low, 1)), "replicas.max", 1, MAX_REPLICAS)
        if high < low:
            raise self.fail("replicas.max", f"must be at least replicas.min ({low}), got {high}")
        return Replicas(min=low, max=high)

    def resources(self, value: object) -> Resources:
        t = self.table(value, "resources", frozenset({"cpu", "memory"}))
        cpu = self.number(t.get("cpu", DEFAULT_CPU), "resources.cpu", 0.0, MAX_CPU)
        if cpu <= 0:
            raise self.fail("resources.cpu", "must be more than zero")
        memory = self.integer(
            t.get("memory", DEFAULT_MEMORY_MB), "resources.memory", 1, MAX_MEMORY_MB
        )
        return Resources(cpu=cpu, memory_mb=memory)

    def health(self, value: object) -> HealthCheck:
        if value is None:
            return HealthCheck()
        t = self.table(value, "health", frozenset({"intent", "interval", "ttl"}))
        if "ttl" in t:
            if "intent" in t or "interval" in t:
                raise self.fail("health", "give either ttl, or intent and interval, not both")
            return HealthCheck(ttl=self.duration(t["ttl"], "health.ttl", zero=False))
        if "intent" not in t:
            raise self.fail("health", "give ttl = ..., or intent = ... (with an interval)")
        intent = self.text(t["intent"], "health.intent", _WORD_RE, "an intent name")
        interval = self.duration(
            t.get("interval", DEFAULT_HEALTH_INTERVAL), "health.interval", zero=False
        )
        return HealthCheck(intent=intent, interval=interval, ttl=None)

    def placement(self, value: object) -> PlacementRules:
        t = self.table(value, "placement", frozenset({"roles", "nodes", "spread"}))
        nodes = self.words(t.get("nodes"), "placement.nodes")
        for i, node in enumerate(nodes):
            try:
                NodeRef(name=node)  # "svc" and 32 hex digits cannot name a node
            except AddressError as exc:
                raise self.fail(f"placement.nodes[{i}]", str(exc)) from None
        return PlacementRules(
            roles=self.words(t.get("roles"), "placement.roles"),
            nodes=nodes,
            spread=self.boolean(t.get("spread", True), "placement.spread"),
        )

    def disconnect(self, value: object) -> Disconnect:
        t = self.table(value, "disconnect", frozenset({"lost_after", "replace", "reconcile"}))
        option = self.choice(
            t.get("reconcile", "best_score"), "disconnect.reconcile", RECONCILE_OPTIONS
        )
        return Disconnect(
            lost_after=self.duration(t.get("lost_after", 0), "disconnect.lost_after", zero=True),
            replace=self.boolean(t.get("replace", True), "disconnect.replace"),
            reconcile=option,  # type: ignore[arg-type]
        )


def _kind(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return names.get(type(value), f"a {type(value).__name__}")


def _show(value: object) -> str:
    try:
        text = repr(value)
    except RecursionError:  # a table from a peer can nest deeper than repr recurses
        return f"{_kind(value)} nested too deep"
    return text if len(text) <= 40 else text[:37] + "..."
