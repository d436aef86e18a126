"""Model spec, GPT-style pipeline stages, dataset and deterministic mode (the swarm issue)."""
