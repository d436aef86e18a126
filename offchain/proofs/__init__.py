"""Step traces, Merkle roots, message signatures and replay (the swarm and worker issues)."""
