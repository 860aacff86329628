"""Node facts: the compact codec (round trip, size, any bytes give a clear error) and the
architecture names manifests use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.orchestration.facts import NodeFacts, arch_capability, decode_facts
from kai_mesh.core.orchestration.placement import NodeInfo

PI = NodeFacts(arch="arm64", cpus=4, memory_mb=8000, capabilities=frozenset({"lora", "camera"}))


def test_round_trip_and_size() -> None:
    data = PI.encode()
    assert decode_facts(data) == PI
    assert len(data) == 24  # the figure the module docstring gives


def test_draining_round_trips_and_marks_the_node() -> None:
    import dataclasses

    draining = dataclasses.replace(PI, draining=True)
    assert decode_facts(draining.encode()) == draining
    base = NodeInfo(node_id=bytes(16), name="pi")
    assert draining.node_info(base).draining and not PI.node_info(base).draining


def test_node_info_takes_capabilities_arch_and_capacity() -> None:
    base = NodeInfo(node_id=bytes(16), name="pi", role="edge", capabilities=frozenset({"x"}))
    info = PI.node_info(base)
    assert info.capabilities == {"x", "lora", "camera", "arm64"}
    assert (info.cpu, info.memory_mb, info.role, info.name) == (4.0, 8000, "edge", "pi")


@pytest.mark.parametrize(
    ("machine", "name"),
    [("aarch64", "arm64"), ("x86_64", "amd64"), ("armv7l", "armv7"), ("", "unknown")],
)
def test_arch_names(machine: str, name: str) -> None:
    assert arch_capability(machine) == name


def test_bad_facts_are_refused() -> None:
    with pytest.raises(UsageError):
        NodeFacts(arch="x", cpus=0, memory_mb=1)
    with pytest.raises(UsageError):
        NodeFacts(arch="", cpus=1, memory_mb=1)


@given(st.binary(max_size=80))
def test_any_bytes_decode_or_give_a_clear_error(data: bytes) -> None:
    try:
        facts = decode_facts(data)
    except KaiMeshError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert decode_facts(facts.encode()) == facts


@given(st.binary(max_size=40))
def test_truncations_of_valid_facts_never_crash(tail: bytes) -> None:
    data = PI.encode()
    for cut in range(len(data)):
        with pytest.raises(KaiMeshError):
            decode_facts(data[:cut])
    try:
        decode_facts(data + tail)
    except KaiMeshError:
        assert tail
