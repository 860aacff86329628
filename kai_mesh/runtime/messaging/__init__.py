"""The bus, the router between nodes, the outbox and inbox, egress lanes."""
