"""Protocol Models off-chain workers: training stages, storage, proofs, chain client, CLI (`pm`)."""

__version__ = "0.1.0"
