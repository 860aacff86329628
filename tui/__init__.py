"""The Textual TUI, a client of the node's control socket (see docs/control-protocol.md).

Not built yet: it is the subject of its own issue. The package exists so the layout and the
layering contracts (pyproject.toml, import-linter) hold from the start.
"""
