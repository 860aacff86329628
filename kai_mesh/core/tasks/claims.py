"""A task's record in the replicated state, who runs it, and what state it is in.

Layout, one Map per task id (16 hex digits)::

    tasks/ID/spec            {"id", "capability", "intent", "payload", "created_by", "created_at",
                              "deadline"}
    tasks/ID/claims/NODE     {"at": seconds}                      written by NODE only
    tasks/ID/results/NODE    {"ok": bool, "result": value, "reason": str, "at": seconds}

The creator writes `spec` with empty `claims` and `results` Maps in one transaction, and every
other node writes only its own key under them: two nodes never create the same Map concurrently
(Yjs keeps one of two Maps made under one key and the other's content is lost), and no write of
one node ever overwrites another's.

Who runs it, without a leader: the rendezvous (HRW) winner of the task id among the live nodes
that have a ready agent offering the capability, as services' ownership is chosen
(core.orchestration.ownership). A node claims only when it is that winner and no *live* node
holds a claim: a claim by a live node is left alone (a node joining later with a higher score
does not run it again), and a claim by a node the failure detector has declared dead is ignored,
so the next node by score claims and runs it (a retry on another replica).

Views of membership can differ (a partition, the seconds after a failure), so two nodes may both
run a task. The doc keeps both results; `status` keeps one by a deterministic rule every node
computes alike after the merge: the result of the claimer with the highest rendezvous score.
`runs` counts the results, so a duplicate run is seen, not hidden.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from kai_mesh.core.codec import pack
from kai_mesh.core.errors import UsageError
from kai_mesh.core.orchestration.ownership import owner, score
from kai_mesh.core.state.ydoc import check_value

SPEC, CLAIMS, RESULTS = "spec", "claims", "results"
ID_HEX = 16
MAX_TTL = 7 * 24 * 3600  # a task nobody ran in a week is failed: nothing waits forever
DEFAULT_TTL = 3600
MAX_PAYLOAD_BYTES = 16 * 1024  # the spec travels in the doc to every node: keep it small
MAX_WORD = 64
STATES = ("open", "claimed", "done", "failed")
_HEX = frozenset("0123456789abcdef")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    id: str
    capability: str
    intent: str
    payload: Any
    created_by: str  # node id, hex
    created_at: float
    deadline: float

    def to_value(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "capability": self.capability,
            "intent": self.intent,
            "payload": self.payload,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "deadline": self.deadline,
        }


def check_word(kind: str, text: object) -> str:
    """A capability or intent: 1–64 letters, digits, `. _ -`; `UsageError` naming it if not."""
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_WORD or not _WORD.issuperset(text):
        raise UsageError(f"{kind} {text!r}: 1 to {MAX_WORD} letters, digits, '.', '_' or '-'")
    return text


def check_id(text: object) -> str:
    if not isinstance(text, str) or len(text) != ID_HEX or not _HEX.issuperset(text):
        raise UsageError(f"task id {text!r}: {ID_HEX} lower-case hex digits")
    return text


def new_spec(
    *,
    task_id: str,
    capability: str,
    intent: str,
    payload: Any,
    created_by: bytes,
    now: float,
    ttl: float = DEFAULT_TTL,
) -> TaskSpec:
    """A checked spec; `UsageError` with the reason for a bad capability, intent, payload or
    ttl. The id comes from the caller (random in the shell)."""
    check_word("capability", capability)
    check_word("intent", intent)
    check_id(task_id)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        raise UsageError(f"ttl {ttl!r}: seconds, more than 0 and at most {MAX_TTL}")
    check_value(payload, path="payload")
    size = len(pack(payload))
    if size > MAX_PAYLOAD_BYTES:
        raise UsageError(f"payload is {size} bytes; a task's limit is {MAX_PAYLOAD_BYTES}")
    return TaskSpec(task_id, capability, intent, payload, created_by.hex(), now, now + ttl)


def record_of(spec: TaskSpec) -> dict[str, Any]:
    """What the creator writes at tasks/ID."""
    return {SPEC: spec.to_value(), CLAIMS: {}, RESULTS: {}}


def parse_spec(value: object) -> TaskSpec | None:
    """The spec of a record read from the doc, or None if it is not one (ignored)."""
    if not isinstance(value, dict) or not isinstance(value.get(SPEC), dict):
        return None
    s = value[SPEC]
    try:
        check_id(s["id"])
        check_word("capability", s["capability"])
        check_word("intent", s["intent"])
        created_at, deadline = float(s["created_at"]), float(s["deadline"])
        if not isinstance(s["created_by"], str):
            return None
        return TaskSpec(
            s["id"], s["capability"], s["intent"], s.get("payload"), s["created_by"],
            created_at, deadline,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, UsageError):
        return None


def _nodes(value: object) -> dict[bytes, dict[str, Any]]:
    """node id -> record, for a `claims` or `results` Map; keys that are not node ids ignored."""
    out: dict[bytes, dict[str, Any]] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            try:
                node = bytes.fromhex(key)
            except (TypeError, ValueError):
                continue
            if len(node) == 16 and isinstance(item, dict):
                out[node] = item
    return out


@dataclass(frozen=True, slots=True)
class TaskStatus:
    state: str  # one of STATES
    claimer: bytes | None  # who ran it (done/failed) or runs it (claimed)
    result: Any = None
    reason: str = ""
    runs: int = 0  # results in the doc: more than one means a duplicate run after a partition
    claims: int = 0


def kept(task_id: str, nodes: Collection[bytes]) -> bytes | None:
    """Of several claimers or results, the one every node keeps: highest rendezvous score."""
    return owner(_key(task_id), nodes)


def _key(task_id: str) -> str:
    return "task/" + task_id


def status(record: object, live: Collection[bytes], now: float) -> TaskStatus:
    """The task's state as every node with the same doc and membership sees it."""
    spec = parse_spec(record)
    if spec is None or not isinstance(record, dict):
        return TaskStatus("failed", None, reason="not a task record")
    task_id = spec.id
    claims = _nodes(record.get(CLAIMS))
    results = _nodes(record.get(RESULTS))
    if results:
        winner = kept(task_id, results)
        assert winner is not None
        r = results[winner]
        ok = r.get("ok") is True
        return TaskStatus(
            "done" if ok else "failed",
            winner,
            r.get("result"),
            "" if ok else str(r.get("reason") or "failed"),
            len(results),
            len(claims),
        )
    holders = [n for n in claims if n in live]
    if holders:
        return TaskStatus("claimed", kept(task_id, holders), runs=0, claims=len(claims))
    if now >= spec.deadline:
        return TaskStatus("failed", None, reason="deadline passed before any node ran it")
    return TaskStatus("open", None, claims=len(claims))


def should_claim(
    record: object, me: bytes, live: Collection[bytes], capable: Collection[bytes], now: float
) -> bool:
    """Whether `me` claims and runs the task now: it is open (no result, no live claimer, not
    past its deadline), `me` can run it, and `me` wins the rendezvous among the live capable."""
    spec = parse_spec(record)
    if spec is None:
        return False
    if status(record, live, now).state != "open":
        return False
    runners = set(capable) & ({*live, me})
    return me in runners and owner(_key(spec.id), runners) == me


def runner_rank(task_id: str, nodes: Collection[bytes]) -> list[bytes]:
    """Who runs the task, then who runs it if that one fails, and so on."""
    key = _key(task_id)
    return sorted(set(nodes), key=lambda n: (score(key, n), n), reverse=True)


def describe(
    spec: TaskSpec, st: TaskStatus, names: Mapping[bytes, str] | None = None
) -> dict[str, Any]:
    """The task as `kai-mesh tasks show --json` prints it."""
    label = None
    if st.claimer is not None:
        label = (names or {}).get(st.claimer) or st.claimer.hex()
    return {
        "id": spec.id,
        "state": st.state,
        "capability": spec.capability,
        "intent": spec.intent,
        "payload": spec.payload,
        "created_by": spec.created_by,
        "created_at": spec.created_at,
        "deadline": spec.deadline,
        "claimed_by": label,  # a name where this node knows one
        "claimer": st.claimer.hex() if st.claimer is not None else None,
        "result": st.result,
        "reason": st.reason,
        "runs": st.runs,
    }
