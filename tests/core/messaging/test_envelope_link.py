"""Envelopes on an authenticated link leave out the node ids the link proves (`LinkEnds`)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import Malformed
from kai_mesh.core.mesh.address import AgentAddress, NodeRef
from kai_mesh.core.messaging.envelope import EnvelopeDecoder, LinkEnds, StandardMessage, encode
from tests.core.strategies import MAX_TTL, messages, node_ids, secrets_from_seed

A, B = b"\xaa" * 16, b"\xbb" * 16
MESH = b"m" * 32


def decoder(keys: dict[bytes, bytes] | None = None) -> EnvelopeDecoder:
    return EnvelopeDecoder(
        mesh_id=MESH, max_bytes=1 << 20, max_ttl=MAX_TTL, verify_key_for=(keys or {}).get
    )


def between_ends(
    message: StandardMessage, sender_agent: str, receiver_agent: str
) -> StandardMessage:
    return dataclasses.replace(
        message,
        sender=AgentAddress(NodeRef(node_id=A), sender_agent),
        to=AgentAddress(NodeRef(node_id=B), receiver_agent),
    )


@given(messages(), st.sampled_from(["cli", "control", "echo"]), st.sampled_from(["echo", "x"]))
def test_round_trip_and_38_bytes_saved(message: StandardMessage, src: str, dst: str) -> None:
    message = between_ends(message, src, dst)
    ends = LinkEnds(sender=A, receiver=B)
    compact = encode(message, link=ends)
    assert len(encode(message)) - len(compact) == 2 * (1 + 2 + 16)  # array, bin header, id
    decoded = decoder().decode(compact, message.timestamp, link=ends)
    assert decoded.message == message and not decoded.signed


@given(messages(), node_ids)
def test_the_link_not_the_bytes_says_who_sent_it(message: StandardMessage, other: bytes) -> None:
    message = between_ends(message, "cli", "echo")
    compact = encode(message, link=LinkEnds(sender=A, receiver=B))
    # Whatever the sender meant, the receiver reads the ids its own link proved.
    decoded = decoder().decode(compact, message.timestamp, link=LinkEnds(sender=other, receiver=B))
    assert decoded.message.sender.node.node_id == other


@given(messages())
def test_addresses_of_other_nodes_are_kept_whole(message: StandardMessage) -> None:
    ends = LinkEnds(sender=b"\x01" * 16, receiver=b"\x02" * 16)
    if any(
        isinstance(a, AgentAddress) and a.node.node_id in (ends.sender, ends.receiver)
        for a in (message.sender, message.to)
    ):
        return
    assert encode(message, link=ends) == encode(message)


def test_bare_names_without_a_link_are_refused() -> None:
    message = between_ends(_one_message(), "cli", "echo")
    compact = encode(message, link=LinkEnds(sender=A, receiver=B))
    with pytest.raises(Malformed, match="authenticated link"):
        decoder().decode(compact, message.timestamp)


def test_signed_envelopes_never_elide() -> None:
    signer = secrets_from_seed(1)
    message = dataclasses.replace(
        between_ends(_one_message(), "cli", "echo"),
        sender=AgentAddress(NodeRef(node_id=signer.node_id), "cli"),
    )
    ends = LinkEnds(sender=signer.node_id, receiver=B)
    signed = encode(message, signer, MESH, link=ends)
    assert signed == encode(message, signer, MESH)
    decoded = decoder({signer.node_id: signer.verify_key}).decode(
        signed, message.timestamp, link=ends
    )
    assert decoded.signed and decoded.message == message


def _one_message() -> StandardMessage:
    return StandardMessage(
        sender=AgentAddress(NodeRef(node_id=A), "cli"),
        to=AgentAddress(NodeRef(name="pi1"), "echo"),
        intent="echo",
        payload=b"x" * 100,
        timestamp=1_700_000_000,
        message_id=b"\x01" * 8,
        expires_at=1_700_000_060,
    )
