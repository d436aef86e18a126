"""Web3 client, deployments, transaction sending and event polling (the Worker issue)."""
