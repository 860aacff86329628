"""Supervised nodes (issue 12): the supervisor's signed commands and how a node judges them."""
