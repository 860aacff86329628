"""Node telemetry: a compact binary sample, delta-coded, sent on change or keepalive, in budget.

Telemetry is ephemeral and last-writer-wins, never in the CRDT (like Yjs awareness): each node
sends its own `Sample` (cpu and memory use, task completions, queue depth, served/s, errors, each
replica's in-flight count and readiness, each interface's airtime share) and every peer keeps the
newest per node (`TelemetryView`).

**Wire.** One format byte, a kind byte (full or delta), the sender's `boot` (16 bits the shell
draws at start, so a restarted node is not stuck behind its old sequence numbers), a sequence
number, then unsigned LEB128 varints. A delta names the sequence it is relative to and carries only
the fields that changed (a bit mask, then their new values); the replica and interface lists are
masked the same way. Deltas are only sent when the replica and interface sets are unchanged;
otherwise, and at every keepalive, a full sample goes, so a lost delta costs at most one keepalive
period of staleness. A full sample of a node with 3 replicas and 2 interfaces is 50 bytes.

**When to send** (`TelemetrySender`, sans-IO: `observe(sample, now)`, `get_timer()`,
`handle_timer(now)`): a full sample when `keepalive` has passed since the last one; a delta when
something moved beyond its threshold (cpu or memory by `percent_step` points, queue depth or an
in-flight count by `count_step`, readiness at all, errors at all) and `min_interval` has passed
since the last send. On a budgeted (radio) profile every send also needs tokens from a bucket that
refills at `budget` bytes per hour (each send costs its bytes plus `overhead`, the carrier's
per-packet header); a change that finds the bucket empty waits for it. The bucket holds at most
C = min(2 sends of 80 B, budget / 3) and refills at budget - C per hour, so no hour-long window,
the first one included, carries more than the budget.

**Budget.** Issue 11: at most 500 B per node per hour on a 5 kbit/s interface at 1 % duty. That
interface's background share is 5000 * 0.01 / 8 = 6.25 B/s, 22.5 kB/h: 500 B/h is 2.2 % of it and
0.8 s of airtime per hour. `radio_profile` picks the keepalive so the keepalives alone spend at most
half the budget, leaving the rest to changes; the bucket guarantees the total
(tests/core/orchestration/test_telemetry.py simulates an hour of noisy load and counts bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from kai_mesh.core.errors import Malformed, Truncated, UnknownVersion, UsageError

TELEMETRY_FORMAT = 0x51
FULL, DELTA = 0, 1
MAX_VARINT = 2**63
MAX_ITEMS = 64
MAX_NAME = 64
MAX_SAMPLE = 4096
_EPSILON = 1e-6  # bytes: refills computed in floats must not stall a due send


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    service: str
    replica: int
    in_flight: int = 0
    ready: bool = True

    @property
    def ident(self) -> tuple[str, int]:
        return (self.service, self.replica)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """One node's state. Percentages are integers 0..100; `served` is requests per second times
    10; `errors` and `tasks_done` are counters since the node started; `airtime` maps an
    interface name to its share of time on air in permille."""

    cpu: int = 0
    memory: int = 0
    queue: int = 0
    served: int = 0
    errors: int = 0
    tasks_done: int = 0
    replicas: tuple[ReplicaLoad, ...] = ()
    airtime: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        for name in ("cpu", "memory"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v <= 100:
                raise UsageError(f"telemetry {name}: an integer percentage 0..100")
        for name in ("queue", "served", "errors", "tasks_done"):
            v = getattr(self, name)
            if type(v) is not int or not 0 <= v < MAX_VARINT:
                raise UsageError(f"telemetry {name}: a non-negative integer")
        if len(self.replicas) > MAX_ITEMS or len(self.airtime) > MAX_ITEMS:
            raise UsageError(f"telemetry: at most {MAX_ITEMS} replicas and interfaces")


_SCALARS = ("cpu", "memory", "queue", "served", "errors", "tasks_done")


# Varints -------------------------------------------------------------------------------------


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise Truncated("telemetry: input ended inside a sample")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uvarint(self, limit: int = MAX_VARINT) -> int:
        value = shift = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 63:
                raise Malformed("telemetry: varint too long")
        if value >= limit:
            raise Malformed(f"telemetry: value {value} out of range")
        return value

    def name(self) -> str:
        n = self.byte()
        if not 0 < n <= MAX_NAME or self.pos + n > len(self.data):
            raise Malformed("telemetry: bad name length")
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise Malformed("telemetry: a name is not UTF-8") from None


def _name(text: str) -> bytes:
    raw = text.encode()
    if not 0 < len(raw) <= MAX_NAME:
        raise UsageError(f"telemetry: names are 1..{MAX_NAME} bytes")
    return bytes([len(raw)]) + raw


# Encoding ------------------------------------------------------------------------------------


def _header(kind: int, boot: int, seq: int) -> bytes:
    return bytes([TELEMETRY_FORMAT, kind]) + boot.to_bytes(2, "big") + _uvarint(seq)


def encode_full(sample: Sample, boot: int, seq: int) -> bytes:
    """A full sample."""
    out = bytearray(_header(FULL, boot, seq))
    for name in _SCALARS:
        out += _uvarint(getattr(sample, name))
    out += _uvarint(len(sample.replicas))
    for r in sample.replicas:
        out += _name(r.service) + _uvarint(r.replica) + _uvarint(r.in_flight * 2 + r.ready)
    out += _uvarint(len(sample.airtime))
    for iface, permille in sample.airtime:
        out += _name(iface) + _uvarint(permille)
    return bytes(out)


def delta_possible(base: Sample, sample: Sample) -> bool:
    """Whether `sample` can be sent as a delta against `base` (same replicas and interfaces)."""
    return [r.ident for r in base.replicas] == [r.ident for r in sample.replicas] and [
        a[0] for a in base.airtime
    ] == [a[0] for a in sample.airtime]


def encode_delta(base: Sample, base_seq: int, sample: Sample, boot: int, seq: int) -> bytes:
    """`sample` as the fields that differ from `base` (see `delta_possible`)."""
    if not delta_possible(base, sample):
        raise UsageError("telemetry: a delta needs the same replicas and interfaces as its base")
    out = bytearray(_header(DELTA, boot, seq) + _uvarint(base_seq))
    mask, body = 0, bytearray()
    for i, name in enumerate(_SCALARS):
        if getattr(sample, name) != getattr(base, name):
            mask |= 1 << i
            body += _uvarint(getattr(sample, name))
    rmask, rbody = 0, bytearray()
    for i, (old, new) in enumerate(zip(base.replicas, sample.replicas, strict=True)):
        if (old.in_flight, old.ready) != (new.in_flight, new.ready):
            rmask |= 1 << i
            rbody += _uvarint(new.in_flight * 2 + new.ready)
    amask, abody = 0, bytearray()
    for i, (old_a, new_a) in enumerate(zip(base.airtime, sample.airtime, strict=True)):
        if old_a[1] != new_a[1]:
            amask |= 1 << i
            abody += _uvarint(new_a[1])
    out += _uvarint(mask) + body + _uvarint(rmask) + rbody + _uvarint(amask) + abody
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Decoded:
    boot: int
    seq: int
    base_seq: int | None  # None for a full sample
    sample: Sample | None  # full samples only
    delta: bytes = b""  # the undecoded body of a delta; `apply_delta` reads it


def decode(data: bytes) -> Decoded:
    """Parse a sample's header and, for a full one, its body.

    Raises:
        UnknownVersion, Truncated, Malformed: not a telemetry sample.
    """
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_SAMPLE:
        raise Malformed("telemetry: expected at most 4096 bytes")
    data = bytes(data)
    if not data:
        raise Truncated("telemetry: empty input")
    if data[0] != TELEMETRY_FORMAT:
        raise UnknownVersion(f"telemetry: format {data[0]} is not known")
    r = _Reader(data)
    r.pos = 1
    kind = r.byte()
    boot = (r.byte() << 8) | r.byte()
    seq = r.uvarint()
    if kind == DELTA:
        base = r.uvarint()
        return Decoded(boot, seq, base, None, data[r.pos :])
    if kind != FULL:
        raise Malformed(f"telemetry: unknown kind {kind}")
    try:
        scalars = {
            name: r.uvarint(101 if name in ("cpu", "memory") else MAX_VARINT) for name in _SCALARS
        }
        reps = []
        for _ in range(r.uvarint(MAX_ITEMS + 1)):
            service, replica, packed = r.name(), r.uvarint(), r.uvarint()
            reps.append(ReplicaLoad(service, replica, packed >> 1, bool(packed & 1)))
        air = tuple((r.name(), r.uvarint()) for _ in range(r.uvarint(MAX_ITEMS + 1)))
        sample = Sample(**scalars, replicas=tuple(reps), airtime=air)
    except UsageError as exc:
        raise Malformed(str(exc)) from None
    if r.pos != len(data):
        raise Malformed("telemetry: unexpected bytes after the sample")
    return Decoded(boot, seq, None, sample)


def apply_delta(base: Sample, body: bytes) -> Sample:
    """`base` with a delta's changes. Raises `Truncated`/`Malformed` on bad bytes."""
    r = _Reader(body)
    mask = r.uvarint(1 << len(_SCALARS))
    changes: dict[str, int] = {}
    for i, name in enumerate(_SCALARS):
        if mask >> i & 1:
            changes[name] = r.uvarint(101 if name in ("cpu", "memory") else MAX_VARINT)
    rmask = r.uvarint(1 << len(base.replicas) if base.replicas else 1)
    reps = list(base.replicas)
    for i in range(len(reps)):
        if rmask >> i & 1:
            packed = r.uvarint()
            reps[i] = replace(reps[i], in_flight=packed >> 1, ready=bool(packed & 1))
    amask = r.uvarint(1 << len(base.airtime) if base.airtime else 1)
    air = list(base.airtime)
    for i in range(len(air)):
        if amask >> i & 1:
            air[i] = (air[i][0], r.uvarint())
    if r.pos != len(body):
        raise Malformed("telemetry: unexpected bytes after the delta")
    return replace(base, **changes, replicas=tuple(reps), airtime=tuple(air))


# Receiving -----------------------------------------------------------------------------------


@dataclass
class TelemetryView:
    """The newest sample per node, last writer wins. A delta whose base is not the one held is
    dropped (the next keepalive brings a full sample)."""

    samples: dict[bytes, Sample] = field(default_factory=dict)
    _seen: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # node -> (boot, seq)

    def receive(self, node: bytes, data: bytes) -> Sample | None:
        """The node's sample after `data`, or None if `data` was stale or its base is missing.

        Raises:
            ProtocolError: `data` is not a telemetry sample.
        """
        d = decode(data)
        seen = self._seen.get(node)
        fresh = seen is None or d.boot != seen[0] or d.seq > seen[1]
        if d.sample is not None:
            if not fresh:
                return None
            self.samples[node] = d.sample
        else:
            if seen is None or (d.boot, d.base_seq) != seen or not fresh:
                return None
            self.samples[node] = apply_delta(self.samples[node], d.delta)
        self._seen[node] = (d.boot, d.seq)
        return self.samples[node]


# Sending -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryPolicy:
    """`budget`: bytes per hour including `overhead` per send (None: unbudgeted, a fast link)."""

    keepalive: float
    min_interval: float
    percent_step: int = 10
    count_step: int = 2
    budget: float | None = None
    overhead: int = 0
    burst: int = 2  # sends the bucket holds when full

    def __post_init__(self) -> None:
        if not 0 < self.min_interval <= self.keepalive:
            raise UsageError("telemetry: 0 < min_interval <= keepalive")


def lan_profile() -> TelemetryPolicy:
    """Fast links: keepalive every 5 s, changes at most once a second."""
    return TelemetryPolicy(keepalive=5.0, min_interval=1.0)


# Reticulum's header for a packet through a transport node (2 + 2 * 16 bytes + context).
RNS_OVERHEAD = 35


def keepalive_for_budget(budget: float, full_bytes: int, overhead: int, share: float) -> float:
    """The shortest keepalive (seconds) whose full samples spend at most `share` of `budget`
    bytes per hour."""
    per_send = full_bytes + overhead
    return math.ceil(3600.0 * per_send / (budget * share))


def radio_profile(
    budget: float = 500.0, full_bytes: int = 56, overhead: int = RNS_OVERHEAD
) -> TelemetryPolicy:
    """A radio link's background share: keepalives take half of `budget` B/h, changes the rest."""
    keepalive = keepalive_for_budget(budget, full_bytes, overhead, 0.5)
    return TelemetryPolicy(
        keepalive=keepalive,
        min_interval=min(keepalive, 60.0),
        percent_step=20,
        count_step=4,
        budget=budget,
        overhead=overhead,
    )


def airtime_share(bytes_per_hour: float, bitrate: float) -> float:
    """The fraction of an hour on air that `bytes_per_hour` costs at `bitrate` bit/s."""
    return bytes_per_hour * 8 / bitrate / 3600.0


class TelemetrySender:
    """Decides when this node's telemetry goes out, and encodes it. See the module docstring."""

    def __init__(self, policy: TelemetryPolicy, boot: int, now: float) -> None:
        if not 0 <= boot < 1 << 16:
            raise UsageError("telemetry boot: 16 bits")
        self.policy = policy
        self.boot = boot
        self._seq = 0
        self._current: Sample | None = None
        self._sent: Sample | None = None
        self._sent_at: float | None = None
        self._full_at: float | None = None
        self._tokens = float(self._cap())
        self._tokens_at = now

    def _cap(self) -> float:
        p = self.policy
        return math.inf if p.budget is None else min(p.burst * 80.0, p.budget / 3)

    def _rate(self) -> float:
        # A bucket of capacity C refilled at R bytes/hour lets at most C + R through in any hour:
        # refilling at budget - C keeps every hour-long window within the budget.
        assert self.policy.budget is not None
        return self.policy.budget - self._cap()

    def _refill(self, now: float) -> None:
        if self.policy.budget is not None and now > self._tokens_at:
            self._tokens = min(
                self._cap(), self._tokens + (now - self._tokens_at) * self._rate() / 3600
            )
        self._tokens_at = max(self._tokens_at, now)

    def observe(self, sample: Sample, now: float) -> bytes | None:
        """Take the node's current sample; return bytes to send now, if any."""
        self._current = sample
        return self.handle_timer(now)

    def _moved(self) -> bool:
        cur, sent, p = self._current, self._sent, self.policy
        assert cur is not None
        if sent is None or not delta_possible(sent, cur):
            return True
        if (
            abs(cur.cpu - sent.cpu) >= p.percent_step
            or abs(cur.memory - sent.memory) >= p.percent_step
        ):
            return True
        if abs(cur.queue - sent.queue) >= p.count_step or cur.errors != sent.errors:
            return True
        return any(
            a.ready != b.ready or abs(a.in_flight - b.in_flight) >= p.count_step
            for a, b in zip(sent.replicas, cur.replicas, strict=True)
        )

    def get_timer(self) -> float | None:
        """When to call `handle_timer` next (None: nothing to send until `observe`)."""
        if self._current is None:
            return None
        if self._full_at is None:
            return self._tokens_at
        due = self._full_at + self.policy.keepalive
        if self._sent_at is not None and self._moved():
            due = min(due, self._sent_at + self.policy.min_interval)
        return max(due, self._when_affordable(due))

    def _when_affordable(self, at: float) -> float:
        p = self.policy
        if p.budget is None or self._current is None:
            return at
        need = len(encode_full(self._current, self.boot, self._seq + 1)) + p.overhead
        missing = need - self._tokens
        return at if missing <= _EPSILON else self._tokens_at + missing * 3600 / self._rate()

    def handle_timer(self, now: float) -> bytes | None:
        """Bytes to send at `now`, if the rules say so."""
        if self._current is None:
            return None
        self._refill(now)
        p = self.policy
        keepalive_due = self._full_at is None or now >= self._full_at + p.keepalive
        change_due = (
            not keepalive_due
            and self._sent_at is not None
            and now >= self._sent_at + p.min_interval
            and self._moved()
        )
        if not (keepalive_due or change_due):
            return None
        cur, sent = self._current, self._sent
        seq = self._seq + 1
        if change_due and sent is not None and delta_possible(sent, cur):
            data = encode_delta(sent, self._seq, cur, self.boot, seq)
        else:
            data = encode_full(cur, self.boot, seq)
        if p.budget is not None and self._tokens + _EPSILON < len(data) + p.overhead:
            return None
        self._tokens -= len(data) + p.overhead
        self._seq, self._sent, self._sent_at = seq, cur, now
        if data[1] == FULL:
            self._full_at = now
        return data
