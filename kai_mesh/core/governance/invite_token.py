"""Invite tokens: everything a fresh node needs to join a mesh, as one copy-pastable line.

    kaimesh1:<base64url, no padding, of msgpack [1, genesis, seed, reach] ‖ check>

`genesis` is the mesh's signed genesis (its bytes, as `genesis.kai` holds them), `seed` the 32-byte
private half of the invite (`gov_wire.InviteSecret`), whose public half a certified
`node_authorization` names, and `reach` says where the mesh can be reached:
`{"tcp": ["host:port", ...], "relays": ["wss://...", ["wss://...", "write"], ...]}` (Reticulum
TCP server interfaces; Nostr relays, each a URL or a [URL, NIP-65 marker] pair, so a joiner reads
and writes each relay as the admin does); `check` is the first 4 bytes of the SHA-256 of the
msgpack, so a mistyped seed or address is caught here rather than as a claim no mesh knows. The
token is a secret: whoever holds it can take the invite, once.

`decode_token` accepts only what `encode_token` makes (the canonical msgpack, a genesis whose
signatures verify); anything else is a `BadToken` saying what is wrong. Nothing here reads a clock
or does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import KaiMeshError, Malformed
from kai_mesh.core.governance.wire import InviteSecret
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.nostr.markers import check_marker

PREFIX = "kaimesh1:"
TOKEN_FORMAT = 1
SEED_BYTES = 32
CHECK_BYTES = 4
MAX_TOKEN_BYTES = 16_384  # decoded; a genesis is at most 10,000
MAX_REACH = 16  # addresses of each kind
MAX_ADDRESS = 255  # characters of one address


class BadToken(Malformed):
    """Not an invite token: mistyped, cut short, altered, or not a token at all."""

    reason = "bad_token"


@dataclass(frozen=True)
class InviteToken:
    """A decoded token. `tcp`: "host:port" of Reticulum TCP servers; `relays`: Nostr relays,
    `markers` the NIP-65 marker of those that are only read or only written."""

    genesis: Genesis
    seed: bytes
    tcp: tuple[str, ...] = ()
    relays: tuple[str, ...] = field(default=())
    markers: Mapping[str, str] = field(default_factory=dict)

    @property
    def secret(self) -> InviteSecret:
        return InviteSecret(self.seed)

    @property
    def invite_key(self) -> bytes:
        return self.secret.verify_key


def encode_token(
    genesis: Genesis,
    seed: bytes,
    tcp: Sequence[str] = (),
    relays: Sequence[str] = (),
    markers: Mapping[str, str] | None = None,
) -> str:
    """The token text. Raises `BadToken` for a bad seed or address (what decoding would refuse)."""
    markers = markers or {}
    listed = [[url, markers[url]] if url in markers else url for url in relays]
    reach = {"relays": listed, "tcp": list(tcp)}
    raw = pack([TOKEN_FORMAT, genesis.to_bytes(), seed, reach])
    text = PREFIX + _b64(raw + _check(raw))
    decode_token(text)  # what we hand out must be what we accept
    return text


def decode_token(text: object) -> InviteToken:
    """The token in `text` (surrounding whitespace ignored).

    Raises:
        BadToken: anything but a well-formed token whose genesis verifies.
    """
    if not isinstance(text, str):
        raise BadToken("an invite token is text")
    text = text.strip()
    if not text.startswith(PREFIX):
        raise BadToken(f"an invite token starts with {PREFIX!r} (from `kai-mesh invite`)")
    body = text[len(PREFIX) :]
    if len(body) > MAX_TOKEN_BYTES * 4 // 3 + 4:
        raise BadToken("the token is too long")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("the token is damaged (not base64url): copy it again, whole") from None
    if _b64(raw) != body:
        raise BadToken("the token is damaged (not canonical base64url): copy it again, whole")
    raw, check = raw[:-CHECK_BYTES], raw[-CHECK_BYTES:]
    if len(check) != CHECK_BYTES or _check(raw) != check:
        raise BadToken("the token is damaged or cut short (checksum): copy it again, whole")
    try:
        value = unpack_exact(raw, MAX_TOKEN_BYTES)
    except KaiMeshError as exc:
        raise BadToken(f"the token is damaged or cut short: {exc}") from None
    if not isinstance(value, list) or len(value) != 4:
        raise BadToken("the token is damaged: expected [format, genesis, seed, reach]")
    fmt, genesis_bytes, seed, reach = value
    if fmt != TOKEN_FORMAT or type(fmt) is not int:
        raise BadToken(f"token format {fmt!r} is not known to this kai-mesh (it reads 1)")
    if type(genesis_bytes) is not bytes or type(seed) is not bytes or len(seed) != SEED_BYTES:
        raise BadToken("the token is damaged: bad genesis or seed")
    tcp, relays, markers = _reach(reach)
    try:
        genesis = Genesis.from_bytes(genesis_bytes)
        genesis.check()
    except (KaiMeshError, ValueError, TypeError) as exc:
        raise BadToken(f"the token's genesis does not verify: {exc}") from None
    token = InviteToken(genesis, seed, tcp, relays, markers)
    if pack(value) != raw:
        raise BadToken("the token is damaged (not canonical)")
    return token


def _reach(reach: Any) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
    if not isinstance(reach, Mapping) or set(reach) != {"tcp", "relays"}:
        raise BadToken('the token is damaged: reach is {"tcp": [...], "relays": [...]}')
    out = []
    markers: dict[str, str] = {}
    for kind in ("tcp", "relays"):
        items = reach[kind]
        if not isinstance(items, list) or len(items) > MAX_REACH:
            raise BadToken(f"the token is damaged: {kind} is a list of at most {MAX_REACH}")
        addresses = []
        for item in items:
            if kind == "relays" and isinstance(item, list):
                if len(item) != 2 or type(item[1]) is not str or check_marker(item[1]):
                    raise BadToken("the token is damaged: a relay is URL or [URL, marker]")
                url, marker = item
                if type(url) is str:
                    markers[url] = marker
                item = url  # the URL, checked below as a bare one is
            if type(item) is not str or not 0 < len(item) <= MAX_ADDRESS:
                raise BadToken(f"the token is damaged: a {kind} address is bad")
            if kind == "tcp":
                split_host_port(item, BadToken)
            addresses.append(item)
        out.append(tuple(addresses))
    return out[0], out[1], markers


def split_host_port(text: str, error: type[KaiMeshError] = BadToken) -> tuple[str, int]:
    """("host", port) from "host:port" ("[v6]:port" for IPv6). Raises `error`."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise error(f"{text!r}: expected HOST:PORT")
    if any(c.isspace() for c in host):
        raise error(f"{text!r}: a host has no spaces")
    return host, int(port)


def _check(data: bytes) -> bytes:
    return hashlib.sha256(b"kaimesh-invite" + data).digest()[:CHECK_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
