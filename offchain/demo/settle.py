"""Let claims settle on a local chain without letting a false one slip through.

On a dev chain the challenge window is 30 s of *chain* time. The demo moves the chain's clock past
a window only once every verifier has logged its verdict on every open claim (they check each one,
probability 1), so an unchecked claim can never finalize just because time was skipped; workers
(and verifiers) then finalize what is due. A disputed claim is left to the validators' vote; only
if no vote settles it for a long while is the vote window skipped too (the ledger's fallback).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from offchain.chain.protocol import Protocol
from offchain.chain.status import claims_of
from offchain.demo.anvil import Anvil
from offchain.swarm.local import LocalProcess

TICK_S = 1.0
VOTE_PATIENCE_S = 90.0


class Settler:
    def __init__(
        self,
        protocol: Protocol,
        model_id: int,
        anvil: Anvil,
        verifiers: list[LocalProcess],
        echo: Callable[[str], None],
    ) -> None:
        self.protocol, self.model_id, self.anvil, self.verifiers, self.echo = (
            protocol,
            model_id,
            anvil,
            verifiers,
            echo,
        )
        parameters = protocol.ledger.functions.parameters().call()
        self.challenge_window, self.vote_window = parameters[0], parameters[5]
        self.skipped_for: set[str] = set()
        self.disputed_since: dict[str, float] = {}
        self.last_tick = 0.0
        self.claims: list[dict] = []

    def judged(self, claim_id: str) -> bool:
        pattern = re.compile(rf"verdict claim={claim_id} ")
        return all(pattern.search(verifier.text()) for verifier in self.verifiers)

    def describe(self) -> str:
        """The open claims, for an error message."""
        pending = [claim for claim in self.claims if claim["state"] == "pending"]
        if not pending:
            return "no claim is open"

        def state(claim: dict) -> str:
            if claim["challenged"]:
                return "challenged"
            return "judged" if self.judged(claim["claim_id"]) else "not judged by every verifier yet"

        return "open claims: " + ", ".join(
            f"{claim['claim_id']} (stage {claim['stage']} round {claim['round']}: {state(claim)})"
            for claim in pending
        )

    def tick(self) -> None:
        """One look at the open claims (at most once a second); moves chain time when that is safe."""
        now = time.monotonic()
        if now - self.last_tick < TICK_S:
            return
        self.last_tick = now
        self.claims = claims_of(self.protocol, self.model_id)
        pending = [claim for claim in self.claims if claim["state"] == "pending"]
        disputed = [claim["claim_id"] for claim in pending if claim["challenged"]]
        for claim_id in disputed:
            self.disputed_since.setdefault(claim_id, now)
        if disputed:
            stuck = [c for c in disputed if now - self.disputed_since[c] > VOTE_PATIENCE_S]
            if stuck and not set(stuck) <= self.skipped_for:
                self.echo(f"no vote settled claim(s) {', '.join(stuck)}: skipping the vote window")
                self.anvil.increase_time(self.vote_window + 1)
                self.skipped_for.update(stuck)
            return  # votes are in flight: skipping time now would void them
        due = [claim["claim_id"] for claim in pending if claim["claim_id"] not in self.skipped_for]
        if due and all(self.judged(claim["claim_id"]) for claim in pending):
            self.anvil.increase_time(self.challenge_window + 1)
            self.skipped_for.update(due)
