"""The names of members, from their own signed claims (core.messaging.name_claims), kept in the
store so that a must-arrive message can be queued by name for a member this node never heard.

Where claims come from: this node's own (signed at start), and NAME_CLAIMS frames from peers. A
node hands every claim it holds to each peer it hears, once per run, and a claim new to it to
the peers it hears now: so a claim spreads over the mesh hop by hop and each link carries it about
once. Each claim is checked against the governance fold's key for its node id before it is kept;
a claim of a node that is not a member now is neither kept nor resolved.

Why a member cannot forge a name: a claim binds (node id, name) under that node's own Ed25519
key, the one the fold lists; another member can pass it on but not alter it, nor make one for a
node id it does not hold the key of. What it can do is claim someone else's name *for itself*:
then two members claim one name and `lookup` refuses the name as ambiguous (the caller names the
node by id), rather than pick either.

Bounds: `MAX_CLAIMS_KEPT` claims (one per node id; a newer claim of a node replaces its older);
a frame of claims is handled inline (at most 16 signature checks, and only for claims not
already held as they are).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from kai_mesh.core.codec import pack, unpack_exact
from kai_mesh.core.errors import KaiMeshError, ProtocolError
from kai_mesh.core.messaging.name_claims import MAX_CLAIMS, NameClaim, encode_claims
from kai_mesh.runtime.store import Store

CLAIMS_META = "name_claims"  # store meta: msgpack [[node id, name, signature], ...]
MAX_CLAIMS_KEPT = 4096


class NameBook:
    """Members' signed names: `take` what peers send, `lookup` a name, `frames` to send."""

    def __init__(
        self,
        *,
        store: Store,
        mesh_id: bytes,
        members: Mapping[bytes, bytes],
        own: NameClaim | None,
        refuse: Callable[[str], None],
    ) -> None:
        self.store = store
        self.mesh_id = mesh_id
        self.members = members
        self.refuse = refuse
        self.claims: dict[bytes, NameClaim] = {}
        self._load()
        if own is not None and self.claims.get(own.node_id) != own:
            self.claims[own.node_id] = own
            self._save()

    def _load(self) -> None:
        raw = self.store.get_meta(CLAIMS_META)
        try:
            loaded = unpack_exact(raw, 128 * MAX_CLAIMS_KEPT) if raw is not None else []
        except KaiMeshError:
            loaded = []
        for item in loaded[:MAX_CLAIMS_KEPT] if isinstance(loaded, list) else []:
            if isinstance(item, list) and len(item) == 3:
                node_id, name, sig = item
                if isinstance(node_id, bytes) and isinstance(name, str) and isinstance(sig, bytes):
                    self.claims[node_id] = NameClaim(node_id, name, sig)

    def _save(self) -> None:
        rows = [[c.node_id, c.name, c.signature] for c in self.claims.values()]
        self.store.put_meta(CLAIMS_META, pack(rows))  # rare: only when a claim is new

    def take(self, claims: Iterable[NameClaim]) -> list[NameClaim]:
        """Keep the claims that verify under their member's key; the ones new to this node."""
        new = []
        for claim in claims:
            if self.claims.get(claim.node_id) == claim:
                continue
            key = self.members.get(claim.node_id)
            if key is None:
                self.refuse("name_claims.not_member")
                continue
            try:
                claim.check(self.mesh_id, key)
            except ProtocolError:
                self.refuse("name_claims.bad_signature")
                continue
            if claim.node_id not in self.claims and len(self.claims) >= MAX_CLAIMS_KEPT:
                self.refuse("name_claims.full")
                continue
            self.claims[claim.node_id] = claim
            new.append(claim)
        if new:
            self._save()
        return new

    def lookup(self, name: str) -> bytes | None:
        """The one current member that claims `name`; None when none or more than one does."""
        ids = [
            c.node_id for c in self.claims.values() if c.name == name and c.node_id in self.members
        ]
        return ids[0] if len(ids) == 1 else None

    def claimants(self, name: str) -> list[bytes]:
        return [
            c.node_id for c in self.claims.values() if c.name == name and c.node_id in self.members
        ]

    def frames(self, claims: Iterable[NameClaim] | None = None) -> list[bytes]:
        """NAME_CLAIMS frames holding `claims` (default: every current member's)."""
        chosen = [
            c
            for c in (self.claims.values() if claims is None else claims)
            if c.node_id in self.members
        ]
        return [
            encode_claims(chosen[i : i + MAX_CLAIMS]) for i in range(0, len(chosen), MAX_CLAIMS)
        ]
