"""CIDs, the embedded block store, the Kubo RPC backend, encryption at rest and CAR (the storage issue)."""
