"""Fuzz every decoder that reads bytes or text from outside, far past CI's budget.

    .venv/bin/python bench/fuzz.py [--cases N] [--seed S] [--only NAME,...] [--show K]

For each decoder, N cases (default 10^5) are drawn from a seeded generator and fed to it; a
*crash* is any exception other than the ones the decoder documents (ProtocolError subclasses for
wire decoders, ConfigError for config and manifests, BadToken for invite tokens, ...). The cases
mix four kinds, so both the outer checks and the deep field checks are reached:

- random bytes or text;
- byte/character mutations of valid encodings (flips, interesting bytes, inserts, deletes,
  duplicated chunks, truncation, splices of two valid encodings);
- structure-aware mutations: a valid encoding is decoded to its msgpack/JSON/TOML tree, one to
  three nodes are replaced by hostile values (huge, negative and boundary ints, NaN, deep
  nesting, ext types, wrong types, long strings), and it is encoded again, with checksums,
  format bytes and signatures trailers kept so the decoder gets past its framing;
- for NIP-44, payloads with a valid MAC over random padding, so the unpadding is reached.

Prints, per decoder, the cases run and the distinct crashes found (goal: 0), each crash with
its exception, where it was raised and a shortened input. Exit status 1 if any crash was found.
CI keeps its own (smaller) Hypothesis budgets in tests/; this is the long run.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import math
import os
import random
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import contextlib

from kai_mesh.config.settings import default_config_text, load_config
from kai_mesh.core.control.frames import (
    FrameDecoder,
    encode_frame,
    parse_request,
    parse_server_message,
)
from kai_mesh.core.errors import ConfigError, ProtocolError
from kai_mesh.core.governance import sync_wire
from kai_mesh.core.governance.invite_token import PREFIX, BadToken, decode_token, encode_token
from kai_mesh.core.governance.wire import (
    InviteSecret,
    Proposal,
    Redemption,
    Vote,
    Withdrawal,
    decode_object,
    encode_proposal,
    encode_redemption,
    encode_vote,
    encode_withdrawal,
)
from kai_mesh.core.liveness.swim_messages import (
    SendAck,
    SendAlive,
    SendIndirectProbe,
    SendNack,
    SendProbe,
    SendSuspect,
)
from kai_mesh.core.mesh.address import AgentAddress, NodeRef, ServiceAddress
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging import frames
from kai_mesh.core.messaging.envelope import (
    EnvelopeDecoder,
    LinkEnds,
    Priority,
    StandardMessage,
    encode,
)
from kai_mesh.core.messaging.name_claims import claim_name, decode_claims, encode_claims
from kai_mesh.core.nostr import nip44
from kai_mesh.core.nostr.event import (
    check_fresh,
    expiration,
    parse_event,
    public_key,
    sign_event,
    verify_event,
)
from kai_mesh.core.orchestration.manifest import manifest_from_table, parse_manifest
from kai_mesh.core.state import wire as state_wire

NOW = 1_760_000_000
MESH = bytes(range(32))
MAX_TTL = 7 * 24 * 3600


def _secrets(seed: int) -> NodeSecrets:
    return NodeSecrets.generate(random.Random(seed).randbytes)


A, B = _secrets(1), _secrets(2)
KEYS = {A.node_id: A.verify_key, B.node_id: B.verify_key}


# Hostile values ---------------------------------------------------------------------------------

_INTS = [0, 1, -1, 2, 7, 16, 255, 256, 2**15, 2**31 - 1, 2**31, 2**32, 2**53, 2**63 - 1]
_INTS += [2**63, 2**64 - 1, -(2**31), -(2**63), NOW, NOW + 10**9, MAX_TTL]


def hostile(rng: random.Random, depth: int = 0) -> Any:
    """One value a hostile peer could put in a msgpack (or JSON-ish) tree."""
    roll = rng.randrange(20)
    if roll < 4:
        return rng.choice(_INTS) + rng.choice([0, 0, 0, 1, -1])
    if roll == 4:
        return rng.choice([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, 0.5])
    if roll == 5:
        return rng.choice([None, True, False])
    if roll == 6:
        return rng.randbytes(rng.choice([0, 1, 8, 15, 16, 17, 31, 32, 33, 64, 65, 300]))
    if roll == 7:
        return rng.choice(["", "a", "..", "../x", "a\x00b", "\ud800", "é" * 40, "x" * 5000])
    if roll == 8:
        return "".join(chr(rng.randrange(0x20, 0x250)) for _ in range(rng.randrange(0, 40)))
    if roll == 9:
        if rng.random() < 0.3:  # type -1, the timestamp ext
            return msgpack.Timestamp(rng.randrange(-(2**33), 2**34), rng.randrange(10**9))
        return msgpack.ExtType(rng.choice([0, 1, 5, 127]), rng.randbytes(rng.randrange(0, 13)))
    if roll == 10:  # deep nesting: recursion limits and decode depth limits
        value: Any = rng.choice([[], {}, 0])
        for _ in range(rng.choice([10, 100, 600, 1200])):
            value = [value] if rng.random() < 0.8 else {"k": value}
        return value
    if roll == 11:  # many small containers: count limits
        return [[] for _ in range(rng.choice([100, 5000, 50000]))]
    if depth > 3:
        return rng.randrange(-5, 5)
    if roll < 15:
        return [hostile(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if roll < 18:
        keys = [hostile(rng, depth + 3) for _ in range(rng.randrange(0, 4))]
        return {k: hostile(rng, depth + 1) for k in keys if _hashable(k)}
    return rng.randrange(-(2**64), 2**64)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _nodes(tree: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to the nodes of a msgpack/JSON tree (lists by index, maps by key), the first 500
    within eight levels."""
    out = [path]
    if len(path) >= 8:
        return out
    if isinstance(tree, list):
        for i, item in enumerate(tree):
            out += _nodes(item, (*path, i))
            if len(out) > 500:
                break
    elif isinstance(tree, dict):
        for key, item in tree.items():
            out += _nodes(item, (*path, ("key", key)))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        tree = tree[step[1]] if isinstance(step, tuple) else tree[step]
    return tree


def mutate_tree(tree: Any, rng: random.Random, value: Callable[[], Any] | None = None) -> Any:
    """Replace, drop or add one to three nodes of `tree` (a fresh copy is returned)."""
    import copy

    make = value or (lambda: hostile(rng))
    tree = copy.deepcopy(tree)
    for _ in range(rng.randrange(1, 4)):
        paths = _nodes(tree)
        path = rng.choice(paths)
        if not path:
            return make() if rng.random() < 0.3 else tree
        parent = _get(tree, path[:-1])
        step = path[-1]
        key = step[1] if isinstance(step, tuple) else step
        action = rng.randrange(10)
        if action < 6:
            parent[key] = make()
        elif action == 6:
            del parent[key]
        elif action == 7 and isinstance(parent, list):
            parent.insert(rng.randrange(len(parent) + 1), make())
        elif action == 7 and isinstance(parent, dict):
            new = make()
            if _hashable(new):
                parent[new] = make()
        elif action == 8 and isinstance(parent, dict):  # a key of the wrong type or value
            new = make()
            if _hashable(new):
                parent[new] = parent.pop(key)
        else:
            parent[key] = [parent[key]] if rng.random() < 0.5 else {"x": parent[key]}
    return tree


_INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xC0, 0xC1, 0xC4, 0xC7, 0xCF, 0xD3, 0xD4, 0xDC, 0xDD, 0xFF]
_INTERESTING += [0xDE, 0xDF, 0x90, 0x9F, 0x80, 0x8F, 0xA0, 0xBF, 0xCB, 0xCA]


def mutate_bytes(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """Classic byte-level mutations of a valid encoding."""
    buf = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        op = rng.randrange(8)
        i = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[i % len(buf)] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[i % len(buf)] = rng.choice(_INTERESTING)
        elif op == 2:
            buf[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 3 and buf:
            del buf[i : i + rng.randrange(1, 9)]
        elif op == 4:
            j = rng.randrange(len(buf) + 1)
            buf[i:i] = buf[min(i, j) : max(i, j)][:4096]
        elif op == 5:
            del buf[i:]
        elif op == 6 and others:
            other = rng.choice(others)
            buf = buf[:i] + other[rng.randrange(len(other) + 1) :]
        elif buf:
            buf[i % len(buf)] = rng.randrange(256)
    return bytes(buf)


def mutate_text(text: str, rng: random.Random, others: list[str]) -> str:
    raw = mutate_bytes(text.encode(), rng, [o.encode() for o in others])
    return raw.decode("utf-8", errors=rng.choice(["ignore", "replace", "surrogateescape"]))


def repack(tree: Any) -> bytes | None:
    """msgpack bytes of a mutated tree, or None if msgpack itself cannot carry it."""
    try:
        return msgpack.packb(tree, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None


def unpack_loose(data: bytes) -> tuple[Any, int] | None:
    """The first msgpack value of `data` and its length, with nothing refused."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    try:
        value = unpacker.unpack()
    except Exception:
        return None
    return value, unpacker.tell()


def structured(data: bytes, rng: random.Random, prefix: int = 1) -> bytes | None:
    """Keep the `prefix` format bytes and whatever follows the msgpack body (a signature);
    mutate the body's tree."""
    got = unpack_loose(data[prefix:])
    if got is None:
        return None
    tree, used = got
    body = repack(mutate_tree(tree, rng))
    if body is None:
        return None
    return data[:prefix] + body + data[prefix + used :]


# Targets ----------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    decode: Callable[[Any], object]
    allowed: tuple[type[BaseException], ...]
    seeds: list[Any]
    text: bool = False
    structure: Callable[[Any, random.Random], Any] | None = None
    extra: Callable[[random.Random], Any] | None = None
    cases: int = 0
    crashes: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)

    def generate(self, rng: random.Random) -> Any:
        roll = rng.random()
        if self.extra is not None and roll < 0.15:
            return self.extra(rng)
        if roll < 0.2:  # random
            if self.text:
                n = rng.choice([0, 1, 10, 100, 1000])
                return "".join(chr(rng.randrange(0x09, 0x7F)) for _ in range(n))
            return rng.randbytes(rng.choice([0, 1, 2, 5, 30, 100, 600]))
        seed = rng.choice(self.seeds)
        if self.structure is not None and roll < 0.65:
            got = self.structure(seed, rng)
            if got is not None:
                return got
        if self.text:
            return mutate_text(seed, rng, self.seeds)
        return mutate_bytes(seed, rng, self.seeds)


def _where(exc: BaseException) -> str:
    frames_ = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames_ if "kai_mesh" in f.filename] or frames_
    last = ours[-1]
    return f"{Path(last.filename).name}:{last.lineno} {last.name}"


def _safe_repr(data: Any) -> str:
    try:
        return repr(data)[:300]
    except RecursionError:
        return f"<{type(data).__name__} nested too deep to show>"


def run(target: Target, cases: int, rng: random.Random) -> None:
    for _ in range(cases):
        data = target.generate(rng)
        target.cases += 1
        try:
            target.decode(data)
        except target.allowed:
            pass
        except Exception as exc:
            key = (type(exc).__name__, _where(exc))
            count, example = target.crashes.get(key, (0, _safe_repr(data)))
            target.crashes[key] = (count + 1, example)


# Envelope ---------------------------------------------------------------------------------------


def _envelopes() -> list[bytes]:
    def msg(**kw: Any) -> StandardMessage:
        base: dict[str, Any] = dict(
            sender=AgentAddress(NodeRef(node_id=A.node_id), "cli"),
            to=AgentAddress(NodeRef(node_id=B.node_id), "echo"),
            intent="echo",
            payload={"text": "hi", "n": [1, 2.5, None, b"x"]},
            context={"trace": "t"},
            priority=Priority.HIGH,
            auth=None,
            timestamp=NOW,
            message_id=bytes(16),
            reply_to=None,
            expires_at=NOW + 3600,
        )
        base.update(kw)
        return StandardMessage(**base)

    link = LinkEnds(sender=A.node_id, receiver=B.node_id)
    return [
        encode(msg()),
        encode(msg(), A, MESH),
        encode(msg(reply_to=b"r" * 16, auth={"token": "x"}), link=link),
        encode(msg(to=ServiceAddress("state"), payload=None, context={})),
        encode(msg(sender=AgentAddress(NodeRef(name="alpha"), "a"))),
    ]


def envelope_target() -> Target:
    link = LinkEnds(sender=A.node_id, receiver=B.node_id)
    decoder = EnvelopeDecoder(
        mesh_id=MESH, max_bytes=64 * 1024, max_ttl=MAX_TTL, verify_key_for=KEYS.get
    )

    def decode(data: bytes) -> None:
        decoder.decode(data, NOW, link=link, remember=False)
        decoder.decode(data, NOW, remember=True)

    return Target(
        "envelope", decode, (ProtocolError,), _envelopes(), structure=lambda d, r: structured(d, r)
    )


# Router frames (deliver, acks, swim, heartbeat) -------------------------------------------------


def router_target() -> Target:
    hb = frames.Heartbeat(node_id=A.node_id, counter=7, digests={0: b"abcd", 3: b"\x00" * 32})
    seeds = [
        frames.encode_deliver(_envelopes()[0]),
        frames.encode_acks([bytes(8), b"\x01" * 8]),
        frames.encode_heartbeat(hb, A, MESH),
        frames.encode_swim(SendProbe(to=B.node_id, seq=3, suspect=True)),
        frames.encode_swim(SendAck(to=B.node_id, seq=3)),
        frames.encode_swim(SendIndirectProbe(via=B.node_id, target=A.node_id, seq=9)),
        frames.encode_swim(SendNack(to=B.node_id, target=A.node_id, seq=9)),
        frames.encode_swim(SendAlive(to=B.node_id, node_id=A.node_id, incarnation=4)),
        frames.encode_swim(SendSuspect(to=B.node_id, node_id=A.node_id, incarnation=4)),
        encode_claims([claim_name(A, "gateway-1", MESH), claim_name(B, "b", MESH)]),
        frames.encode_busy(bytes(8)),
    ]

    def decode(data: bytes) -> None:
        # Every decoder, whatever the kind byte: each must refuse what is not its own cleanly.
        frames.frame_kind(data) if data else None
        for fn in (
            frames.decode_deliver,
            frames.decode_acks,
            lambda d: frames.decode_swim(d, B.node_id),
            lambda d: frames.decode_heartbeat(d, MESH, KEYS),
            decode_claims,
            frames.decode_busy,
        ):
            with contextlib.suppress(ProtocolError):
                fn(data)

    return Target(
        "router frames", decode, (ProtocolError,), seeds, structure=lambda d, r: structured(d, r)
    )


# State wire -------------------------------------------------------------------------------------


def state_target() -> Target:
    cid = 3_000_000_000
    header = state_wire.encode_header(state_wire.Header(A.node_id, cid), A, MESH)
    entry = state_wire.encode_entry(
        state_wire.Entry(cid, 1, state_wire.ZERO_HASH, b"\x00\x00"), A, MESH
    )
    seeds = [
        state_wire.encode_sync(state_wire.Buckets({0: b"abcd", 7: b"efgh"})),
        state_wire.encode_sync(
            state_wire.Vectors({cid: 3, cid + 16: 1}, False, 1 << cid % 16, b"abcd")
        ),
        state_wire.encode_sync(
            state_wire.Vectors({cid: 3}, False, 1 << cid % 16, b"abcd", cid - 5, cid + 5)
        ),
        state_wire.encode_sync(state_wire.Vectors({cid: 0, 5: 9}, True)),
        state_wire.encode_sync(state_wire.Entries([header], [entry])),
        header,
        entry,
    ]

    def decode(data: bytes) -> None:
        for fn in (
            state_wire.decode_sync,
            state_wire.parse_entry,
            state_wire.parse_header,
            lambda d: state_wire.decode_header(d, MESH, KEYS.get),
        ):
            with contextlib.suppress(ProtocolError):
                fn(data)
        with contextlib.suppress(ValueError):  # documented: not a Yjs v1 update
            state_wire.foreign_items(data, cid)

    return Target(
        "state wire", decode, (ProtocolError,), seeds, structure=lambda d, r: structured(d, r)
    )


# Governance wire and sync -----------------------------------------------------------------------


def _gov_records() -> list[bytes]:
    invite = InviteSecret(bytes(range(32)))
    exp = NOW + 86400
    p = Proposal(MESH, "policy_update", {"max_clock_skew": 600}, exp, A.verify_key, b"n", NOW)
    p2 = Proposal(
        MESH, "admin_change", {"admins": [A.verify_key, B.verify_key], "threshold": 2}, exp,
        A.verify_key, b"", NOW,
    )  # fmt: skip
    return [
        encode_proposal(p, A, MESH),
        encode_proposal(p2, A, MESH),
        encode_vote(Vote(p.id, B.verify_key, NOW), B, MESH),
        encode_redemption(Redemption(invite.verify_key, B.verify_key, NOW), invite, B, MESH),
        encode_withdrawal(Withdrawal(p.id, A.verify_key, NOW), A, MESH),
    ]


def governance_target() -> Target:
    return Target(
        "governance wire",
        lambda d: decode_object(d, MESH),
        (ProtocolError,),
        _gov_records(),
        structure=lambda d, r: structured(d, r),
    )


def gov_sync_target() -> Target:
    records = _gov_records()
    seeds = [sync_wire.encode_records(records), sync_wire.encode_ask(bytes(32))]

    def decode(data: bytes) -> None:
        message = sync_wire.decode_sync(data)
        if isinstance(message, sync_wire.Records):
            for record in message.records:
                with contextlib.suppress(ProtocolError):
                    decode_object(record, MESH)

    def structure(data: bytes, rng: random.Random) -> bytes | None:
        if rng.random() < 0.5:
            return structured(data, rng)
        # Mutate one record inside a records frame, structure-aware.
        got = unpack_loose(data[1:])
        if got is None or not isinstance(got[0], list) or not isinstance(got[0][1], list):
            return None
        kind, inner = got[0]
        inner = [structured(r, rng) or r if rng.random() < 0.5 else r for r in inner]
        return repack([kind, inner]) and data[:1] + (repack([kind, inner]) or b"")

    return Target("governance sync", decode, (ProtocolError,), seeds, structure=structure)


# Control frames ---------------------------------------------------------------------------------


def control_target() -> Target:
    values: list[Any] = [
        {"id": 1, "method": "state.set", "params": {"path": "shared/x", "value": [1, 2]}},
        {"id": 2, "method": "send", "params": {"to": "kai://a/echo"}, "parts": True},
        {"id": 3, "result": {"ok": True}},
        {"id": 4, "error": {"code": "bad_request", "message": "no"}},
        {"id": 5, "part": b"abc"},
        {"id": 5, "parts_end": {"count": 2, "size": 10}},
        {"event": "peers", "data": [1, 2]},
    ]
    seeds = [encode_frame(v) for v in values]
    seeds.append(b"".join(seeds))

    def decode(data: bytes) -> None:
        decoder = FrameDecoder(max_frame=64 * 1024)
        events = []
        # Fed in arbitrary pieces, as a socket would.
        pos = 0
        rng = random.Random(len(data))
        while pos < len(data):
            step = rng.choice([1, 3, 64, len(data)])
            events += decoder.feed(data[pos : pos + step])
            pos += step
        events += decoder.feed_eof()
        for event in events:
            value = getattr(event, "value", None)
            for fn in (parse_request, parse_server_message):
                with contextlib.suppress(ProtocolError):
                    fn(value)

    def structure(data: bytes, rng: random.Random) -> bytes | None:
        got = unpack_loose(data[4:])
        if got is None:
            return None
        body = repack(mutate_tree(got[0], rng))
        if body is None:
            return None
        length = len(body) if rng.random() < 0.9 else rng.choice([0, len(body) + 1, 2**32 - 1])
        return length.to_bytes(4, "big") + body

    return Target("control frames", decode, (ProtocolError,), seeds, structure=structure)


# Invite token -----------------------------------------------------------------------------------


def token_target() -> Target:
    genesis = Genesis.of_one(A, "team", bytes(16))
    seeds = [
        encode_token(genesis, bytes(range(32)), ["10.0.0.1:4242", "[fd00::1]:4242"]),
        encode_token(genesis, bytes(32), [], ["wss://relay.example"]),
    ]

    def structure(text: str, rng: random.Random) -> str | None:
        body = text[len(PREFIX) :]
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))[:-4]
        tree = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        if rng.random() < 0.5:  # mutate the genesis inside, itself msgpack
            g = unpack_loose(tree[1])
            if g is not None:
                new = repack(mutate_tree(g[0], rng))
                tree[1] = new if new is not None else tree[1]
        else:
            tree = mutate_tree(tree, rng)
        new_raw = repack(tree)
        if new_raw is None:
            return None
        from kai_mesh.core.governance.invite_token import _check  # the checksum, kept valid

        return PREFIX + base64.urlsafe_b64encode(new_raw + _check(new_raw)).rstrip(b"=").decode()

    return Target("invite token", decode_token, (BadToken,), seeds, text=True, structure=structure)


# Config -----------------------------------------------------------------------------------------


def _toml_value(value: Any, rng: random.Random, depth: int = 0) -> str:
    """A TOML literal for `value` (inline forms, nested at most 300 deep), or a raw hostile
    token."""
    if depth > 300:
        return "0"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(
            value, "nan" if value != value else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v, rng, depth + 1) for v in value[:20]) + "]"
    if isinstance(value, dict):
        items = [
            f"{json.dumps(str(k))} = {_toml_value(v, rng, depth + 1)}"
            for k, v in list(value.items())[:8]
        ]
        return "{" + ", ".join(items) + "}"
    return rng.choice(["1979-05-27T07:32:00Z", "07:32:00", "0x_1", "'''", "{", "[[", '"\\u0000"'])


def _toml_hostile(rng: random.Random) -> Any:
    v = hostile(rng)
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, msgpack.ExtType | msgpack.Timestamp) or (isinstance(v, list) and len(v) > 50):
        return None
    return v


def _toml_mutate(text: str, rng: random.Random, sections: list[str]) -> str:
    lines = text.splitlines()
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(lines) + 1)
        roll = rng.randrange(6)
        keyed = [j for j, line in enumerate(lines) if "=" in line and not line.startswith("#")]
        if roll < 3 and keyed:  # a known key, a hostile value
            j = rng.choice(keyed)
            key = lines[j].split("=", 1)[0].strip().lstrip("# ")
            lines[j] = f"{key} = {_toml_value(_toml_hostile(rng), rng)}"
        elif roll == 3:  # a new section, known or not
            name = rng.choice([*sections, "x", "agents.extra", "agents.extra.a", "interfaces"])
            lines.insert(i, f"[{name}]" if rng.random() < 0.8 else f"[[{name}]]")
        elif roll == 4:  # a new key
            key = rng.choice(["x", "name", "type", "target", "port", "listen", "class", "command"])
            lines.insert(i, f"{key} = {_toml_value(_toml_hostile(rng), rng)}")
        elif lines:
            j = rng.randrange(len(lines))
            lines[j] = lines[j].lstrip("# ")  # uncomment an example line
    return "\n".join(lines) + "\n"


def config_target() -> Target:
    workdir = Path(tempfile.mkdtemp(prefix="kai-fuzz-"))
    path = workdir / "config.toml"
    seeds = [default_config_text("alpha"), default_config_text("gw", local_only=True)]
    seeds.append(
        seeds[0]
        + '\n[agents.extra.ocr]\nclass = "pkg.mod:Ocr"\ntimeout = 5\nisolation = "process"\n'
        + '\n[[interfaces]]\ntype = "tcp_server"\nlisten = "0.0.0.0:4242"\n'
    )
    sections = sorted({line[1:-1] for s in seeds for line in s.splitlines() if line[:1] == "["})

    def decode(text: str) -> None:
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        load_config(path)

    return Target(
        "config",
        decode,
        (ConfigError,),
        seeds,
        text=True,
        structure=lambda t, r: _toml_mutate(t, r, sections),
    )


# Manifests --------------------------------------------------------------------------------------

_MANIFESTS = [
    'name = "echo2"\nversion = "1"\nagent = "echo"\nreplicas = { min = 2, max = 4 }\n'
    'strategy = "least_connections"\n',
    'name = "vision"\nversion = "2.1"\ncommand = ["python", "-m", "vision_agent"]\n'
    'intents = ["detect", "ping"]\ncapabilities = ["gpu", "camera"]\n'
    "replicas = { min = 1, max = 3 }\nresources = { cpu = 0.5, memory = 512 }\n"
    'strategy = "weighted"\nhealth = { intent = "ping", interval = "15s" }\n'
    'placement = { roles = ["edge"], nodes = ["cam-1", "cam-2"], spread = false }\n'
    'disconnect = { lost_after = "1h", replace = false, reconcile = "keep_original" }\n',
]


def manifest_target() -> Target:
    tables = [tomllib.loads(m) for m in _MANIFESTS]

    def decode(item: Any) -> None:
        if isinstance(item, tuple):  # a mutated table, as the state layer would hand one over
            manifest_from_table(item[0])
        else:
            parse_manifest(item, "fuzz.toml")

    def structure(text: str, rng: random.Random) -> Any:
        if rng.random() < 0.5:
            return (mutate_tree(rng.choice(tables), rng, lambda: _toml_hostile(rng)),)
        return _toml_mutate(text, rng, ["x"])

    return Target(
        "manifest",
        decode,
        (ConfigError,),
        _MANIFESTS,
        text=True,
        structure=structure,
        extra=lambda rng: rng.randbytes(rng.choice([10, 200])),
    )


# Nostr events and NIP-44 ------------------------------------------------------------------------


def nostr_event_target() -> Target:
    secret = bytes(range(1, 33))
    events = [
        sign_event(
            secret, created_at=NOW, kind=1, tags=[["p", public_key(secret)]], content="hello",
            aux=bytes(32),
        ),
        sign_event(
            secret, created_at=NOW, kind=21059, tags=[["expiration", str(NOW + 60)]],
            content="x" * 200, aux=bytes(32),
        ),
    ]  # fmt: skip
    seeds = [json.dumps(e.to_json()) for e in events]

    def decode(text: str) -> None:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            return  # the JSON parser is not ours; what it accepts is
        event = parse_event(obj, kinds=range(0, 40000))
        verify_event(event) if len(text) % 3 else None
        expiration(event)
        check_fresh(event, NOW)

    def structure(text: str, rng: random.Random) -> str | None:
        tree = mutate_tree(json.loads(text), rng, lambda: _json_hostile(rng))
        try:
            return json.dumps(tree)
        except (TypeError, ValueError, RecursionError):
            return None

    return Target("nostr event", decode, (ProtocolError,), seeds, text=True, structure=structure)


def _json_hostile(rng: random.Random) -> Any:
    v = hostile(rng)
    if isinstance(v, bytes | msgpack.ExtType | msgpack.Timestamp):
        return v.hex() if isinstance(v, bytes) else None
    if isinstance(v, dict):
        return {
            str(k): x
            for k, x in v.items()
            if not isinstance(x, bytes | msgpack.ExtType | msgpack.Timestamp)
        }
    return v


def nip44_target() -> Target:
    conv = nip44.conversation_key(bytes(range(1, 33)), bytes.fromhex(public_key(bytes([7] * 32))))
    seeds = [
        nip44.encrypt(b"hello", conv, bytes(32)),
        nip44.encrypt(b"x" * 1000, conv, bytes([1] * 32)),
    ]

    def valid_mac(rng: random.Random) -> str:
        """A payload whose MAC verifies over random padded plaintext: reaches the unpadding."""
        nonce = rng.randbytes(32)
        chacha_key, chacha_nonce, hmac_key = nip44.message_keys(conv, nonce)
        n = rng.choice([32, 64, 96, 128, 34, 2, 0, 1000])
        plain = rng.randrange(0, 2**16).to_bytes(2, "big") + rng.randbytes(max(n - 2, 0))
        ct = nip44._chacha20(chacha_key, chacha_nonce, plain)
        mac = hmac.digest(hmac_key, nonce + ct, "sha256")
        return base64.b64encode(bytes([2]) + nonce + ct + mac).decode()

    return Target(
        "nip44",
        lambda p: nip44.decrypt(p, conv),
        (ProtocolError,),
        seeds,
        text=True,
        extra=valid_mac,
    )


TARGETS: dict[str, Callable[[], Target]] = {
    "envelope": envelope_target,
    "router": router_target,
    "state": state_target,
    "governance": governance_target,
    "gov-sync": gov_sync_target,
    "control": control_target,
    "token": token_target,
    "config": config_target,
    "manifest": manifest_target,
    "nostr-event": nostr_event_target,
    "nip44": nip44_target,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per decoder")
    parser.add_argument("--seed", type=int, default=15, help="seed of the case generator")
    parser.add_argument("--only", default="", help=f"comma-separated: {','.join(TARGETS)}")
    parser.add_argument("--show", type=int, default=5, help="crashes shown per decoder")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown decoder(s): {', '.join(sorted(unknown))}")
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    os.environ.pop("KAI_MESH_LOG_LEVEL", None)
    print(f"fuzz: {args.cases} cases per decoder, seed {args.seed}")
    print(f"{'decoder':<18}{'cases':>10}{'crashes':>9}{'distinct':>10}{'seconds':>10}")
    total = 0
    for name in names:
        target = TARGETS[name]()
        rng = random.Random(f"{args.seed}/{name}")
        start = time.monotonic()
        run(target, args.cases, rng)
        crashes = sum(c for c, _ in target.crashes.values())
        total += len(target.crashes)
        print(
            f"{target.name:<18}{target.cases:>10}{crashes:>9}{len(target.crashes):>10}"
            f"{time.monotonic() - start:>10.1f}",
            flush=True,
        )
        for (kind, where), (count, example) in list(target.crashes.items())[: args.show]:
            print(f"    {kind} at {where} ({count}x): {example}")
    print(f"distinct crashes: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
