"""Anti-entropy between peers, shared by the replicated state and governance."""
