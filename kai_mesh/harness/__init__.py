"""The multi-node harness: one kai-mesh node per network namespace on one machine.

`netns` wraps `ip`, `tc` and `nft`; `homes` writes node homes that share one genesis; `cluster`
keeps the harness's state and runs the nodes; `cli` is `kai-mesh harness …`.

`cluster` (psutil, keys, the radio channel's trio) loads on first use of its names here, so that
`kai-mesh --help`, which builds the `harness` parser, does not pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kai_mesh.harness.netns import HarnessError, NotPrivileged, require_privileges

if TYPE_CHECKING:
    from kai_mesh.harness.cluster import HarnessState, down, up

__all__ = ["HarnessError", "HarnessState", "NotPrivileged", "down", "require_privileges", "up"]

_FROM_CLUSTER = frozenset({"HarnessState", "down", "up"})


def __getattr__(name: str) -> Any:
    if name in _FROM_CLUSTER:
        from kai_mesh.harness import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
