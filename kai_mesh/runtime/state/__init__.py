"""The replicated state on this node: the replica's logs, anti-entropy, its control methods."""
