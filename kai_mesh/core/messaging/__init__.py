"""Messages between agents and nodes: the envelope, router frames, priority queues, airtime
budgets, retries."""
