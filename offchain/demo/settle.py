"""Let claims settle on a local chain without letting a false one slip through, and tell the story.

While training runs, claims pile up open, as on a testnet where a challenge window (a day) spans
many rounds (minutes). Once training is over (`settling`), the demo moves the chain's clock just
past the deadlines of the claims every validator of their stage has judged (they check each one,
probability 1), never past the deadline of a claim not judged yet nor past the vote deadline of a
dispute still missing votes: an unchecked claim never finalizes because time was skipped, and no
vote is cut off. Workers (and validators) then finalize what is due, a lane's run of claims in one
transaction, and a refuted claim is rejected once the claims before it are settled, voiding the
later ones. Only if no vote settles a dispute for a long while is its vote window skipped.

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
from offchain.demo.watch import Watch

TICK_S = 1.0
VOTE_PATIENCE_S = 90.0
MARGIN_S = 3  # chain seconds kept before a deadline that must not pass (blocks keep coming meanwhile)


def rounds_text(claim: dict) -> str:
    first, last = claim["first_round"], claim["last_round"]
    return f"round {first}" if first == last else f"rounds {first}..{last}"


class Settler:
    def __init__(
        self,
        protocol: Protocol,
        model_id: int,
        anvil: Anvil,
        watch: Watch,
        names: dict[str, str],
        echo: Callable[[str], None],
    ) -> None:
        self.protocol, self.model_id, self.anvil = protocol, model_id, anvil
        self.watch, self.names, self.echo = watch, names, echo
        parameters = call_struct(protocol.client, protocol.ledger.functions.parameters())
        self.vote_window = parameters["voteWindow"]
        self.skipped_for: set[str] = set()
        self.disputed_since: dict[str, float] = {}
        self.last_tick = 0.0
        self.claims: list[dict] = []
        self.told: dict[str, str] = {}  # claim id -> the state last echoed
        self.settling = False  # training is over: chain time may move

    def judged(self, claim: dict) -> bool:
        """Whether every live validator of the claim's stage (in the log of any of its processes: a
        restarted one does not judge a claim twice) has judged it; a stage with no live validator
        has nobody left to wait for, so its claims finalize unchecked once their window passes."""
        pattern = re.compile(rf"verdict claim={claim['claim_id']} ")
        return all(pattern.search(role.logs()) for role in self.watch.live_validators(claim["stage"]))

    def voted(self, claim: dict, view: dict) -> bool:
        """Whether every validator of the disputed claim's stage, but its challenger and its worker,
        has voted on it."""
        validators = self.protocol.ledger.functions.validatorsOf(self.model_id, claim["stage"]).call()
        voters = [v for v in validators if v not in (view["challenger"], view["worker"])]
        return view["voters"] >= len(voters)

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
        if self.settling and pending:
            self._move_clock(pending, now)

    def _move_clock(self, pending: list[dict], now: float) -> None:
        client, ledger = self.protocol.client, self.protocol.ledger
        views = {
            c["claim_id"]: call_struct(client, ledger.functions.getClaim(int(c["claim_id"]))) for c in pending
        }
        chain_now = client.w3.eth.get_block("latest")["timestamp"]
        limit, unvoted = float("inf"), []
        for claim in pending:
            view = views[claim["claim_id"]]
            if claim["challenged"]:
                if not self.voted(claim, view):
                    unvoted.append(claim["claim_id"])
                    limit = min(limit, view["voteDeadline"])
            elif not self.judged(claim):
                limit = min(limit, view["deadline"])
        ready = [
            views[c["claim_id"]]["deadline"]
            for c in pending
            if not c["challenged"] and chain_now <= views[c["claim_id"]]["deadline"] < limit - MARGIN_S
        ]
        if ready:
            self.anvil.increase_time(max(ready) + 1 - chain_now)
            return
        for claim_id in unvoted:
            self.disputed_since.setdefault(claim_id, now)
        stuck = [
            c for c in unvoted if now - self.disputed_since[c] > VOTE_PATIENCE_S and c not in self.skipped_for
        ]
        if stuck:
            self.echo(f"no vote settled claim(s) {', '.join(stuck)}: skipping the vote window")
            self.anvil.increase_time(self.vote_window + 1)
            self.skipped_for.update(stuck)
