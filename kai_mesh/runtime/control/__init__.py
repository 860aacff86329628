"""The control socket server."""
