"""NIP-01 events: ids, signatures, the strict decoder (with Hypothesis fuzz), NIP-40."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import BadSignature, Malformed, ProtocolError, UsageError
from kai_mesh.core.nostr.event import (
    BadEventId,
    Event,
    Expired,
    check_fresh,
    event_id,
    expiration,
    parse_event,
    public_key,
    serialize,
    sign_event,
    verify_event,
)

SECRET = bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000003")
OTHER = bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000004")
AUX = bytes(32)


def signed(content: str = "hello", tags: list[list[str]] | None = None, kind: int = 21000) -> Event:
    return sign_event(
        SECRET, created_at=1_700_000_000, kind=kind, tags=tags or [], content=content, aux=AUX
    )


def wire(event: Event) -> dict[str, Any]:
    """The event through real JSON, as it arrives from a relay."""
    obj: dict[str, Any] = json.loads(json.dumps(event.to_json()))
    return obj


def test_round_trip() -> None:
    event = signed('héllo \n"q" \\ \x01 \u2028 \U0001f600', [["p", "ab" * 32], ["e", "x", "y"]])
    back = parse_event(wire(event))
    assert back == event
    verify_event(back)
    assert event.pubkey == public_key(SECRET)


def test_serialization_escapes_like_json_stringify() -> None:
    raw = serialize("k", 1, 2, [["t", "\t"]], 'a\nb"c\\d\x01\x7f\u2028é')
    assert raw == '[0,"k",1,2,[["t","\\t"]],"a\\nb\\"c\\\\d\\u0001\x7f\u2028é"]'.encode()


def test_lone_surrogate_is_malformed() -> None:
    with pytest.raises(Malformed):
        event_id("k", 1, 2, [], "\ud800")


def test_tampered_fields_are_refused() -> None:
    event = wire(signed())
    for field, value in [
        ("content", "hellp"),
        ("created_at", 1_700_000_001),
        ("kind", 21001),
        ("tags", [["p", "00" * 32]]),
    ]:
        bad = dict(event, **{field: value})
        with pytest.raises(BadEventId):
            verify_event(parse_event(bad))


def test_forged_signature_and_key_are_refused() -> None:
    event = wire(signed())
    # Another key's valid signature over the same id: the id covers the pubkey, so swap the
    # pubkey and recompute the id, keeping the original signature.
    forged = dict(event, pubkey=public_key(OTHER))
    forged["id"] = event_id(forged["pubkey"], 1_700_000_000, 21000, [], "hello")
    with pytest.raises(BadSignature):
        verify_event(parse_event(forged))
    flipped = dict(event, sig=event["sig"][:-1] + ("0" if event["sig"][-1] != "0" else "1"))
    with pytest.raises(BadSignature):
        verify_event(parse_event(flipped))
    off_curve = dict(event, pubkey="ff" * 32)
    off_curve["id"] = event_id("ff" * 32, 1_700_000_000, 21000, [], "hello")
    with pytest.raises(BadSignature):
        verify_event(parse_event(off_curve))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "AB" * 32),
        ("id", "ab" * 31),
        ("pubkey", 5),
        ("sig", "zz" * 64),
        ("created_at", -1),
        ("created_at", True),
        ("created_at", 1.5),
        ("kind", 70000),
        ("tags", [[]]),
        ("tags", [["p", 1]]),
        ("tags", "p"),
        ("tags", [["t"]] * 2001),
        ("content", None),
    ],
)
def test_bad_shapes(field: str, value: Any) -> None:
    with pytest.raises(Malformed):
        parse_event(dict(wire(signed()), **{field: value}))


def test_missing_or_extra_fields() -> None:
    event = wire(signed())
    del event["sig"]
    with pytest.raises(Malformed):
        parse_event(event)
    with pytest.raises(Malformed):
        parse_event(dict(wire(signed()), extra=1))
    with pytest.raises(Malformed):
        parse_event([1, 2])


def test_wrong_kind_is_refused() -> None:
    with pytest.raises(Malformed, match="kind 1 "):
        parse_event(wire(signed(kind=1)), kinds=range(20000, 30000))


def test_bad_sign_arguments() -> None:
    with pytest.raises(UsageError):
        sign_event(SECRET, created_at=1, kind=1, tags=[], content="", aux=b"")
    with pytest.raises(UsageError):
        sign_event(SECRET, created_at=1, kind=65536, tags=[], content="", aux=AUX)
    with pytest.raises(UsageError):
        sign_event(bytes(32), created_at=1, kind=1, tags=[], content="", aux=AUX)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1700000100", 1700000100), ("+5", 0), (" 5", 0), ("1_0", 0), ("", 0), ("١٢", 0)],
)
def test_expiration(value: str, expected: int) -> None:
    assert expiration(signed(tags=[["expiration", value]])) == expected


def test_check_fresh() -> None:
    assert expiration(signed()) is None
    check_fresh(signed(), 2e9)  # no expiration: never expires
    event = signed(tags=[["expiration", "1700000100"]])
    check_fresh(event, 1_700_000_099)
    with pytest.raises(Expired):
        check_fresh(event, 1_700_000_100)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(JSON)
def test_fuzz_any_json_is_refused_cleanly(obj: Any) -> None:
    with pytest.raises(ProtocolError):
        verify_event(parse_event(obj))


@given(st.sampled_from(["id", "pubkey", "created_at", "kind", "tags", "content", "sig"]), JSON)
def test_fuzz_one_field_replaced(field: str, value: Any) -> None:
    event = wire(signed())
    if event[field] == value:
        return
    with pytest.raises(ProtocolError):
        verify_event(parse_event(dict(event, **{field: value})))


@given(st.text(max_size=200), st.lists(st.lists(st.text(max_size=10), min_size=1), max_size=4))
def test_fuzz_signed_events_verify(content: str, tags: list[list[str]]) -> None:
    try:
        event = signed(content, tags)
    except Malformed:  # a lone surrogate: refused at signing too
        return
    verify_event(parse_event(wire(event)))
