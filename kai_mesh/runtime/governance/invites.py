"""Invites on a running node: `kai-mesh invite` (admin side) and the joiner's pending claim.

Admin side (`gov_invite`, `gov_invite_show`): an invite is a fresh Ed25519 keypair whose public
half this node proposes in a `node_authorization {"invite_key", "role"}`. The private half (a
32-byte seed) is kept in `DATA/invites/<proposal id hex>` (mode 0600) so that the token can be
printed whenever the proposal is certified — at once in a 1-of-1 mesh, after the other admins'
votes otherwise. The token (`core.governance.invite_token`) carries the genesis, the seed and how
to reach
the mesh: the node's Reticulum TCP server interfaces (or the addresses the caller gives).

Joiner side: `kai-mesh join` leaves the claim (`Governance.redeem`: the invite's and the node's
signatures over the node's key) in `DATA/join.kai`. `pending_claim` reads it; at start the node
submits it to its own governance and hands it to its transports, which send it in a JOIN frame
until the mesh admits the node (`transports/reticulum/`). On the other side `admit_claim`
submits a claim to governance (which pushes it to every peer) and says whether its node is now
a member.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import psutil
import trio

from kai_mesh.config.nodefiles import claim_path, write_private
from kai_mesh.config.settings import Config, NodePaths
from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.governance.invite_token import MAX_REACH, encode_token, split_host_port
from kai_mesh.core.governance.wire import InviteSecret, parse_redemption
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import node_id_of
from kai_mesh.runtime.governance.control import propose_from
from kai_mesh.runtime.governance.service import GovernanceService
from transports.base import Transport

log = logging.getLogger(__name__)

METHODS = frozenset({"gov_invite", "gov_invite_show"})
INVITES_DIR = "invites"
DEFAULT_ROLE = "member"


def pending_claim(paths: NodePaths) -> bytes | None:
    """The claim `kai-mesh join` left, if any (a damaged file is logged and ignored)."""
    try:
        data = claim_path(paths).read_bytes()
        parse_redemption(data)
    except FileNotFoundError:
        return None
    except (OSError, KaiMeshError) as exc:
        log.warning("%s: ignored: %s", claim_path(paths), exc)
        return None
    return data


async def admit_claim(gov: GovernanceService, members: Mapping[bytes, bytes], claim: bytes) -> bool:
    """A joiner's claim, from a JOIN frame: kept (and pushed on) by governance; True if its node
    is a member now. Never raises for bad bytes."""
    try:
        node_id = node_id_of(parse_redemption(claim).redemption.node_key)
    except KaiMeshError:
        return False
    outcome = await gov.submit(claim)
    if outcome.refused:
        log.info("join claim of %s refused: %s", node_id.hex(), outcome.refused[0].detail)
    return node_id in members


async def wire_invites(
    gov: GovernanceService,
    paths: NodePaths,
    transports: Sequence[Transport],
    members: Mapping[bytes, bytes],
) -> bytes | None:
    """At start, after `gov.start`: a node made by `kai-mesh join` takes its claim into its own
    governance (so it syncs like any record) and gives it to the transports that send JOIN
    frames; every node lets those transports hand joiners' claims to `admit_claim`. Returns the
    node's own claim, if any."""
    claim = pending_claim(paths)
    if claim is not None:
        await gov.submit(claim)
    for transport in transports:
        if transport.abilities.admits_claims:
            transport.set_claim_admission(claim, partial(admit_claim, gov, members))
    return claim


async def invite_method(
    gov: GovernanceService,
    paths: NodePaths,
    config: Config,
    genesis: Genesis,
    method: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """`gov_invite {expires_in?, role?, reach?}` and `gov_invite_show {id}`: both answer
    `{"id", "status", "token"|None, "needs", ...}` (see `_report`)."""
    try:
        if method == "gov_invite":
            return await _invite(gov, paths, config, genesis, params)
        if method == "gov_invite_show":
            pid = _find_invite(paths, params.get("id"))
            return await _report(gov, paths, config, genesis, pid, params.get("reach"))
    except KaiMeshError as exc:
        raise ControlError("bad_request", str(exc)) from None
    raise ControlError("unknown_method", f"unknown method {method!r}")


async def _invite(
    gov: GovernanceService,
    paths: NodePaths,
    config: Config,
    genesis: Genesis,
    params: dict[str, Any],
) -> dict[str, Any]:
    role = params.get("role") or DEFAULT_ROLE
    if not isinstance(role, str):
        raise UsageError("role: a name such as member")
    reach = _check_reach(params.get("reach"))
    seed = os.urandom(32)
    body = {"invite_key": InviteSecret(seed).verify_key, "role": role}
    pid = await propose_from(gov, "node_authorization", body, params)
    await trio.to_thread.run_sync(_keep_seed, paths, pid, seed)
    return await _report(gov, paths, config, genesis, pid, reach)


def _keep_seed(paths: NodePaths, pid: bytes, seed: bytes) -> None:
    folder = paths.data_dir / INVITES_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    write_private(folder / pid.hex(), seed)


def _find_invite(paths: NodePaths, text: object) -> bytes:
    if not isinstance(text, str) or not text:
        raise UsageError("id: give the invite's proposal id (hex, or a unique prefix)")
    folder = paths.data_dir / INVITES_DIR
    names = sorted(p.name for p in folder.glob("*")) if folder.is_dir() else []
    matches = [n for n in names if len(n) == 64 and n.startswith(text.lower())]
    if not matches:
        raise UsageError(f"no invite {text} was made on this node")
    if len(matches) > 1:
        raise UsageError(f"{text} is the start of {len(matches)} invites: give more of it")
    return bytes.fromhex(matches[0])


async def _report(
    gov: GovernanceService,
    paths: NodePaths,
    config: Config,
    genesis: Genesis,
    pid: bytes,
    reach: list[str] | None,
) -> dict[str, Any]:
    """What became of invite `pid`: status (certified, open, expired, orphaned, refused,
    redeemed), votes still needed, and the token once certified and not yet taken."""
    machine = gov.machine()
    seed = await trio.to_thread.run_sync((paths.data_dir / INVITES_DIR / pid.hex()).read_bytes)
    status = next((p for p in machine.proposals(gov.now()) if p.id == pid), None)
    if status is None:
        raise UsageError(f"invite {pid.hex()}: its proposal is not held here")
    state = machine.state
    counted = sum(1 for v in status.votes if v.counted)
    invite_key = InviteSecret(seed).verify_key
    result: dict[str, Any] = {
        "id": pid.hex(),
        "status": status.status,
        "why": status.why,
        "role": status.body.get("role"),
        "expires_at": status.expires_at,
        "votes": counted,
        "needs": 0 if status.status == "certified" else max(0, state.threshold - counted),
        "token": None,
        "redeemed_by": None,
    }
    taken = state.redeemed.get(invite_key)
    if taken is not None:
        result["status"] = "redeemed"
        result["redeemed_by"] = node_id_of(taken).hex()
    elif status.status == "certified":
        tcp = reach if reach is not None else tcp_reach(config)
        relays = list(config.nostr.relays)  # a peer anywhere joins through a relay alone
        markers = dict(config.nostr.markers)  # the joiner reads and writes each as we do
        result["token"] = encode_token(genesis, seed, tcp, relays, markers)
        result["reach"] = tcp
        result["relays"] = relays
        result["relay_markers"] = markers
    return result


def _check_reach(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError("reach: a list of HOST:PORT")
    for item in value:
        split_host_port(item, UsageError)
    return list(value)[:MAX_REACH]


def tcp_reach(config: Config, addresses: Sequence[str] | None = None) -> list[str]:
    """HOST:PORT of this node's enabled Reticulum TCP server interfaces; one listening on every
    address (0.0.0.0) is given as each of this host's non-loopback addresses."""
    out: list[str] = []
    for interface in config.interfaces if config.reticulum.enabled else ():
        if interface.type != "tcp_server" or not interface.enabled:
            continue
        options: Any = interface.options
        ip, port = options.listen_ip, options.listen_port
        hosts = [ip] if ip not in ("0.0.0.0", "::", "") else list(addresses or _host_addresses())
        out += [f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts]
    return list(dict.fromkeys(out))[:MAX_REACH]


def _host_addresses() -> list[str]:
    found = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            try:
                ip = ipaddress.ip_address(addr.address.split("%")[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_multicast):
                found.append(str(ip))
    return sorted(found, key=lambda a: (":" in a, a))
