"""Heartbeats and the failure detector, wired to the transports."""
