"""Hivemind DHT + P2P stage servers, driver, routing and wire codecs (the swarm issue)."""
