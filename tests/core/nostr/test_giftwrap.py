"""NIP-59 gift wrap: the round trip hides the sender behind a one-time key and brings it back;
a seal or rumor that does not check out is refused with a reason, never accepted."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import ProtocolError
from kai_mesh.core.nostr import nip44
from kai_mesh.core.nostr.event import public_key, sign_event, verify_event
from kai_mesh.core.nostr.giftwrap import (
    KIND_EPHEMERAL_WRAP,
    KIND_SEAL,
    TWO_DAYS,
    unwrap,
    wrap,
)

ALICE, BOB, EVE = bytes([7]) * 32, bytes([9]) * 32, bytes([11]) * 32
NOW = 1_800_000_000


def test_round_trip_hides_the_sender_and_blurs_the_time() -> None:
    w = wrap(
        sender_secret=ALICE,
        recipient=public_key(BOB),
        kind=28931,
        tags=[["m", "tag"], ["expiration", str(NOW + 60)]],
        content="secret",
        now=NOW,
        randbytes=os.urandom,
        wrap_kind=KIND_EPHEMERAL_WRAP,
        backdate=5,
        public_tags=[["expiration", str(NOW + 60)]],
    )
    verify_event(w)
    assert w.pubkey != public_key(ALICE) and "secret" not in w.content
    assert w.tags == (("p", public_key(BOB)), ("expiration", str(NOW + 60)))
    assert NOW - 5 <= w.created_at <= NOW
    sender, rumor = unwrap(w, BOB)
    assert sender == public_key(ALICE)
    assert (rumor.kind, rumor.content, rumor.created_at) == (28931, "secret", NOW)
    assert rumor.tags == (("m", "tag"), ("expiration", str(NOW + 60)))
    with pytest.raises(ProtocolError) as caught:
        unwrap(w, EVE)  # not for Eve: the layer does not decrypt
    assert caught.value.reason == "undecryptable"


def _wrap_seal(seal_json: dict[str, object], to: bytes = BOB) -> object:
    one_time = os.urandom(32)
    content = nip44.encrypt(
        json.dumps(seal_json).encode(),
        nip44.conversation_key(one_time, bytes.fromhex(public_key(to))),
        os.urandom(32),
    )
    return sign_event(
        one_time, created_at=NOW, kind=1059, tags=[["p", public_key(to)]], content=content,
        aux=bytes(32),
    )  # fmt: skip


def _seal(signer: bytes, rumor: dict[str, object], kind: int = KIND_SEAL) -> dict[str, object]:
    content = nip44.encrypt(
        json.dumps(rumor).encode(),
        nip44.conversation_key(signer, bytes.fromhex(public_key(BOB))),
        os.urandom(32),
    )
    return sign_event(
        signer, created_at=NOW - TWO_DAYS, kind=kind, tags=[], content=content, aux=bytes(32)
    ).to_json()


def _rumor(author: bytes, **over: object) -> dict[str, object]:
    from kai_mesh.core.nostr.event import event_id

    pub = public_key(author)
    rumor: dict[str, object] = {
        "pubkey": pub, "created_at": NOW, "kind": 14, "tags": [], "content": "hi",
    }  # fmt: skip
    rumor["id"] = event_id(pub, NOW, 14, [], "hi")
    rumor.update(over)
    return rumor


@pytest.mark.parametrize(
    ("seal", "reason"),
    [
        (lambda: _seal(EVE, _rumor(ALICE)), "bad_seal"),  # Eve seals a rumor "by" Alice
        (lambda: _seal(ALICE, _rumor(ALICE, content="changed")), "bad_seal"),  # id not its hash
        (lambda: _seal(ALICE, _rumor(ALICE, sig="0" * 128)), "bad_seal"),  # a signed "rumor"
        (lambda: _seal(ALICE, _rumor(ALICE), kind=1), "bad_seal"),  # not a seal
        (lambda: {**_seal(ALICE, _rumor(ALICE)), "content": "x" * 200}, "bad_id"),
        (lambda: {"kind": 13}, "malformed"),
    ],
)
def test_bad_seals_and_rumors_are_refused(seal: object, reason: str) -> None:
    w = _wrap_seal(seal())  # type: ignore[operator]
    with pytest.raises(ProtocolError) as caught:
        unwrap(w, BOB)  # type: ignore[arg-type]
    assert caught.value.reason == reason
    # And a good one passes, so the refusals above are about what was changed.
    assert unwrap(_wrap_seal(_seal(ALICE, _rumor(ALICE))), BOB)[0] == public_key(ALICE)  # type: ignore[arg-type]


@given(st.binary(min_size=1, max_size=300))
def test_any_decrypted_layer_is_refused_or_a_rumor(raw: bytes) -> None:
    one_time = bytes([3]) * 32
    content = nip44.encrypt(
        raw, nip44.conversation_key(one_time, bytes.fromhex(public_key(BOB))), bytes(32)
    )
    w = sign_event(one_time, created_at=NOW, kind=1059, tags=[], content=content, aux=bytes(32))
    with pytest.raises(ProtocolError):
        unwrap(w, BOB)
