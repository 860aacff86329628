"""A replica's health on its own node: probes, readiness, restarts, giving up (issue 11, item 8).

One `ReplicaHealth` per replica a node hosts whose manifest asks for an active check
(`health = { intent = "ping", interval = "15s" }`). It copies Kubernetes' probe semantics
(pkg/kubelet/prober/worker.go; the defaults of `v1.Probe`): the first probe goes as soon as the
agent is up (`initialDelaySeconds` 0), then one every `interval` (`periodSeconds`); a probe that
does not answer within `timeout` (`timeoutSeconds`) failed; the replica is **ready** after
`success_threshold` consecutive passes (1) and **unready** after `failure_threshold` consecutive
failures (3). Readiness is what balancing reads: an unready replica gets no traffic.

Beyond the readiness probe, the same failures act as a liveness probe: when the replica turns
unready the node restarts it (`Restart`; the agent host's supervisor applies its exponential
backoff). A restart that does not bring it back to a passing probe counts; after `give_up_after`
such restarts in a row the node gives up (`GiveUp`, state "failed") and the owner places the
replica elsewhere (the node keeps a "failed" record for that manifest, so the owner does not put
it back). One passing probe clears the count.

While the agent host has the replica down (starting, restarting) probes pause and the state is
"starting": the host's own supervision answers for it then.

A manifest with a TTL check (`health = { ttl = "30s" }`, the default) has no machine: the
replica is ready while its agent is, and a replica that falls silent because its node did is
found by the failure detector, which takes the node's replicas out of balancing.

Pure: time comes in as `now`; `get_timer` says when to call `handle_timer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kai_mesh.core.errors import UsageError

HealthState = Literal["starting", "ready", "unready", "failed"]

DEFAULT_TIMEOUT = 5.0
FAILURE_THRESHOLD = 3
SUCCESS_THRESHOLD = 1
GIVE_UP_AFTER = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbePolicy:
    interval: float
    timeout: float = DEFAULT_TIMEOUT
    failure_threshold: int = FAILURE_THRESHOLD
    success_threshold: int = SUCCESS_THRESHOLD
    give_up_after: int = GIVE_UP_AFTER

    def __post_init__(self) -> None:
        if not self.interval > 0 or not self.timeout > 0:
            raise UsageError("health: interval and timeout must be positive")
        if min(self.failure_threshold, self.success_threshold, self.give_up_after) < 1:
            raise UsageError("health: thresholds are at least 1")

    @property
    def probe_timeout(self) -> float:
        """A probe never waits longer than the period it belongs to."""
        return min(self.timeout, self.interval)


@dataclass(frozen=True, slots=True)
class Probe:
    """Call the health intent now; report with `probe_result`."""


@dataclass(frozen=True, slots=True)
class Restart:
    reason: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


Action = Probe | Restart | GiveUp


class ReplicaHealth:
    """See the module docstring."""

    def __init__(self, policy: ProbePolicy) -> None:
        self.policy = policy
        self.state: HealthState = "starting"
        self.reason = ""
        self.failures = 0  # consecutive failed probes
        self.passes = 0  # consecutive passed probes
        self.restarts = 0  # restarts since the last passing probe
        self.probes = 0
        self._agent_up = False
        self._next: float | None = None
        self._probing = False

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def agent(self, up: bool, now: float) -> None:
        """The agent host's view of the replica: up (its state is ready) or not."""
        if self.state == "failed" or up == self._agent_up:
            return
        self._agent_up = up
        self.failures = self.passes = 0
        if up:
            self._next = now  # probe at once: initialDelaySeconds 0
        else:
            self._next = None
            self._probing = False
            self.state = "starting"

    def get_timer(self) -> float | None:
        """When the next probe is due (None: none until the agent is up)."""
        if self.state == "failed" or not self._agent_up or self._probing:
            return None
        return self._next

    def handle_timer(self, now: float) -> Probe | None:
        due = self.get_timer()
        if due is None or now < due:
            return None
        self._probing = True
        self.probes += 1
        return Probe()

    def probe_result(self, ok: bool, now: float, detail: str = "") -> Restart | GiveUp | None:
        """A probe's outcome (a timeout is `ok=False`). Returns what the node must do."""
        if not self._probing:
            return None  # the agent went down meanwhile: this answer is about another life
        self._probing = False
        self._next = now + self.policy.interval
        if ok:
            self.failures = 0
            self.passes += 1
            if self.passes >= self.policy.success_threshold:
                self.state, self.reason, self.restarts = "ready", "", 0
            return None
        self.passes = 0
        self.failures += 1
        self.reason = f"health check failed: {detail}" if detail else "health check failed"
        if self.failures < self.policy.failure_threshold:
            return None
        if self.restarts >= self.policy.give_up_after:
            self.state = "failed"
            self._next = None
            why = f"{self.failures} in a row after {self.restarts} restarts"
            return GiveUp(f"{self.reason} ({why})")
        self.state = "unready"
        self.restarts += 1
        self.failures = 0
        return Restart(f"{self.reason} ({self.policy.failure_threshold} in a row)")
