"""Node homes for the harness: N nodes that share one genesis.

`kai-mesh init` makes a mesh of one. The harness instead makes one mesh of N, by the genesis
ceremony of `kai-mesh genesis new|sign` done in one step: the admins (node1 alone by default) and
the threshold M are checked first (`check_admins`: 2M > admins, as `genesis new` requires, so
nothing is made for a refused quorum), then the genesis names the admins' keys and M, every admin
signs it (`Genesis.signed_by`) and it must verify (`Genesis.check`) as `init --genesis` requires.
The genesis trusts every node's key from the start, so the nodes are members of the same mesh
without any governance round. Each home gets the files `init` writes (written the same way:
atomic, mode 0600, the secrets last) and a config with the `[reticulum]` section and one UDP
broadcast interface on the node's veth.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kai_mesh.config.nodefiles import NodeFiles, write_private
from kai_mesh.config.settings import NodePaths, load_config
from kai_mesh.core.errors import Malformed, UsageError
from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, NONCE_BYTES, Genesis, check_quorum
from kai_mesh.core.mesh.identity import MemberRecord, NodeSecrets

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


def majority(admins: int) -> int:
    """The smallest threshold M with 2M > `admins`: the harness's default."""
    return admins // 2 + 1


def check_admins(
    names: Sequence[str], admins: Sequence[str] | None = None, threshold: int | None = None
) -> tuple[list[str], int]:
    """The admins (default: the first node) and threshold (default: a majority of them), checked.

    Raises:
        UsageError: an admin that is not among `names` or is named twice, or a threshold outside
            1..admins or not a majority (2M > admins, as `kai-mesh genesis new` requires).
    """
    chosen = list(admins) if admins else list(names[:1])
    for name in chosen:
        if name not in names:
            raise UsageError(f"--admins: no node {name!r} among {names[0]}..{names[-1]}")
    if len(set(chosen)) != len(chosen):
        raise UsageError(f"--admins {','.join(chosen)}: a node is named twice")
    n = len(chosen)
    m = majority(n) if threshold is None else threshold
    try:
        check_quorum(n, m)
    except Malformed as exc:
        raise UsageError(
            f"--threshold {m} with {n} admin(s): {exc}; give a threshold from {majority(n)} to "
            f"{n}, so two rival proposals can never both be certified without one admin voting "
            "for both"
        ) from None
    return chosen, m


def make_mesh(
    names: list[str],
    mesh_name: str,
    randbytes: Callable[[int], bytes] = os.urandom,
    *,
    admins: Sequence[str] | None = None,
    threshold: int | None = None,
) -> tuple[Genesis, list[NodeKeys]]:
    """One genesis for all `names`, every node trusted: `admins` (default: the first name) with
    `threshold` (default: a majority), signed by every admin.

    Raises:
        UsageError: refused admins or threshold (see `check_admins`).
    """
    chosen, m = check_admins(names, admins, threshold)
    secrets = [NodeSecrets.generate(randbytes) for _ in names]
    by_name = dict(zip(names, secrets, strict=True))
    signers = [by_name[name] for name in chosen]
    genesis = Genesis(
        mesh_name,
        tuple(s.verify_key for s in signers),
        m,
        randbytes(NONCE_BYTES),
        dict(DEFAULT_POLICY),
        tuple(s.verify_key for s in secrets),
    )
    for admin in signers:  # `kai-mesh genesis sign`, once on each admin's node
        genesis = genesis.signed_by(admin)
    genesis.check()  # what `kai-mesh init --genesis` requires of the file
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
    lan: bool = True,
    radio_lines: Sequence[str] = (),
    relays: Sequence[str] = (),
) -> str:
    """A node's config.toml: its name, `[reticulum]`, `[lxmf]` (a propagation node when
    `propagation`; announced after 1 s, not LXMF's 20), one UDP broadcast interface (unless
    not `lan`) and `radio_lines`, the emulated radio's interfaces (`radio.harness`)."""
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
    ]
    if lan:
        lines += [
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
    if relays:
        lines += ["", "[nostr]", "relays = [" + ", ".join(f'"{r}"' for r in relays) + "]"]
    lines += radio_lines
    return "\n".join(lines) + "\n"


def write_config(
    paths: NodePaths,
    name: str,
    *,
    transport: bool,
    bitrate: int | None,
    propagation: bool = False,
    duty_cycle: float | None = None,
    lan: bool = True,
    radio_lines: Sequence[str] = (),
    relays: Sequence[str] = (),
) -> None:
    """Write the node's config.toml and read it back, so a bad one fails `up`, not the node.

    Raises:
        ConfigError: this kai-mesh refuses the file (it names the key).
    """
    text = node_config_text(
        name,
        transport=transport,
        bitrate=bitrate,
        propagation=propagation,
        duty_cycle=duty_cycle,
        lan=lan,
        radio_lines=radio_lines,
        relays=relays,
    )
    write_private(paths.config_file, text.encode())
    load_config(paths.config_file)
