"""`kai://` addresses: parsing, refusals, and the compact wire form."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import AddressError, Malformed
from kai_mesh.core.mesh.address import (
    AgentAddress,
    NodeRef,
    ServiceAddress,
    from_wire,
    parse_address,
    to_wire,
)
from tests.core.strategies import addresses

HEX_ID = "0123456789abcdef0123456789abcdef"


def test_parse_agent_by_name() -> None:
    assert parse_address("kai://pi1/echo") == AgentAddress(NodeRef(name="pi1"), "echo")


def test_parse_agent_by_id() -> None:
    address = parse_address(f"kai://{HEX_ID}/cli")
    assert address == AgentAddress(NodeRef(node_id=bytes.fromhex(HEX_ID)), "cli")


def test_parse_service() -> None:
    assert parse_address("kai://svc/sysinfo") == ServiceAddress("sysinfo")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pi1/echo",
        "http://pi1/echo",
        "kai:/pi1/echo",
        "kai://",
        "kai://pi1",
        "kai://pi1/",
        "kai:///echo",
        "kai://pi1/echo/extra",
        "kai://pi1//echo",
        "kai://Pi1/echo",
        "kai://pi1/Echo",
        "kai://svc/Echo",
        "KAI://pi1/echo",
        "kai://" + "a" * 33 + "/echo",
        "kai://pi1/" + "a" * 33,
        "kai://-pi/echo",
        "kai://pi 1/echo",
        "kai://pi1/echo\n",
        "kai://svc/",
        "kai://" + HEX_ID.upper() + "/echo",
    ],
)
def test_malformed_addresses_are_refused_with_a_message(text: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    assert str(info.value)


def test_non_string_is_refused() -> None:
    with pytest.raises(AddressError, match="string"):
        parse_address(b"kai://pi1/echo")  # type: ignore[arg-type]


def test_svc_cannot_name_a_node() -> None:
    with pytest.raises(AddressError, match="reserved"):
        NodeRef(name="svc")


def test_a_name_cannot_look_like_a_node_id() -> None:
    # Otherwise str() of the name would parse back as an id: two spellings, two nodes.
    with pytest.raises(AddressError, match="id"):
        NodeRef(name=HEX_ID)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"name": "pi1", "node_id": bytes(16)}, {"node_id": bytes(15)}, {"node_id": bytes(17)}],
)
def test_node_ref_needs_exactly_one_valid_form(kwargs: dict[str, object]) -> None:
    with pytest.raises(AddressError):
        NodeRef(**kwargs)  # type: ignore[arg-type]


@given(addresses)
def test_text_round_trip(address: AgentAddress | ServiceAddress) -> None:
    text = str(address)
    assert parse_address(text) == address
    assert str(parse_address(text)) == text


@given(addresses)
def test_wire_round_trip(address: AgentAddress | ServiceAddress) -> None:
    assert from_wire(unpack_exact(pack(to_wire(address)), 100)) == address


def test_wire_form_uses_binary_ids() -> None:
    address = parse_address(f"kai://{HEX_ID}/cli")
    assert to_wire(address) == [bytes.fromhex(HEX_ID), "cli"]
    assert len(pack(to_wire(address))) == 1 + 18 + 4


@pytest.mark.parametrize(
    "value",
    [
        None,
        "kai://pi1/echo",
        [],
        ["svc", "echo", "x"],
        [b"short", "echo"],
        ["svc", "echo"],
        ["pi1", "Echo"],
        ["Bad"],
        [1, "echo"],
        ["pi1", 2],
        [b"\x00" * 16, b"echo"],
        (b"\x00" * 16, "echo"),
        {"node": "pi1"},
    ],
)
def test_from_wire_refuses_garbage(value: object) -> None:
    with pytest.raises(Malformed):
        from_wire(value)


@given(st.recursive(st.none() | st.binary() | st.text() | st.integers(), st.lists))
def test_from_wire_raises_only_malformed(value: object) -> None:
    with contextlib.suppress(Malformed):
        from_wire(value)
