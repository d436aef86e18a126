"""Let claims settle on a local chain without letting a false one slip through, and tell the story.

On a dev chain the challenge window is 30 s of *chain* time. The demo moves the chain's clock past
a window only once every validator of each open claim's stage has logged its verdict on it (they
check each one, probability 1), so an unchecked claim can never finalize just because time was
skipped; workers (and validators) then finalize what is due. A disputed claim is left to the
validators' vote; only if no vote settles it for a long while is the vote window skipped too.

Each look at the chain also echoes what changed: a claim submitted (while training runs), then
finalized, rejected or voided by the rejection of an earlier claim of its lane.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from offchain.chain.protocol import Protocol
from offchain.chain.status import claims_of
from offchain.chain.structs import call_struct
from offchain.demo.anvil import Anvil
from offchain.swarm.local import LocalProcess

TICK_S = 1.0
VOTE_PATIENCE_S = 90.0


def rounds_text(claim: dict) -> str:
    first, last = claim["first_round"], claim["last_round"]
    return f"round {first}" if first == last else f"rounds {first}..{last}"


class Settler:
    def __init__(
        self,
        protocol: Protocol,
        model_id: int,
        anvil: Anvil,
        validators: dict[int, list[LocalProcess]],
        names: dict[str, str],
        echo: Callable[[str], None],
    ) -> None:
        self.protocol, self.model_id, self.anvil = protocol, model_id, anvil
        self.validators, self.names, self.echo = validators, names, echo
        parameters = call_struct(protocol.client, protocol.ledger.functions.parameters())
        self.challenge_window, self.vote_window = parameters["challengeWindow"], parameters["voteWindow"]
        self.skipped_for: set[str] = set()
        self.disputed_since: dict[str, float] = {}
        self.last_tick = 0.0
        self.claims: list[dict] = []
        self.told: dict[str, str] = {}  # claim id -> the state last echoed

    def judged(self, claim: dict) -> bool:
        pattern = re.compile(rf"verdict claim={claim['claim_id']} ")
        return all(pattern.search(validator.text()) for validator in self.validators[claim["stage"]])

    def describe(self) -> str:
        """The open claims, for an error message."""
        pending = [claim for claim in self.claims if claim["state"] == "pending"]
        if not pending:
            return "no claim is open"

        def state(claim: dict) -> str:
            if claim["challenged"]:
                return "challenged"
            return "judged" if self.judged(claim) else "not judged by every validator of its stage yet"

        return "open claims: " + ", ".join(
            f"{claim['claim_id']} (stage {claim['stage']} {rounds_text(claim)}: {state(claim)})"
            for claim in pending
        )

    def _tell(self) -> None:
        """Echo each claim once when it appears and once when it settles."""
        for claim in self.claims:
            claim_id, state = claim["claim_id"], claim["state"]
            said = self.told.get(claim_id)
            if said == state:
                continue
            who = f"{self.names.get(claim['worker'], claim['worker'])} (stage {claim['stage']})"
            if said is None:
                self.echo(f"  claimed   {rounds_text(claim)} by {who}: claim {claim_id}")
            if state != "pending":
                style = {"finalized": "green", "rejected": "red", "voided": "yellow"}[state]
                self.echo(f"  [{style}]{state:<9}[/{style}] {rounds_text(claim)} by {who}: claim {claim_id}")
            self.told[claim_id] = state

    def tick(self) -> None:
        """One look at the open claims (at most once a second); moves chain time when that is safe."""
        now = time.monotonic()
        if now - self.last_tick < TICK_S:
            return
        self.last_tick = now
        self.claims = claims_of(self.protocol, self.model_id)
        self._tell()
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
        if due and all(self.judged(claim) for claim in pending):
            self.anvil.increase_time(self.challenge_window + 1)
            self.skipped_for.update(due)
