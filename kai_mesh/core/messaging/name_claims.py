"""Name claims: a node's own signature binding its name to its id, so that members who never
heard it can still send to it by name.

A member record (`core.mesh.identity.MemberRecord`) binds a name to a node's keys, but it
travels only in a transport's handshake: a node that never heard a member (it joined, or
restarted, while that member was away) has no record of it, and the governance fold lists
members by key alone. A claim is the smallest signed fact that closes the gap::

    claim   msgpack [node_id (16 bytes), name, Ed25519 signature (64 bytes)]
            signed by the node's own key:
            NodeSecrets.sign("node-name", mesh_id, pack([node_id, name]))
    frame   0x18 ‖ msgpack [claim, ...]   1 to MAX_CLAIMS claims

A node signs its own claim and hands the claims it holds to each peer once per run; any member may
pass on another's claim, since nobody can alter one: it verifies only under the key the
governance fold lists for that node id (`check`). A member can claim any name *for itself*,
including one another member uses; the resolver then refuses the name as ambiguous rather than
pick one (runtime/messaging/names.py).

Bytes: a claim is 86 + len(name) bytes (an 8-character name: 94), so a peer hears a 10-member
roster in about 1 KB once per run, beside state sync's much larger rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kai_mesh.core.codec import pack, split_format, unpack_exact
from kai_mesh.core.errors import AddressError, BadSignature, Malformed, Oversize, Truncated
from kai_mesh.core.mesh.address import NODE_ID_BYTES, check_name
from kai_mesh.core.mesh.identity import SIGNATURE_BYTES, NodeSecrets, node_id_of, verify
from kai_mesh.core.messaging.frames import FRAME_NAME_CLAIMS

CLAIM_KIND = "node-name"
MAX_CLAIMS = 16  # per frame: at most ~2 KB with 32-character names
MAX_NAME_CHARS = 32  # check_name's bound, repeated for the size bound below
MAX_CLAIMS_FRAME = 1 + MAX_CLAIMS * (MAX_NAME_CHARS + NODE_ID_BYTES + SIGNATURE_BYTES + 8) + 8


@dataclass(frozen=True, slots=True)
class NameClaim:
    node_id: bytes
    name: str
    signature: bytes

    def body(self) -> bytes:
        return pack([self.node_id, self.name])

    def check(self, mesh_id: bytes, verify_key: bytes) -> None:
        """Raise `BadSignature` unless `verify_key` is this node id's key and signed the claim."""
        if node_id_of(verify_key) != self.node_id:
            raise BadSignature("name claim: the key is not this node id's")
        verify(verify_key, CLAIM_KIND, mesh_id, self.body(), self.signature)


def claim_name(secrets: NodeSecrets, name: str, mesh_id: bytes) -> NameClaim:
    """This node's own claim to `name` (raises `AddressError` for a name no address can hold)."""
    check_name("node", name)
    unsigned = NameClaim(secrets.node_id, name, b"")
    return NameClaim(secrets.node_id, name, secrets.sign(CLAIM_KIND, mesh_id, unsigned.body()))


def encode_claims(claims: Sequence[NameClaim]) -> bytes:
    if not 1 <= len(claims) <= MAX_CLAIMS:
        raise ValueError(f"name claims: 1 to {MAX_CLAIMS} per frame, got {len(claims)}")
    return bytes([FRAME_NAME_CLAIMS]) + pack([[c.node_id, c.name, c.signature] for c in claims])


def decode_claims(data: bytes) -> list[NameClaim]:
    """The claims in a frame, by shape only: the caller checks each signature (`check`).
    Raises a `ProtocolError` subclass for anything else."""
    if len(data) > MAX_CLAIMS_FRAME:
        raise Oversize(f"name claims: {len(data)} bytes, at most {MAX_CLAIMS_FRAME}")
    rest = split_format(data, FRAME_NAME_CLAIMS, "name claims")
    if not rest:
        raise Truncated("name claims: nothing follows")
    value = unpack_exact(rest, MAX_CLAIMS_FRAME)
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CLAIMS:
        raise Malformed(f"name claims: expected a list of 1 to {MAX_CLAIMS} claims")
    out = []
    for item in value:
        if not (
            isinstance(item, list)
            and len(item) == 3
            and type(item[0]) is bytes
            and len(item[0]) == NODE_ID_BYTES
            and type(item[1]) is str
            and type(item[2]) is bytes
            and len(item[2]) == SIGNATURE_BYTES
        ):
            raise Malformed("name claims: a claim is [node id, name, signature]")
        try:
            check_name("node", item[1])
        except AddressError as exc:
            raise Malformed(f"name claims: {exc}") from None
        out.append(NameClaim(item[0], item[1], item[2]))
    return out
