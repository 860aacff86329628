"""The mesh's replicated state: the Yjs doc, signed streams, reconciliation."""
