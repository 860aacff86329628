"""`kai-mesh key` and `kai-mesh genesis new|sign|show`: found a mesh with several admins.

The ceremony, with no hub: every admin creates its node (`kai-mesh init --name N`) and prints its
key (`kai-mesh key`); one admin writes the unsigned genesis (`genesis new`) naming the admin keys,
the threshold M (2M > N, so two rival geneses cannot both be certified) and the other members;
the file goes round and each admin adds its signature (`genesis sign FILE`); once M admins have
signed, every listed node joins with `kai-mesh init --genesis FILE --force`, which keeps its keys
and archives the database of the mesh it leaves. None of these talks to the daemon.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kai_mesh.cli.common import CliError, ExitCode, _paths, add_verb, print_json
from kai_mesh.config.paths import NodePaths
from kai_mesh.core.errors import BadSignature, KaiMeshError, ProtocolError, StoreError, UsageError
from kai_mesh.core.mesh.address import check_name

if TYPE_CHECKING:
    from kai_mesh.core.mesh.genesis import Genesis
    from kai_mesh.core.mesh.identity import NodeSecrets

KEY_HEX = 64


def _key(flag: str, text: str) -> bytes:
    """A 32-byte Ed25519 public key from 64 hex digits, or a one-line usage error."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: not hexadecimal (`kai-mesh key` prints it)") from None
    if len(key) != KEY_HEX // 2:
        raise UsageError(
            f"{flag} {text!r}: a key is {KEY_HEX} hex digits (32 bytes), this has {len(text)}"
        )
    return key


def _secrets(paths: NodePaths) -> NodeSecrets:
    from kai_mesh.core.mesh.identity import NodeSecrets

    if not paths.secrets.exists():
        raise StoreError(f"no node at {paths.data_dir}: create one with `kai-mesh init`")
    try:
        return NodeSecrets.from_bytes(paths.secrets.read_bytes())
    except (OSError, KaiMeshError) as exc:
        raise StoreError(f"{paths.secrets}: unreadable or damaged: {exc}") from None


def read_genesis(file: str) -> Genesis:
    """The genesis in FILE, every signature it carries verified; a one-line error (exit 2) if
    it cannot be read, does not decode, or carries a signature that does not verify."""
    genesis = _decode(file)
    _refuse_bad_signatures(file, genesis)
    return genesis


def _refuse_bad_signatures(file: str, genesis: Genesis) -> None:
    bad = [key for key, ok in _signatures(genesis).items() if not ok]
    if bad:
        raise CliError(
            f"{file}: {len(bad)} signature(s) do not verify (by {bad[0].hex()[:16]}…): the file "
            "was altered or damaged after it was signed; get a fresh copy",
            ExitCode.USAGE,
        )


def _decode(file: str) -> Genesis:
    from kai_mesh.core.mesh.genesis import Genesis

    try:
        data = Path(file).read_bytes()
    except OSError as exc:
        raise CliError(f"{file}: cannot read: {exc.strerror}", ExitCode.USAGE) from None
    try:
        return Genesis.from_bytes(data)
    except (KaiMeshError, ValueError) as exc:
        raise CliError(
            f"{file}: not a valid genesis file (altered or damaged?): {exc}", ExitCode.USAGE
        ) from None


def _signatures(genesis: Genesis) -> dict[bytes, bool]:
    """Signer key -> whether its signature verifies (a non-admin's never does)."""
    from kai_mesh.core.mesh.genesis import Genesis
    from kai_mesh.core.mesh.identity import verify

    result = {}
    for key, sig in genesis.signatures.items():
        try:
            if key not in genesis.admins:
                raise BadSignature("not an admin")
            verify(key, Genesis.KIND, genesis.mesh_id, b"", sig)
            result[key] = True
        except BadSignature:
            result[key] = False
    return result


def _complete(genesis: Genesis) -> bool:
    try:
        genesis.check()
    except BadSignature:
        return False
    return True


def cmd_key(args: argparse.Namespace) -> ExitCode:
    from kai_mesh.config.nodefiles import NodeFiles

    paths = _paths(args)
    files = NodeFiles.load(paths)
    result = {
        "key": files.secrets.verify_key.hex(),
        "node_id": files.secrets.node_id.hex(),
        "name": files.member.name,
        "mesh": files.genesis.mesh_name,
        "mesh_id": files.genesis.mesh_id.hex(),
    }
    if args.json:
        print_json(result)
    else:
        print(result["key"])
        print(f"node {result['name']} ({result['node_id']}), mesh {result['mesh']!r}")
        print("give this key to whoever writes a genesis: --admin KEY or --member KEY")
    return ExitCode.OK


def cmd_new(args: argparse.Namespace) -> ExitCode:
    from kai_mesh.config.nodefiles import write_private
    from kai_mesh.core.mesh.genesis import DEFAULT_POLICY, NONCE_BYTES, Genesis

    mesh = check_name("mesh", args.mesh)
    if args.supervisor is not None:
        if args.admin or args.threshold not in (None, 1):
            raise UsageError(
                "--supervisor is the one admin, 1 of 1: give no --admin or --threshold"
            )
        args.admin, args.threshold = [args.supervisor], 1
    if not args.admin or args.threshold is None:
        raise UsageError(
            "give --admin KEY (repeat for each) and --threshold M, or --supervisor KEY"
        )
    admins: list[bytes] = []
    for text in args.admin:
        key = _key("--admin", text)
        if key in admins:
            raise UsageError(f"--admin {text}: this admin key is given twice")
        admins.append(key)
    n, m = len(admins), args.threshold
    if not 1 <= m <= n:
        raise UsageError(f"--threshold {m}: must be between 1 and the number of admins ({n})")
    if 2 * m <= n:
        raise UsageError(
            f"--threshold {m} of {n} admins is not a majority: 2m > n is required (here m >= "
            f"{n // 2 + 1}), so two rival geneses can never both be signed without one admin "
            "signing both"
        )
    trusted = list(admins)
    for text in args.member or []:
        key = _key("--member", text)
        if key not in trusted:
            trusted.append(key)
    target = Path(args.file)
    if target.exists() and not args.force:
        raise CliError(f"{target} exists; `--force` overwrites it", ExitCode.CONFLICT)
    genesis = Genesis(
        mesh, tuple(admins), m, os.urandom(NONCE_BYTES), dict(DEFAULT_POLICY), tuple(trusted)
    )
    write_private(target, genesis.to_bytes())
    if args.json:
        print_json(_summary(args.file, genesis))
        return ExitCode.OK
    print(f"wrote the unsigned genesis of mesh {mesh!r} to {target}")
    print(f"mesh id {genesis.mesh_id.hex()}")
    print(f"{n} admin(s), threshold {m}; {len(trusted)} trusted node(s) (admins included)")
    print(f"next: each admin signs it, on its own node: kai-mesh genesis sign {target}")
    print(f"then each listed node joins:  kai-mesh init --genesis {target} --force")
    return ExitCode.OK


def cmd_sign(args: argparse.Namespace) -> ExitCode:
    from kai_mesh.config.nodefiles import write_private

    genesis = read_genesis(args.file)
    secrets = _secrets(_paths(args))
    key = secrets.verify_key
    if key not in genesis.admins:
        raise CliError(
            f"this node's key ({key.hex()}) is not an admin of that genesis "
            f"(mesh {genesis.mesh_name!r}): only its admins sign it",
            ExitCode.USAGE,
        )
    again = key in genesis.signatures
    signed = genesis.signed_by(secrets)
    write_private(Path(args.file), signed.to_bytes())
    count = len(signed.signatures)
    complete = _complete(signed)
    if args.json:
        print_json(_summary(args.file, signed))
        return ExitCode.OK
    note = " (it had signed already: signature renewed)" if again else ""
    print(f"signed {args.file}{note}: {count} of {signed.threshold} signatures")
    if complete:
        print(
            f"complete: every listed node joins with: kai-mesh init --genesis {args.file} --force"
        )
    else:
        print(f"needs {signed.threshold - count} more admin signature(s)")
    return ExitCode.OK


def _summary(file: str, genesis: Genesis) -> dict[str, Any]:
    from kai_mesh.core.mesh.identity import node_id_of

    sigs = _signatures(genesis)
    members = [k for k in genesis.trusted_nodes if k not in genesis.admins]
    return {
        "file": file,
        "mesh": genesis.mesh_name,
        "mesh_id": genesis.mesh_id.hex(),
        "threshold": genesis.threshold,
        "admins": [
            {
                "key": k.hex(),
                "node_id": node_id_of(k).hex(),
                "signed": k in sigs,
                "verifies": sigs.get(k, False),
            }
            for k in genesis.admins
        ],
        "members": [{"key": k.hex(), "node_id": node_id_of(k).hex()} for k in members],
        "trusted_nodes": len(genesis.trusted_nodes),
        "signatures": sum(sigs.values()),
        "complete": _complete(genesis),
        "policy": dict(genesis.policy),
    }


def cmd_show(args: argparse.Namespace) -> ExitCode:
    genesis = _decode(args.file)
    summary = _summary(args.file, genesis)
    if args.json:
        print_json(summary)
    else:
        print(f"mesh      {summary['mesh']}  id {summary['mesh_id']}")
        print(f"threshold {summary['threshold']} of {len(summary['admins'])} admins")
        print("admins:")
        for admin in summary["admins"]:
            mark, note = " ", "not signed"
            if admin["signed"]:
                mark, note = ("✓", "signed") if admin["verifies"] else ("✗", "BAD SIGNATURE")
            print(f"  {mark} {admin['key']}  {note}")
        print(f"members (besides the admins): {len(summary['members'])}")
        for member in summary["members"]:
            print(f"    {member['key']}")
        state = "complete" if summary["complete"] else "incomplete"
        print(f"{state}: {summary['signatures']} of {summary['threshold']} valid signatures")
    _refuse_bad_signatures(args.file, genesis)  # shown above (✗), then one line and exit 2
    return ExitCode.OK


def init_from_genesis(args: argparse.Namespace, paths: NodePaths) -> ExitCode:
    """`kai-mesh init --genesis FILE`: switch this home's existing node to that mesh, keeping
    its keys. The caller has checked that no daemon runs on the home."""
    from kai_mesh.config.nodefiles import NodeFiles, write_private
    from kai_mesh.core.mesh.identity import MemberRecord

    if args.mesh:
        raise UsageError("--mesh does not go with --genesis: the genesis names the mesh")
    genesis = read_genesis(args.genesis)
    if not _complete(genesis):
        raise CliError(
            f"{args.genesis}: the genesis is not complete: {len(genesis.signatures)} of "
            f"{genesis.threshold} admin signatures; each admin adds one with "
            f"`kai-mesh genesis sign {args.genesis}`",
            ExitCode.USAGE,
        )
    if not paths.secrets.exists():
        raise CliError(
            f"no node at {paths.data_dir}: `--genesis` joins an existing node and never makes "
            "keys; create it with `kai-mesh init --name N`, send `kai-mesh key` to an admin to "
            "be listed in the genesis, then run this again",
            ExitCode.USAGE,
        )
    secrets = _secrets(paths)
    key = secrets.verify_key
    if key not in genesis.trusted_nodes:
        raise CliError(
            f"this node's key is not a member of that mesh: ask an admin to add it ({key.hex()})",
            ExitCode.USAGE,
        )
    old = _old_genesis(paths)
    leaving = paths.genesis.exists() and (old is None or old.mesh_id != genesis.mesh_id)
    if leaving and not args.force:
        what = f"mesh {old.mesh_name!r} ({old.mesh_id.hex()[:16]})" if old else "another mesh"
        raise CliError(
            f"this node belongs to {what}; `kai-mesh init --genesis {args.genesis} --force` "
            f"moves it to mesh {genesis.mesh_name!r}, keeping its keys and archiving the old "
            "mesh's database",
            ExitCode.CONFLICT,
        )
    name = _name(args, paths)
    archive = _archive(paths, old) if leaving else None
    member = MemberRecord.create(secrets, name, genesis.mesh_id)
    if not paths.config_file.exists():
        from kai_mesh.config.settings import default_config_text

        paths.config_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = default_config_text(name, local_only=args.local_only)
        write_private(paths.config_file, text.encode())
    NodeFiles(secrets, genesis, member).write(paths)
    result = {
        "name": name,
        "node_id": secrets.node_id.hex(),
        "mesh": genesis.mesh_name,
        "mesh_id": genesis.mesh_id.hex(),
        "threshold": genesis.threshold,
        "admins": len(genesis.admins),
        "archive": str(archive) if archive else None,
        "config": str(paths.config_file),
        "data": str(paths.data_dir),
    }
    if args.json:
        print_json(result)
    else:
        print(
            f"node {name} ({result['node_id']}) is now in mesh {genesis.mesh_name!r} "
            f"({genesis.threshold} of {len(genesis.admins)} admins), with the same keys"
        )
        if archive:
            print(f"the old mesh's data: {archive}")
        home = f" --home {args.home}" if args.home else ""
        print(f"start it with: kai-mesh{home} run")
    return ExitCode.OK


def _old_genesis(paths: NodePaths) -> Genesis | None:
    from kai_mesh.core.mesh.genesis import Genesis

    try:
        return Genesis.from_bytes(paths.genesis.read_bytes())
    except (OSError, ProtocolError, ValueError):
        return None


def _name(args: argparse.Namespace, paths: NodePaths) -> str:
    from kai_mesh.core.mesh.identity import MemberRecord

    if args.name:
        return check_name("node", args.name)
    try:
        return MemberRecord.from_bytes(paths.member.read_bytes()).name
    except (OSError, KaiMeshError, ValueError):
        pass
    if paths.config_file.exists():
        from kai_mesh.config.settings import load_config

        return load_config(paths.config_file).name
    raise UsageError("this node's name is unknown: give one with --name")


def _archive(paths: NodePaths, old: Genesis | None) -> Path:
    """Move the old mesh's database (and copy its genesis and member record) aside, so nothing
    of that mesh — state, outbox — carries into the new one."""
    stem = old.mesh_id.hex()[:16] if old else "unknown-mesh"
    root = paths.data_dir / "archive"
    target, n = root / stem, 1
    while target.exists():
        n += 1
        target = root / f"{stem}-{n}"
    target.mkdir(parents=True, mode=0o700)
    db = paths.database
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if path.exists():
            os.replace(path, target / path.name)
    for path in (paths.genesis, paths.member):
        if path.exists():
            shutil.copy2(path, target / path.name)
    return target


def add_genesis_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """`key`, and the `genesis` group."""
    text = "print this node's public key (for a genesis), node id and name"
    p = sub.add_parser("key", parents=[common], help=text, description=text)
    p.set_defaults(fn=cmd_key)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")

    text = "found a mesh with several admins: write, sign and inspect a genesis file"
    group = sub.add_parser(
        "genesis",
        parents=[common],
        help=text,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = group.add_subparsers(dest="verb", required=True, metavar="VERB")

    def add(name: str, fn: Callable[[argparse.Namespace], ExitCode], help: str) -> Any:
        return add_verb(verbs, common, name, fn, help)

    p = add("new", cmd_new, "write an unsigned genesis to FILE (fresh random nonce)")
    p.add_argument("--mesh", required=True, help="the mesh's name")
    p.add_argument(
        "--admin",
        action="append",
        default=[],
        metavar="KEYHEX",
        help="an admin's key (`kai-mesh key`); repeat for each; admins are members too",
    )
    p.add_argument("--threshold", type=int, metavar="M", help="signatures needed: 2M > admins")
    p.add_argument(
        "--supervisor",
        metavar="KEYHEX",
        help="the supervised shape: this key is the one admin, 1 of 1 (instead of --admin and "
        "--threshold); list the supervised nodes with --member",
    )
    p.add_argument("--member", action="append", metavar="KEYHEX", help="a non-admin node's key")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    p.add_argument("file", metavar="FILE")
    p = add("sign", cmd_sign, "add this node's admin signature to FILE (rewritten atomically)")
    p.add_argument("file", metavar="FILE")
    p = add("show", cmd_show, "the mesh, its admins (✓ signed), members and whether it is complete")
    p.add_argument("file", metavar="FILE")
