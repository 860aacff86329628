"""Supervised nodes in the shell: the `supervise` agent and the supervisor's control method."""
