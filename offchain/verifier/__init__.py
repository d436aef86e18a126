"""The validator: replays sampled claims, challenges the false ones, votes on disputes.

check.py (one claim against its replay, no chain), journal.py (crash-safe per-claim progress),
daemon.py (events -> verdicts -> challenge / vote / resolve / finalize), commands.py (`pm verifier`).
"""
