"""`pm demo`: the whole network on one machine, each role a real process (see offchain/demo/run.py).

Modules, one job each: `anvil` (a local chain as a child process, its funded accounts), `deploy`
(scripts/deploy.py through brownie's live-network path, as on a public testnet), the phases of
the run, and the summary.
"""
