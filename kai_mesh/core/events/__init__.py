"""Mesh events (issue 12): topics, their wire frames, and who wants which (sans-IO)."""
