"""The compute provider on-chain: serve one stage, publish each round, claim it, follow the claim.

daemon.py (the `StageRole` the stage server runs with: stake, join, stage key, publish rounds),
claims.py (the ledger loop: submit, finalize, follow challenges), journal.py (durable per-round
claim state), cheats.py (TEST TOOL: dishonest modes for tests and the demo), commands.py (`pm worker`).
"""
