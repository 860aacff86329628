"""Threshold-signed governance: proposals, votes, the fold, invites."""
