"""Hypothesis strategies for the core's value types.

Everything generated here is valid by construction, so a property test can assert exact round
trips: payload values are limited to what msgpack gives back unchanged (lists, not tuples; floats
without NaN, since NaN != NaN; integers in the signed 64-bit range).
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from kai_mesh.core.mesh.address import (
    NODE_ID_BYTES,
    SERVICE_HOST,
    AgentAddress,
    NodeRef,
    ServiceAddress,
)
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.core.messaging.envelope import MAX_TIMESTAMP, Priority, StandardMessage

_HEX = "0123456789abcdef"


def _not_hex_id(name: str) -> bool:
    return not (len(name) == 32 and all(c in _HEX for c in name))


names = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True)
node_names = names.filter(lambda n: n != SERVICE_HOST and _not_hex_id(n))
node_ids = st.binary(min_size=NODE_ID_BYTES, max_size=NODE_ID_BYTES)
node_refs = st.one_of(
    st.builds(NodeRef, name=node_names),
    st.builds(NodeRef, node_id=node_ids),
)
agent_addresses = st.builds(AgentAddress, node=node_refs, agent=names)
service_addresses = st.builds(ServiceAddress, service=names)
addresses = st.one_of(agent_addresses, service_addresses)

intents = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
ids = st.binary(min_size=8, max_size=16)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=12,
)
str_maps = st.dictionaries(st.text(max_size=8), values, max_size=4)

MAX_TTL = 7 * 24 * 3600


@st.composite
def messages(draw: st.DrawFn, *, max_ttl: int = MAX_TTL) -> StandardMessage:
    """Any valid `StandardMessage` whose ttl is within `max_ttl`."""
    timestamp = draw(st.integers(min_value=0, max_value=MAX_TIMESTAMP - max_ttl - 1))
    ttl = draw(st.integers(min_value=1, max_value=max_ttl))
    return StandardMessage(
        sender=draw(agent_addresses),
        to=draw(addresses),
        intent=draw(intents),
        payload=draw(values),
        context=draw(str_maps),
        priority=draw(st.sampled_from(Priority)),
        auth=draw(st.none() | str_maps),
        timestamp=timestamp,
        message_id=draw(ids),
        reply_to=draw(st.none() | ids),
        expires_at=timestamp + ttl,
    )


def secrets_from_seed(seed: int) -> NodeSecrets:
    """Deterministic keys, as `NodeSecrets.generate(os.urandom)` would make with a seeded source."""
    return NodeSecrets.generate(random.Random(seed).randbytes)
