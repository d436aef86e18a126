"""The web app: holders claim, customers pay for completions, anyone reads a model's dashboard.

A static app (no keys, no server-side secrets): config.py (what the page is told: chain, RPC,
contracts, gateways), site.py (every file the app is made of, its CSP, the npm allowlist),
server.py (`pm web serve`), build.py (`pm web build`), commands.py (the CLI), static/ (the page).
"""
