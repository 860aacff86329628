"""The multi-node harness: one kai-mesh node per network namespace on one machine.

`netns` wraps `ip`, `tc` and `nft`; `homes` writes node homes that share one genesis; `cluster`
keeps the harness's state and runs the nodes; `cli` is `kai-mesh harness …`.
"""

from kai_mesh.harness.cluster import HarnessState, down, up
from kai_mesh.harness.netns import HarnessError, NotPrivileged, require_privileges

__all__ = ["HarnessError", "HarnessState", "NotPrivileged", "down", "require_privileges", "up"]
