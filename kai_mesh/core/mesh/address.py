"""`kai://` addresses.

Two forms: `kai://NODE/AGENT`, where NODE is a node's display name or its id (32 hex digits), and
`kai://svc/SERVICE`, which the bus resolves to some node hosting the service. Names are lower-case
so that one spelling means one node; `svc` is reserved and cannot name a node.

On the wire an address is a short msgpack array (see `to_wire`): `[node_id_bytes, agent]` once the
node is resolved, `[name, agent]` while it is not, `[service]` for a service. Binary ids cost 17
bytes where their hex would cost 34.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kai_mesh.core.errors import AddressError, Malformed

SCHEME = "kai://"
SERVICE_HOST = "svc"
NODE_ID_BYTES = 16

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_HEX_ID_RE = re.compile(r"[0-9a-f]{32}")


def check_name(kind: str, name: str) -> str:
    """Return `name` if it is a valid node, agent or service name; raise `AddressError` if not.

    A name is 1 to 32 characters of `a-z 0-9 _ -`, starting with a letter or digit.
    """
    if not _NAME_RE.fullmatch(name):
        raise AddressError(
            f"invalid {kind} name {name!r}: use 1-32 characters a-z, 0-9, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class NodeRef:
    """A node named by display name (`name`) or by id (`node_id`); exactly one is set."""

    name: str | None = None
    node_id: bytes | None = None

    def __post_init__(self) -> None:
        if (self.name is None) == (self.node_id is None):
            raise AddressError("a node reference has either a name or an id")
        if self.node_id is not None and len(self.node_id) != NODE_ID_BYTES:
            raise AddressError(f"a node id is {NODE_ID_BYTES} bytes, got {len(self.node_id)}")
        if self.name is not None:
            check_name("node", self.name)
            if self.name == SERVICE_HOST:
                raise AddressError(f"{SERVICE_HOST!r} is reserved and cannot name a node")
            if _HEX_ID_RE.fullmatch(self.name):
                # Its text would parse back as a node id: one spelling must mean one node.
                raise AddressError(f"node name {self.name!r} looks like a node id (32 hex digits)")

    def __str__(self) -> str:
        return self.name if self.name is not None else (self.node_id or b"").hex()


@dataclass(frozen=True, slots=True)
class AgentAddress:
    """`kai://NODE/AGENT`."""

    node: NodeRef
    agent: str

    def __post_init__(self) -> None:
        check_name("agent", self.agent)

    def __str__(self) -> str:
        return f"{SCHEME}{self.node}/{self.agent}"


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """`kai://svc/SERVICE`."""

    service: str

    def __post_init__(self) -> None:
        check_name("service", self.service)

    def __str__(self) -> str:
        return f"{SCHEME}{SERVICE_HOST}/{self.service}"


Address = AgentAddress | ServiceAddress


def parse_address(text: str) -> Address:
    """Parse `kai://NODE/AGENT` or `kai://svc/SERVICE`.

    Raises:
        AddressError: with a message that says what is wrong and shows the expected form.
    """
    if not isinstance(text, str):
        raise AddressError(f"an address is a string, got {type(text).__name__}")
    if not text.startswith(SCHEME):
        raise AddressError(
            f"invalid address {text!r}: it must start with {SCHEME!r}, "
            "as in kai://NODE/AGENT or kai://svc/SERVICE"
        )
    rest = text[len(SCHEME) :]
    host, slash, leaf = rest.partition("/")
    if not slash or not host or not leaf or "/" in leaf:
        raise AddressError(
            f"invalid address {text!r}: expected kai://NODE/AGENT or kai://svc/SERVICE"
        )
    if host == SERVICE_HOST:
        return ServiceAddress(leaf)
    return AgentAddress(_parse_node(host), leaf)


def _parse_node(host: str) -> NodeRef:
    if _HEX_ID_RE.fullmatch(host):
        return NodeRef(node_id=bytes.fromhex(host))
    return NodeRef(name=host)


def to_wire(address: Address) -> list[bytes | str]:
    """The compact msgpack form of an address (see the module docstring)."""
    if isinstance(address, ServiceAddress):
        return [address.service]
    node = address.node
    return [node.node_id if node.node_id is not None else str(node.name), address.agent]


def from_wire(value: object) -> Address:
    """Inverse of `to_wire`; raises `Malformed` for anything else."""
    try:
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            return ServiceAddress(value[0])
        if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
            node, agent = value
            if isinstance(node, bytes):
                return AgentAddress(NodeRef(node_id=node), agent)
            if isinstance(node, str):
                return AgentAddress(NodeRef(name=node), agent)
    except AddressError as exc:
        raise Malformed(f"bad address: {exc}") from None
    raise Malformed("bad address: expected [node, agent] or [service]")
