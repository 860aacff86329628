"""Transports: Reticulum, LXMF, Nostr, and a simulated one for tests.

Not built yet: they arrive with the Reticulum/LXMF issue. The package exists so the layout and the
layering contracts (pyproject.toml, import-linter) hold from the start.
"""
