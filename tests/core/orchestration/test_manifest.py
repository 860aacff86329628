"""Manifest validation: every key checked, one line naming the key, and no other exception for
any input (Hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kai_mesh.core.errors import ConfigError
from kai_mesh.core.orchestration.manifest import (
    AgentSpec,
    ManifestError,
    manifest_from_table,
    parse_manifest,
    version_key,
)

SMALLEST = """
name = "echo2"
version = "1"
agent = "echo"                      # an entry point, "pkg.mod:Class", or command = [...]
replicas = { min = 2, max = 4 }
strategy = "least_connections"
"""

FULL = """
name = "vision"
version = "2.1"
command = ["python", "-m", "vision_agent"]
intents = ["detect", "ping"]
capabilities = ["gpu", "camera"]
replicas = { min = 1, max = 3 }
resources = { cpu = 0.5, memory = 512 }
strategy = "weighted"
health = { intent = "ping", interval = "15s" }
placement = { roles = ["edge"], nodes = ["cam-1", "cam-2"], spread = false }
disconnect = { lost_after = "1h", replace = false, reconcile = "keep_original" }
shutdown_delay = "30s"
"""


def test_smallest_manifest_from_the_issue() -> None:
    m = parse_manifest(SMALLEST, "echo2.toml")
    assert m.name == "echo2" and m.version == "1"
    assert m.agent == AgentSpec(kind="entry_point", ref="echo")
    assert (m.replicas.min, m.replicas.max) == (2, 4)
    assert m.strategy == "least_connections"
    # Defaults: spread, TTL health, Nomad's default disconnect strategy.
    assert m.placement.spread is True
    assert m.health.ttl == 30.0 and m.health.intent is None
    assert (m.disconnect.replace, m.disconnect.reconcile, m.disconnect.lost_after) == (
        True,
        "best_score",
        0.0,
    )
    assert m.shutdown_delay == 5.0  # not Nomad's 0: deregistration travels by gossip here
    assert "shutdown_delay" not in m.to_table()  # absent stays absent: signed tables unchanged


def test_every_key() -> None:
    m = parse_manifest(FULL.encode())
    assert m.agent == AgentSpec(kind="command", argv=("python", "-m", "vision_agent"))
    assert m.intents == ("detect", "ping") and m.capabilities == ("gpu", "camera")
    assert (m.resources.cpu, m.resources.memory_mb) == (0.5, 512)
    assert m.health.intent == "ping" and m.health.interval == 15.0 and m.health.ttl is None
    assert m.placement.roles == ("edge",) and m.placement.nodes == ("cam-1", "cam-2")
    assert m.placement.spread is False
    assert m.disconnect.lost_after == 3600.0 and m.disconnect.replace is False
    assert m.disconnect.reconcile == "keep_original"
    assert m.shutdown_delay == 30.0 and m.to_table()["shutdown_delay"] == 30.0


def test_class_reference_and_integer_replicas_and_version() -> None:
    m = parse_manifest('name = "a"\nversion = 3\nagent = "pkg.mod:Cls"\nreplicas = 2\n')
    assert m.agent == AgentSpec(kind="class", ref="pkg.mod:Cls")
    assert (m.replicas.min, m.replicas.max) == (2, 2) and m.version == "3"


def test_table_round_trip() -> None:
    for text in (SMALLEST, FULL):
        m = parse_manifest(text)
        assert manifest_from_table(m.to_table()) == m


def test_versions_order_numerically() -> None:
    assert version_key("10") > version_key("9")
    assert version_key("1.0") == version_key("1")
    assert version_key("1.2.1") > version_key("1.2")


BASE = 'name = "s"\nversion = "1"\nagent = "echo"\nreplicas = { min = 1, max = 2 }\n'


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('version = "1"\nagent = "echo"\nreplicas = 1\n', "name", "required"),
        (BASE.replace('"s"', '"Bad Name"'), "name", "invalid service name"),
        (BASE.replace('version = "1"', 'version = "v1"'), "version", "version"),
        (BASE.replace('agent = "echo"', ""), "agent", "exactly one"),
        (BASE + 'command = ["x"]\n', "agent", "exactly one"),
        (BASE.replace('agent = "echo"', "command = []"), "command", "list of 1"),
        (BASE.replace('agent = "echo"', 'agent = "pkg:"'), "agent", "class reference"),
        (BASE.replace("max = 2", "max = 0"), "replicas.max", "from 1"),
        (BASE.replace("min = 1, max = 2", "min = 3, max = 2"), "replicas.max", "at least"),
        (BASE.replace("min = 1, max = 2", "max = 2"), "replicas.min", "required"),
        (BASE + "replicas2 = 1\n", "replicas2", "unknown key"),
        (BASE + 'strategy = "random"\n', "strategy", "one of"),
        (BASE + "resources = { cpu = 0 }\n", "resources.cpu", "more than zero"),
        (BASE + "resources = { memory = 1.5 }\n", "resources.memory", "integer"),
        (BASE + "resources = { gpu = 1 }\n", "resources.gpu", "unknown key"),
        (BASE + 'health = { ttl = "5s", intent = "p" }\n', "health", "not both"),
        (BASE + 'health = { interval = "5s" }\n', "health", "intent"),
        (BASE + 'health = { ttl = "5 s" }\n', "health.ttl", "duration"),
        (BASE + "health = { ttl = 0 }\n", "health.ttl", "more than zero"),
        (BASE + 'placement = { nodes = ["svc"] }\n', "placement.nodes[0]", "reserved"),
        (BASE + 'placement = { nodes = ["A B"] }\n', "placement.nodes[0]", "not a word"),
        (BASE + 'placement = { spread = "yes" }\n', "placement.spread", "true or false"),
        (BASE + 'capabilities = ["gpu", "gpu"]\n', "capabilities", "twice"),
        (BASE + 'disconnect = { reconcile = "newest" }\n', "disconnect.reconcile", "one of"),
        (BASE + "disconnect = { lost_after = -1 }\n", "disconnect.lost_after", "from 0"),
        (BASE + "disconnect = { replace = 1 }\n", "disconnect.replace", "true or false"),
        (BASE + 'shutdown_delay = "soon"\n', "shutdown_delay", "duration"),
        (BASE + "shutdown_delay = -1\n", "shutdown_delay", "from 0"),
        ("name = ", "", "not valid TOML"),
    ],
)
def test_bad_manifest_names_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "svc.toml")
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.key == key
    assert words in err.problem
    assert str(err).startswith("svc.toml: ")
    assert "\n" not in str(err)


def test_not_utf8() -> None:
    with pytest.raises(ManifestError, match="not UTF-8"):
        parse_manifest(b"name = '\xff'")


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_clear_error_or_a_manifest(data: bytes) -> None:
    try:
        parse_manifest(data, "f.toml")
    except ManifestError as exc:
        assert str(exc).startswith("f.toml") and "\n" not in str(exc)


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(
    [
        "name",
        "version",
        "agent",
        "command",
        "replicas",
        "resources",
        "strategy",
        "health",
        "placement",
        "disconnect",
        "intents",
        "capabilities",
        "other",
    ]
)


@settings(max_examples=400)
@given(st.dictionaries(_keys, _values, max_size=8))
def test_any_table_gives_a_clear_error_or_a_manifest(table: dict[str, object]) -> None:
    base = {"name": "s", "version": "1", "agent": "echo", "replicas": 1}
    try:
        manifest_from_table({**base, **table})
    except ManifestError as exc:
        assert "\n" not in str(exc)


AUTOSCALED = """
name = "echo0"
version = "1"
agent = "echo"
replicas = { min = 0, max = 2 }

[autoscaling]
idle = "2m"
activation_threshold = 0
metrics = [{ name = "cpu", target = 70 }, { name = "queue_depth", target = 10 }]
scale_down = { window = "1m", select = "min", policies = [{ pods = 1, period = "30s" }] }
"""


def test_autoscaling_section_defaults_and_round_trip() -> None:
    m = parse_manifest(AUTOSCALED, "echo0.toml")
    a = m.autoscaling
    assert a is not None and a.idle == 120.0 and a.tolerance == 0.1
    assert [(x.name, x.kind) for x in a.metrics] == [
        ("cpu", "utilization"),
        ("queue_depth", "total"),
    ]
    assert a.scale_up.window == 0 and [p.value for p in a.scale_up.policies] == [4, 100]
    assert a.scale_down.window == 60 and a.scale_down.select == "min"
    assert manifest_from_table(m.to_table()) == m
    assert "autoscaling" not in parse_manifest(SMALLEST).to_table()


def test_autoscaled_manifest_above_zero_round_trips() -> None:
    # The canonical table must parse again: `idle` is refused unless min = 0, so it is left out.
    text = SMALLEST + '\n[autoscaling]\nmetrics = [{ name = "in_flight", target = 4 }]\n'
    m = parse_manifest(text, "a.toml")
    assert m.replicas.min > 0 and "idle" not in m.to_table()["autoscaling"]
    assert manifest_from_table(m.to_table()) == m


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[autoscaling]\nbogus = 1", "autoscaling.bogus"),
        (
            "[autoscaling]\nmetrics = [{ name = 'cpu', target = 0 }]",
            "autoscaling.metrics[0].target",
        ),
        ("[autoscaling.scale_up]\nselect = 'most'", "autoscaling.scale_up.select"),
        (
            "[autoscaling.scale_up]\npolicies = [{ pods = 1, percent = 5 }]",
            "autoscaling.scale_up.policies[0]",
        ),
    ],
)
def test_autoscaling_errors_name_the_key(extra: str, key: str) -> None:
    with pytest.raises(ManifestError) as exc:
        parse_manifest(SMALLEST + extra, "s.toml")
    assert exc.value.key == key


def test_idle_needs_min_zero() -> None:
    with pytest.raises(ManifestError) as exc:
        parse_manifest(SMALLEST + "[autoscaling]\nidle = 5", "s.toml")
    assert exc.value.key == "autoscaling.idle"


def test_a_table_nested_deeper_than_repr_recurses_is_refused_not_crashed() -> None:
    """Found by bench/fuzz.py: a peer's manifest table with a value nested ~1200 deep made the
    error message's repr raise RecursionError instead of a ManifestError."""
    deep: object = 0
    for _ in range(5000):
        deep = [deep]
    table = {"name": "echo2", "version": "1", "agent": "echo", "replicas": {"min": 1, "max": deep}}
    with pytest.raises(ManifestError, match="nested too deep"):
        manifest_from_table(table)
