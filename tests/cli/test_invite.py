"""`kai-mesh invite` and `kai-mesh join TOKEN`.

`join` runs in-process (it talks to no daemon): a fresh home becomes a node of the token's mesh
with a claim that verifies; a home that holds a node is refused without `--force` and archived
with it. The daemon side (`gov_invite`, `gov_invite_show`) is driven on a `GovernanceService`
with an in-memory store, and the claim it leads to admits exactly one node.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path

import pytest

from kai_mesh.cli.common import ExitCode
from kai_mesh.cli.main import main
from kai_mesh.config.nodefiles import NodeFiles, claim_path
from kai_mesh.config.settings import NodePaths, load_config
from kai_mesh.core.governance.invite_token import decode_token, encode_token
from kai_mesh.core.governance.wire import decode_object, parse_redemption
from kai_mesh.core.mesh.genesis import Genesis
from kai_mesh.core.mesh.identity import NodeSecrets
from kai_mesh.runtime.blocking import inline
from kai_mesh.runtime.governance.invites import admit_claim, invite_method
from kai_mesh.runtime.governance.members import Members
from kai_mesh.runtime.governance.service import GovernanceService
from kai_mesh.runtime.store import Store

ADMIN = NodeSecrets.generate(os.urandom)
GENESIS = Genesis.of_one(ADMIN, "team", os.urandom(16))


def token(tcp: list[str] | None = None) -> str:
    return encode_token(GENESIS, os.urandom(32), tcp or [])


def test_join_makes_a_node_of_the_mesh_with_a_verifying_claim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "new"
    text = token(["10.1.2.3:4242"])
    assert main(["--home", str(home), "join", text, "--name", "newbie"]) == ExitCode.OK
    assert "newbie" in capsys.readouterr().out
    paths = NodePaths.resolve(home)
    files = NodeFiles.load(paths)
    assert files.genesis.mesh_id == GENESIS.mesh_id and files.member.name == "newbie"
    claim = decode_object(claim_path(paths).read_bytes(), GENESIS.mesh_id)
    assert claim.redemption.node_key == files.secrets.verify_key  # type: ignore[union-attr]
    assert claim.redemption.invite_key == decode_token(text).invite_key  # type: ignore[union-attr]
    assert stat.S_IMODE(claim_path(paths).stat().st_mode) == 0o600
    config = load_config(paths.config_file)
    kinds = {(i.type, getattr(i.options, "target_host", None)) for i in config.interfaces}
    assert kinds == {("auto", None), ("tcp_client", "10.1.2.3")}
    # A second address later: added once, never twice.
    assert main(["--home", str(home), "join", token(["10.1.2.3:4242"]), "--force"]) == 0
    table = tomllib.loads(paths.config_file.read_text())
    assert [i["type"] for i in table["interfaces"]] == ["auto", "tcp_client"]


def test_join_refuses_a_home_with_a_node_and_archives_it_with_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "old")
    assert main(["--home", home, "init", "--local-only", "--name", "old"]) == ExitCode.OK
    paths = NodePaths.resolve(home)
    old = NodeFiles.load(paths)
    capsys.readouterr()
    text = token()
    assert main(["--home", home, "join", text]) == ExitCode.CONFLICT
    err = capsys.readouterr().err
    assert "--force" in err and "old" in err and len(err.strip().splitlines()) == 1
    assert NodeFiles.load(paths).secrets.verify_key == old.secrets.verify_key  # untouched

    assert main(["--home", home, "join", text, "--force", "--json"]) == ExitCode.OK
    out = capsys.readouterr().out
    archive = Path(json.loads(out)["archive"])
    assert archive.name.startswith("data.archived-") and (archive / "node.key").exists()
    assert NodeSecrets.from_bytes((archive / "node.key").read_bytes()) == old.secrets
    new = NodeFiles.load(paths)
    assert new.genesis.mesh_id == GENESIS.mesh_id and new.secrets != old.secrets
    assert new.member.name == "old"  # the config's name is kept


def test_join_refuses_a_bad_token_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = token()
    bad = text[:40] + ("x" if text[40] != "x" else "y") + text[41:]
    assert main(["--home", str(tmp_path / "h"), "join", bad]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "not a valid invite token" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "h").exists()


async def _noop_send(node_id: bytes, frame: bytes) -> None:
    return None


def _service(secrets: NodeSecrets, genesis: Genesis) -> GovernanceService:
    return GovernanceService(
        secrets=secrets, genesis=genesis, send=_noop_send, peers=list, emit=lambda t, d: None
    )


async def test_an_invite_certified_at_once_admits_its_first_claimant_only(tmp_path: Path) -> None:
    paths = NodePaths.resolve(tmp_path / "admin")
    paths.data_dir.mkdir(parents=True)
    config_file = tmp_path / "admin.toml"
    config_file.write_text('[nostr]\nrelays = ["wss://relay.example"]\n')
    config = load_config(config_file)
    gov = _service(ADMIN, GENESIS)
    members = Members({ADMIN.node_id: ADMIN.verify_key})
    gov.watch(members.update)
    await gov.start(Store(Path(":memory:"), run_sync=inline))
    params = {"role": "member", "expires_in": 3600, "reach": ["10.0.0.1:4242"]}
    made = await invite_method(gov, paths, config, GENESIS, "gov_invite", params)
    assert made["status"] == "certified" and made["needs"] == 0
    seed_file = paths.data_dir / "invites" / made["id"]
    assert stat.S_IMODE(seed_file.stat().st_mode) == 0o600
    tok = decode_token(made["token"])
    assert tok.tcp == ("10.0.0.1:4242",) and tok.genesis.mesh_id == GENESIS.mesh_id
    assert tok.relays == ("wss://relay.example",)  # a peer anywhere reaches the mesh by it

    for home in ("j1", "j2"):
        joined = main(["--home", str(tmp_path / home), "join", made["token"], "--name", home])
        assert joined == ExitCode.OK
    homes = [NodePaths.resolve(tmp_path / h) for h in ("j1", "j2")]
    claims = [claim_path(h).read_bytes() for h in homes]
    keys = [NodeFiles.load(h).secrets for h in homes]
    assert not await admit_claim(gov, members, b"garbage")
    assert await admit_claim(gov, members, claims[0])  # alone: it takes the invite
    await admit_claim(gov, members, claims[1])
    # Both held: the earlier claim (by signed time, then id) wins, and only its node is in.
    parsed = [parse_redemption(c).redemption for c in claims]
    win = min(range(2), key=lambda i: (parsed[i].signed_time, parsed[i].id))
    assert keys[win].node_id in members and keys[1 - win].node_id not in members

    shown = await invite_method(
        gov, paths, config, GENESIS, "gov_invite_show", {"id": made["id"][:12]}
    )
    assert shown["status"] == "redeemed" and shown["token"] is None
    assert shown["redeemed_by"] == keys[win].node_id.hex()
