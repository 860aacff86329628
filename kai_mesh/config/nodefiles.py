"""The files `kai-mesh init` writes in a node's data directory, and how they are read back.

`node.key` (the secrets), `genesis.kai` and `member.kai` (and, on a node made by `kai-mesh join`,
its invite claim `join.kai`), each written atomically with mode 0600; the secrets go last, so
their presence means "initialised" and a crash part-way leaves a home that `init` may simply
redo. Used by `init`, by the daemon at start, and by the harness, which writes
many homes that share one genesis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from kai_mesh.config.settings import NodePaths
from kai_mesh.core.errors import KaiMeshError, StoreError
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets, node_id_of
from kai_mesh.runtime.governance.members import Members

JOIN_FILE = "join.kai"


def claim_path(paths: NodePaths) -> Path:
    """Where `kai-mesh join` leaves the node's invite claim (see runtime/governance/invites.py)."""
    return paths.data_dir / JOIN_FILE


def write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600: a crash leaves the old file or the new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class NodeFiles:
    """What `init` wrote: the node's secrets, its mesh's genesis and its member record."""

    secrets: NodeSecrets
    genesis: Genesis
    member: MemberRecord

    @classmethod
    def load(cls, paths: NodePaths) -> NodeFiles:
        """Raises `StoreError` naming the file when the node is missing or its files are bad."""
        if not paths.secrets.exists():
            raise StoreError(f"no node at {paths.data_dir}: create one with `kai-mesh init`")
        try:
            secrets = NodeSecrets.from_bytes(paths.secrets.read_bytes())
            genesis = Genesis.from_bytes(paths.genesis.read_bytes())
            genesis.check()
            member = MemberRecord.from_bytes(paths.member.read_bytes())
            member.check(genesis.mesh_id)
        except (OSError, KaiMeshError) as exc:
            raise StoreError(f"{paths.data_dir}: node files unreadable or damaged: {exc}") from None
        if member.verify_key != secrets.verify_key:
            raise StoreError(f"{paths.member}: member record is not this node's")
        return cls(secrets, genesis, member)

    @property
    def trusted_keys(self) -> dict[bytes, bytes]:
        """Node id -> Ed25519 key of every node the genesis trusts (this one included)."""
        return {node_id_of(key): key for key in self.genesis.trusted_nodes}

    @cached_property
    def members(self) -> Members:
        """The live member map, one per loaded node: it starts as `trusted_keys` and the
        governance fold keeps it current (runtime/governance/members.py)."""
        return Members(self.trusted_keys)

    def write(self, paths: NodePaths) -> None:
        """Write the three files (not the config); the secrets last mean "initialised"."""
        paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(paths.genesis, self.genesis.to_bytes())
        write_private(paths.member, self.member.to_bytes())
        write_private(paths.secrets, self.secrets.to_bytes())
