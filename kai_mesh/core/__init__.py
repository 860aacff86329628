"""The sans-IO core: pure state machines and value types.

Nothing here does I/O, reads a clock or draws randomness: time comes in as `now`, random bytes as
arguments. `import-linter` (pyproject.toml) holds the package to that.
"""
