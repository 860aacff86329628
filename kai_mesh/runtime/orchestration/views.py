"""What the replicated state says about services, read into typed views (issue 11, runtime).

Layout of the doc's `services` root, one map per service name::

    services/NAME/orders/ID        base64 of a signed order (manifest 0x41 or command 0x42)
    services/NAME/placements/KEY   {"counter", "owner", "manifest", "slots": [[replica, node]]}
    services/NAME/replicas/NODE    {"state", "reason", "replicas": [replica], "manifest"}

Every node writes orders (signed: anyone may write one, only an authorized one is acted on),
the owner writes placements (one key per epoch, so concurrent writers never overwrite each
other's record; `ownership.in_force` picks the one to act on), and each node writes only its own
`replicas/NODE` record. Node ids are 32 hex digits, order ids 64.

`service_view` folds one service's entry into a `ServiceView`: the orders admitted against the
governance fold (refused ones kept with their reason, to be shown), the winning manifest with the
newest scale command applied, and whether it was removed. Commands apply when signed at or after
the manifest (`signed_at` are seconds; the writer keeps them monotonic per service).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kai_mesh.core.governance.fold import GovernanceState
from kai_mesh.core.orchestration.deploy import (
    COMMAND_FORMAT,
    MANIFEST_FORMAT,
    Refused,
    ServiceCommand,
    SignedManifest,
    admit_command,
    admit_manifest,
    newest,
)
from kai_mesh.core.orchestration.manifest import Replicas
from kai_mesh.core.orchestration.ownership import Epoch
from kai_mesh.core.orchestration.placement import Slot

ORDERS, PLACEMENTS, REPLICAS = "orders", "placements", "replicas"

Admit = Callable[[str], SignedManifest | ServiceCommand | Refused]


@dataclass(frozen=True, slots=True)
class PlacementWrite:
    """One owner's placement record."""

    epoch: Epoch
    manifest: str  # the id (hex) of the manifest it places
    slots: tuple[Slot, ...]
    key: str = ""

    def to_value(self) -> dict[str, Any]:
        return {
            "counter": self.epoch.counter,
            "owner": self.epoch.owner.hex(),
            "manifest": self.manifest,
            "slots": [[s.replica, s.node.hex()] for s in self.slots],
        }


def epoch_key(epoch: Epoch) -> str:
    return f"{epoch.counter}-{epoch.owner.hex()}"


def parse_placement(key: str, value: object) -> PlacementWrite | None:
    """A placement record from the doc, or None if it is not one (ignored, not trusted)."""
    if not isinstance(value, dict):
        return None
    try:
        counter, owner, manifest = value["counter"], value["owner"], value["manifest"]
        slots = tuple(Slot(int(r), bytes.fromhex(n)) for r, n in value["slots"])
        epoch = Epoch(int(counter), bytes.fromhex(owner))
    except (KeyError, TypeError, ValueError, Exception):
        return None
    if not isinstance(manifest, str):
        return None
    return PlacementWrite(epoch, manifest, slots, key)


@dataclass
class ServiceView:
    name: str
    manifest: SignedManifest | None = None
    command: ServiceCommand | None = None
    refused: list[dict[str, str]] = field(default_factory=list)
    placements: list[PlacementWrite] = field(default_factory=list)
    status: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    latest_order: int = 0  # the newest signed_at among its orders

    @property
    def removed(self) -> bool:
        return self.command is not None and self.command.action == "remove"

    @property
    def active(self) -> bool:
        return self.manifest is not None and not self.removed

    @property
    def spec(self) -> Any:
        """The manifest in force: the winner's, with the replica counts of a later scale."""
        assert self.manifest is not None
        m = self.manifest.manifest
        c = self.command
        if c is not None and c.action == "scale":
            m = dataclasses.replace(m, replicas=Replicas(min=c.min, max=c.max))
        return m

    @property
    def manifest_id(self) -> str:
        return "" if self.manifest is None else self.manifest.id.hex()


def decode_order(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def encode_order(data: bytes) -> str:
    return base64.b64encode(data).decode()


def admit_order(
    text: object, mesh_id: bytes, gov: GovernanceState
) -> SignedManifest | ServiceCommand | Refused:
    data = decode_order(text)
    if not data:
        return Refused("malformed", "an order is not base64 text")
    if data[0] == MANIFEST_FORMAT:
        return admit_manifest(data, mesh_id, gov)
    if data[0] == COMMAND_FORMAT:
        return admit_command(data, mesh_id, gov)
    return Refused("malformed", f"unknown order format {data[0]:#x}")


def service_view(name: str, entry: object, admit: Admit) -> ServiceView:
    view = ServiceView(name)
    if not isinstance(entry, dict):
        return view
    orders = entry.get(ORDERS)
    manifests: list[SignedManifest] = []
    commands: list[ServiceCommand] = []
    for order_id, text in sorted(orders.items()) if isinstance(orders, dict) else ():
        got = admit(text) if isinstance(text, str) else Refused("malformed", "not text")
        if isinstance(got, SignedManifest) and got.manifest.name != name:
            got = Refused("malformed", f"a manifest of {got.manifest.name!r} filed under {name!r}")
        if isinstance(got, ServiceCommand) and got.name != name:
            got = Refused("malformed", f"a command for {got.name!r} filed under {name!r}")
        if isinstance(got, Refused):
            view.refused.append({"id": order_id, "reason": got.reason, "detail": got.detail})
        elif isinstance(got, SignedManifest):
            manifests.append(got)
            view.latest_order = max(view.latest_order, got.signed_at)
        else:
            commands.append(got)
            view.latest_order = max(view.latest_order, got.signed_at)
    view.manifest = newest(manifests)
    if view.manifest is not None:
        after = [c for c in commands if c.signed_at >= view.manifest.signed_at]
        view.command = max(after, key=lambda c: (c.signed_at, c.id), default=None)
    placements = entry.get(PLACEMENTS)
    for key, value in placements.items() if isinstance(placements, dict) else ():
        write = parse_placement(key, value)
        if write is not None:
            view.placements.append(write)
    status = entry.get(REPLICAS)
    for node_hex, record in status.items() if isinstance(status, dict) else ():
        try:
            node = bytes.fromhex(node_hex)
        except ValueError:
            continue
        if isinstance(record, dict):
            view.status[node] = record
    return view


def views(root: object, admit: Admit) -> dict[str, ServiceView]:
    if not isinstance(root, Mapping):
        return {}
    return {name: service_view(name, entry, admit) for name, entry in sorted(root.items())}
