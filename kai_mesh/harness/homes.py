"""Node homes for the harness: N nodes that share one genesis.

`kai-mesh init` makes a mesh of one. The harness instead makes one mesh of N: node1 is the only
admin (threshold 1) and the genesis trusts every node's key from the start, so the nodes are
members of the same mesh without any governance round. Each home gets the files `init` writes
(written the same way: atomic, mode 0600, the secrets last) and a config with the `[reticulum]`
section and one UDP broadcast interface on the node's veth.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from kai_mesh.config import NodePaths, load_config
from kai_mesh.core.genesis import DEFAULT_POLICY, NONCE_BYTES, Genesis
from kai_mesh.core.identity import MemberRecord, NodeSecrets
from kai_mesh.nodefiles import NodeFiles, write_private

UDP_PORT = 4242
#: RNS binds its UDP interface to the subnet's broadcast address when given a device (see
#: `UDPInterface.__init__`): a socket bound to the broadcast address receives the broadcasts that
#: every node sends (one bound to the node's own unicast address would not).
BROADCAST_IP = "10.77.0.255"


@dataclass(frozen=True)
class NodeKeys:
    name: str
    secrets: NodeSecrets
    member: MemberRecord


def make_mesh(
    names: list[str], mesh_name: str, randbytes: Callable[[int], bytes] = os.urandom
) -> tuple[Genesis, list[NodeKeys]]:
    """One genesis for all `names`: the first is the only admin; every node is trusted."""
    secrets = [NodeSecrets.generate(randbytes) for _ in names]
    admin = secrets[0]
    genesis = Genesis(
        mesh_name,
        (admin.verify_key,),
        1,
        randbytes(NONCE_BYTES),
        dict(DEFAULT_POLICY),
        tuple(s.verify_key for s in secrets),
    ).signed_by(admin)
    nodes = [
        NodeKeys(name, s, MemberRecord.create(s, name, genesis.mesh_id))
        for name, s in zip(names, secrets, strict=True)
    ]
    return genesis, nodes


def write_node_files(
    paths: NodePaths, secrets: NodeSecrets, genesis: Genesis, member: MemberRecord
) -> None:
    """Write what `kai-mesh init` writes (config aside), for a node of the shared genesis."""
    paths.config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    NodeFiles(secrets, genesis, member).write(paths)


def node_config_text(
    name: str,
    *,
    transport: bool,
    bitrate: int | None,
    propagation: bool = False,
    duty_cycle: float | None = None,
) -> str:
    """A node's config.toml: its name, `[reticulum]`, `[lxmf]` (a propagation node when
    `propagation`; announced after 1 s, not LXMF's 20) and one UDP broadcast interface."""
    lines = [
        "# Written by `kai-mesh harness up`: Reticulum over UDP broadcast on the node's veth.",
        "# Every other setting has its default (see `kai-mesh init` for a commented file).",
        "",
        "[node]",
        f'name = "{name}"',
        "",
        "[reticulum]",
        "enabled = true",
        f"transport = {'true' if transport else 'false'}",
        "announce_interval = 30",
        "",
        "[lxmf]",
        f"propagation_node = {'true' if propagation else 'false'}",
        "stamp_cost = 13",
        "node_announce_delay = 1",
        "",
        "[[interfaces]]",
        'name = "veth"',
        'type = "udp"',
        f'listen_ip = "{BROADCAST_IP}"',
        f"listen_port = {UDP_PORT}",
        f'forward_ip = "{BROADCAST_IP}"',
        f"forward_port = {UDP_PORT}",
        "ingress_control = false",
    ]
    if bitrate is not None:
        lines.append(f"bitrate = {bitrate}")
    if duty_cycle is not None:
        lines.append(f"duty_cycle = {duty_cycle}")
    return "\n".join(lines) + "\n"


def write_config(
    paths: NodePaths,
    name: str,
    *,
    transport: bool,
    bitrate: int | None,
    propagation: bool = False,
    duty_cycle: float | None = None,
) -> None:
    """Write the node's config.toml and read it back, so a bad one fails `up`, not the node.

    Raises:
        ConfigError: this kai-mesh refuses the file (it names the key).
    """
    text = node_config_text(
        name, transport=transport, bitrate=bitrate, propagation=propagation, duty_cycle=duty_cycle
    )
    write_private(paths.config_file, text.encode())
    load_config(paths.config_file)
