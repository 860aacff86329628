"""What the envelope decoder says when it refuses: each refusal names the field and what is wrong
with it, since the text is what an operator reads in the log of a node that dropped a message.
`test_envelope.py` checks the classes; these pin the words (docs/mutation.md)."""

from __future__ import annotations

from typing import Any

import pytest

from kai_mesh.core.codec import unpack_exact
from kai_mesh.core.errors import (
    BadSignature,
    Expired,
    Malformed,
    Oversize,
    ProtocolError,
    Replay,
    UnknownVersion,
    UsageError,
)
from kai_mesh.core.mesh.address import parse_address, to_wire
from kai_mesh.core.messaging.envelope import (
    ENVELOPE_KIND,
    K_AUTH,
    K_CONTEXT,
    K_FROM,
    K_INTENT,
    K_MESSAGE_ID,
    K_PRIORITY,
    K_REPLY_TO,
    K_TIMESTAMP,
    K_TO,
    K_TTL,
    LinkEnds,
    ReplayGuard,
    encode,
    parse_fields,
)
from tests.core.messaging.test_envelope import MESH, NOW, SIGNER, _decoder, _message, _raw

FIELDS: dict[int, Any] = unpack_exact(encode(_message())[1:], 10_000)


def _refusal(fields: object, link: LinkEnds | None = None) -> str:
    with pytest.raises(Malformed) as caught:
        parse_fields(fields, 3600, link)
    return str(caught.value)


def test_a_valid_map_parses() -> None:
    assert parse_fields(dict(FIELDS), 3600) == _message()


@pytest.mark.parametrize(
    ("key", "name"),
    [
        (K_FROM, "from"),
        (K_TO, "to"),
        (K_INTENT, "intent"),
        (K_TIMESTAMP, "timestamp"),
        (K_MESSAGE_ID, "message_id"),
        (K_TTL, "ttl"),
    ],
)
def test_a_missing_field_is_named(key: int, name: str) -> None:
    fields = {k: v for k, v in FIELDS.items() if k != key}
    assert _refusal(fields) == f"missing field {name}"


@pytest.mark.parametrize(
    ("key", "name", "value", "kind"),
    [
        (K_FROM, "from", 5, "int"),
        (K_TO, "to", 5, "int"),
        (K_INTENT, "intent", 5, "int"),
        (K_TIMESTAMP, "timestamp", "now", "str"),
        (K_TIMESTAMP, "timestamp", True, "bool"),
        (K_MESSAGE_ID, "message_id", "id", "str"),
        (K_TTL, "ttl", 1.5, "float"),
        (K_CONTEXT, "context", [1], "list"),
        (K_PRIORITY, "priority", "high", "str"),
        (K_AUTH, "auth", b"x", "bytes"),
        (K_REPLY_TO, "reply_to", 7, "int"),
    ],
)
def test_a_field_of_the_wrong_type_is_named_with_the_type(
    key: int, name: str, value: object, kind: str
) -> None:
    assert _refusal({**FIELDS, key: value}) == f"field {name} has the wrong type ({kind})"


def test_the_shape_and_value_refusals() -> None:
    assert _refusal([1, 2]) == "an envelope is a map"
    assert _refusal({**FIELDS, K_TTL: 0}) == "ttl: must be positive"
    assert _refusal({**FIELDS, K_PRIORITY: 9}) == "priority 9 is not 0..3"
    assert _refusal({**FIELDS, K_FROM: "cli"}) == (
        "from: a bare agent name is only valid on an authenticated link"
    )
    assert _refusal({**FIELDS, K_TO: "echo"}) == (
        "to: a bare agent name is only valid on an authenticated link"
    )
    service = {**FIELDS, K_FROM: to_wire(parse_address("kai://svc/weather"))}
    assert _refusal(service) == "from: must be an agent address, not a service"
    link = LinkEnds(sender=SIGNER.node_id, receiver=bytes(16))
    assert _refusal({**FIELDS, K_FROM: "Bad Name!"}, link).startswith("from: ")
    assert _refusal({**FIELDS, K_TO: "Bad Name!"}, link).startswith("to: ")


def test_a_replay_names_the_message_and_its_sender() -> None:
    guard = ReplayGuard()
    message = _message()
    guard.admit(message, NOW)
    with pytest.raises(Replay) as caught:
        guard.admit(message, NOW)
    assert str(caught.value) == f"message {'01' * 8} from {message.sender} seen before"


def test_a_signed_envelope_from_an_unknown_or_nameless_sender_says_so() -> None:
    stranger = _message(sender=f"kai://{bytes(16).hex()}/cli")
    data = encode(stranger, SIGNER, b"M" * 32)
    with pytest.raises(BadSignature) as caught:
        _decoder().decode(data, NOW)
    assert str(caught.value) == f"signer {bytes(16).hex()} is not a known node of this mesh"


def test_only_protocol_errors_for_a_map_that_is_not_one() -> None:
    with pytest.raises(ProtocolError):
        _decoder().decode(_raw({"a": 1}), NOW)


def test_the_decoders_own_refusals_say_what_and_how_much() -> None:
    data = encode(_message())
    with pytest.raises(Oversize) as oversize:
        _decoder(max_bytes=10).decode(data, NOW)
    assert str(oversize.value) == f"envelope of {len(data)} bytes exceeds the limit of 10"
    with pytest.raises(UnknownVersion) as version:
        _decoder().decode(b"\x09" + data[1:], NOW)
    assert str(version.value) == "envelope: format 9 is not known (this node speaks 1)"
    with pytest.raises(BadSignature) as unsigned:
        _decoder(require_signature=True).decode(data, NOW)
    assert str(unsigned.value) == "this envelope must be signed and is not"
    with pytest.raises(Expired) as expired:
        _decoder().decode(data, NOW + 70)
    assert str(expired.value) == f"message {'01' * 8} expired 10s ago"


def test_a_signed_envelope_never_takes_names_from_the_link() -> None:
    # Signed envelopes never elide, so a bare name in one is refused even on a link that could
    # resolve it: a third party carrying it onward could not.
    body = _raw({**FIELDS, K_FROM: "cli"})
    data = body + SIGNER.sign(ENVELOPE_KIND, MESH, body)
    link = LinkEnds(sender=SIGNER.node_id, receiver=bytes(16))
    with pytest.raises(Malformed) as caught:
        _decoder().decode(data, NOW, link=link)
    assert "bare agent name" in str(caught.value)


def test_a_signature_made_without_a_mesh_id_verifies_under_the_empty_one() -> None:
    data = encode(_message(), SIGNER)
    assert _decoder(mesh_id=b"").decode(data, NOW).signed


def test_message_construction_and_encoding_refusals() -> None:
    with pytest.raises(Malformed) as sender:
        _message(sender="kai://svc/weather")
    assert str(sender.value) == "from: must be an agent address kai://NODE/AGENT"
    with pytest.raises(Malformed) as short:
        _message(message_id=b"1234567")
    assert str(short.value) == "message_id: must be 8 to 16 bytes"
    with pytest.raises(UsageError) as unencodable:
        encode(_message(payload={"x": object()}))
    assert str(unencodable.value).startswith("message cannot be encoded: ")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"intent": "Echo"}, "intent 'Echo': 1-64 characters a-z 0-9 . _ -, starting alphanumeric"),
        ({"context": {1: "x"}}, "context: must be a map with string keys"),
        ({"auth": {1: "x"}}, "auth: must be a map with string keys"),
        ({"priority": 2}, "priority: must be a Priority"),
        ({"reply_to": b"short"}, "reply_to: must be 8 to 16 bytes"),
        ({"timestamp": -1, "expires_at": 5}, "timestamp: must be whole seconds since the epoch"),
        ({"expires_at": 2**40}, "expires_at: must be whole seconds since the epoch"),
        ({"expires_at": NOW}, "expires_at: must be later than timestamp"),
    ],
)
def test_each_message_field_refusal_is_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(Malformed) as caught:
        _message(**change)
    assert str(caught.value) == message
