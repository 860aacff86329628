"""Control-socket methods for services (`kai-mesh services …`): deploy, list, show, scale,
remove; `services_replicas` (`kai-mesh agents --mesh`), `services_drain` (`kai-mesh drain`),
`telemetry_top` (`kai-mesh top`). The manifest is parsed by the CLI and again here (the node
trusts no client's parse)."""

from __future__ import annotations

from typing import Any

from kai_mesh.core.control.errors import ControlError
from kai_mesh.core.errors import KaiMeshError, UsageError
from kai_mesh.core.orchestration.manifest import ManifestError, parse_manifest
from kai_mesh.runtime.orchestration.reports import mesh_replicas, top
from kai_mesh.runtime.orchestration.service import Orchestrator

SERVICE_METHODS = frozenset(
    {"services_deploy", "services_list", "services_show", "services_scale", "services_remove"}
    | {"services_replicas", "services_drain", "telemetry_top"}
)


async def services_method(orch: Orchestrator, method: str, params: dict[str, Any]) -> Any:
    try:
        if method == "services_deploy":
            text = params.get("manifest")
            if not isinstance(text, str):
                raise UsageError("services_deploy: `manifest` is the TOML text")
            source = params.get("source") if isinstance(params.get("source"), str) else None
            return await orch.deploy(parse_manifest(text, source or "<manifest>"))
        if method == "services_list":
            return {"services": orch.report()}
        if method == "services_replicas":
            return {"replicas": mesh_replicas(orch)}
        if method == "telemetry_top":
            return top(orch)
        if method == "services_drain":
            on = params.get("on", True)
            node = params.get("node")
            if not isinstance(on, bool):
                raise UsageError("services_drain: `on` is true or false")
            if node is not None and node not in (orch.label(orch.node_id), orch.node_id.hex()):
                raise UsageError(
                    f"services_drain: a node drains itself: run it on {node!r} "
                    f"(this node is {orch.label(orch.node_id)!r})"
                )
            return orch.drain(on)
        name = params.get("name")
        if not isinstance(name, str):
            raise UsageError(f"{method}: give the service's name")
        if method == "services_show":
            view = orch.services().get(name)
            if view is None:
                raise ControlError("not_found", f"no service {name!r}")
            return orch.describe(view)
        if method == "services_scale":
            count = params.get("replicas")
            if type(count) is not int or not 0 <= count <= 1024:
                raise UsageError("services_scale: replicas is an integer 0..1024")
            return await orch.command("scale", name, count)
        if method == "services_remove":
            return await orch.command("remove", name)
    except ManifestError as exc:
        raise ControlError("bad_manifest", str(exc)) from None
    except (UsageError, KaiMeshError) as exc:
        raise ControlError("bad_request", str(exc)) from None
    raise ControlError("unknown_method", f"unknown method {method!r}")
