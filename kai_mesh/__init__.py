"""kai-mesh: a peer-to-peer mesh node.

`kai_mesh.core` holds the pure protocol machines and value types, `kai_mesh.runtime` the trio shell
that drives them, `kai_mesh.cli.main` the `kai-mesh` command.
"""

__version__ = "0.1.0"
