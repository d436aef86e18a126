"""The share holder: what a model owes an address, and claiming it.

wallet.py (holdings, assets, claim transactions), commands.py (`pm claim`, `pm balance`).
"""
