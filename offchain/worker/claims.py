"""The ledger side of a worker: submit each published round once the chain can take it, finalize the
worker's own claims once their challenge window has passed, and follow what happens to them.

What the chain allows (contracts/WorkLedger.sol) shapes the order: a claim names the stage's
finalized checkpoint as its parent and a lane (model, worker) holds one open claim, so round r is
submitted only after round r-1 finalized with the digest round r started from. Deadlines are
compared to the latest block's timestamp, never to this machine's clock.

Every method here blocks on RPC calls (with ChainClient's retries): the daemon runs them in a
thread, one `tick` at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

from web3.logs import DISCARD

from offchain.chain.client import ContractRevert
from offchain.chain.protocol import ClaimStatus, Protocol
from offchain.worker.journal import ClaimJournal, RoundEntry, RoundStatus

log = logging.getLogger("offchain.worker")

CRASH_ENV = "PM_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """TEST ONLY: with PM_TEST_CRASH_AT=<name> the process dies here as under `kill -9` (exit 137, no
    cleanup), so the crash tests stop a worker at an exact point of the claim flow. Points:
    `after-store` (round stored and journaled, not submitted), `after-send` (submitClaim sent, its
    hash and receipt not recorded)."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("%s=%s: the process dies here (test hook)", CRASH_ENV, name)
        logging.shutdown()
        os._exit(137)


@dataclass(frozen=True)
class ClaimView:
    """The fields of IWorkLedger.getClaim a worker acts on."""

    status: ClaimStatus
    deadline: int
    bond: int
    challenger: str
    vote_deadline: int
    challenged_step: int

    @classmethod
    def from_call(cls, raw: tuple) -> ClaimView:
        """From the Claim tuple in ABI order (worker, round, stage, status, modelId, workUnits,
        deadline, bond, challenger, voteDeadline, challengedStep, ...)."""
        return cls(ClaimStatus(raw[3]), raw[6], raw[7], raw[8], raw[9], raw[10])


@dataclass(frozen=True)
class Checkpoint:
    """registry.checkpointOf(model, stage): the stage's latest finalized state ("" before any)."""

    cid: str
    digest: bytes
    round: int


class ClaimKeeper:
    """Moves the journal's rounds through the claim life cycle for one (model, stage) of one worker."""

    def __init__(
        self, protocol: Protocol, model_id: int, stage: int, journal: ClaimJournal, *, seed_digest: bytes
    ) -> None:
        self.protocol = protocol
        self.client = protocol.client
        self.ledger = protocol.ledger
        self.model_id, self.stage = model_id, stage
        self.journal = journal
        self.seed_digest = seed_digest
        self.rebase = False  # set when the stage must go back to the last finalized checkpoint

    # ---- chain reads --------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        cid, digest, round_ = self.client.call(
            self.protocol.registry.functions.checkpointOf(self.model_id, self.stage), action="checkpointOf"
        )
        return Checkpoint(cid, bytes(digest), round_)

    def _latest_timestamp(self) -> int:
        return self.client.rpc("get_block", lambda: self.client.w3.eth.get_block("latest"))["timestamp"]

    def _has_pending_transactions(self) -> bool:
        count = self.client.w3.eth.get_transaction_count
        address = self.client.address
        pending = self.client.rpc("nonce", lambda: count(address, "pending"))
        return pending > self.client.rpc("nonce", lambda: count(address, "latest"))

    def _find_claim(self, entry: RoundEntry) -> tuple[int, str] | None:
        """(claimId, tx hash) of this worker's claim for the entry's round, from ClaimSubmitted events."""
        events = self.ledger.events.ClaimSubmitted()
        found = self.client.rpc(
            "get_logs ClaimSubmitted",
            lambda: events.get_logs(
                argument_filters={"modelId": self.model_id, "worker": self.client.address},
                from_block=entry.block,
            ),
        )
        for event in found:
            if event["args"]["round"] == entry.round and event["args"]["stage"] == self.stage:
                return event["args"]["claimId"], event["transactionHash"].to_0x_hex()
        return None

    # ---- the loop's step ----------------------------------------------------------------------

    def tick(self) -> None:
        """One pass: settle sends a crash interrupted, follow the open claim, submit the next round."""
        for entry in self.journal.open_entries():
            if entry.status is RoundStatus.SENDING:
                self._settle_sending(entry)
            elif entry.status is RoundStatus.SUBMITTED:
                self._follow(entry)
        self._submit_next()

    def _settle_sending(self, entry: RoundEntry) -> None:
        """A submitClaim that may or may not have landed (a crash or an RPC drop hid its outcome)."""
        if self._has_pending_transactions():
            return  # one of ours is still in the mempool: its fate decides
        found = self._find_claim(entry)
        if found is None:
            self.journal.update(entry, status=RoundStatus.PUBLISHED, tx=None)
            log.warning(
                "round %d: its submitClaim never landed (tx %s); it will be sent again", entry.round, entry.tx
            )
            return
        claim_id, tx = found
        self.journal.update(entry, status=RoundStatus.SUBMITTED, claim_id=claim_id, tx=tx)
        log.info(
            "round %d submitted: claim %d already on-chain (found after restart), tx %s",
            entry.round,
            claim_id,
            tx,
        )

    def _follow(self, entry: RoundEntry) -> None:
        raw = self.client.call(self.ledger.functions.getClaim(entry.claim_id), action="getClaim")
        claim = ClaimView.from_call(raw)
        pending = claim.status is ClaimStatus.PENDING
        if (pending and self._latest_timestamp() > claim.deadline) or claim.status is ClaimStatus.UPHELD:
            self._finalize(entry)
        elif claim.status is ClaimStatus.CHALLENGED and not entry.challenged:
            self.journal.update(entry, challenged=True)
            log.warning(
                "round %d challenged: claim %d, step %d, by %s; votes close at %d",
                entry.round,
                entry.claim_id,
                claim.challenged_step,
                claim.challenger,
                claim.vote_deadline,
            )
        elif claim.status is ClaimStatus.FINALIZED:
            self.journal.update(entry, status=RoundStatus.FINALIZED)
            log.info("round %d finalized: claim %d (by another account)", entry.round, entry.claim_id)
        elif claim.status is ClaimStatus.REJECTED:
            self._rejected(entry, bond=claim.bond)

    def _finalize(self, entry: RoundEntry) -> None:
        try:
            receipt = self.client.transact(self.ledger.functions.finalize(entry.claim_id), action="finalize")
        except ContractRevert as revert:  # someone finalized it first, or the block clock is behind
            log.debug("round %d: finalize refused (%s); will look again", entry.round, revert)
            return
        (event,) = self.ledger.events.ClaimFinalized().process_receipt(receipt, errors=DISCARD)
        self.journal.update(entry, status=RoundStatus.FINALIZED)
        log.info(
            "round %d finalized: claim %d, %d shares minted, checkpoint %s, tx %s, gas %d",
            entry.round,
            entry.claim_id,
            event["args"]["sharesMinted"],
            entry.published.checkpoint_cid,
            receipt["transactionHash"].to_0x_hex(),
            receipt["gasUsed"],
        )

    def _rejected(self, entry: RoundEntry, *, bond: int) -> None:
        events = self.ledger.events.ClaimResolved()
        resolved = self.client.rpc(
            "get_logs ClaimResolved",
            lambda: events.get_logs(argument_filters={"claimId": entry.claim_id}, from_block=entry.block),
        )
        slashed = any(event["args"]["slashed"] for event in resolved)
        self.journal.update(entry, status=RoundStatus.REJECTED)
        self.rebase = True
        log.error("round %d rejected: claim %d, no shares", entry.round, entry.claim_id)
        if slashed:
            log.error("round %d slashed: claim %d, bond of %d wei lost", entry.round, entry.claim_id, bond)

    # ---- submission ---------------------------------------------------------------------------

    def _submit_next(self) -> None:
        entries = self.journal.open_entries()
        if any(entry.status in (RoundStatus.SENDING, RoundStatus.SUBMITTED) for entry in entries):
            return  # the lane holds one open claim at a time
        waiting = [entry for entry in entries if entry.status is RoundStatus.PUBLISHED]
        if not waiting:
            return
        entry, checkpoint = waiting[0], self.checkpoint()
        if checkpoint.round >= entry.round:
            self._skip(entry, f"the stage's checkpoint is already at round {checkpoint.round}", rebase=False)
            return
        parent = checkpoint.digest if checkpoint.cid else self.seed_digest
        if parent == entry.parent_digest:
            self._send(entry, checkpoint)
        elif not self._parent_may_land(entry, checkpoint):
            self._skip(
                entry,
                f"it started from {entry.parent_digest.hex()[:16]}, which never became the stage's "
                f"checkpoint (round {checkpoint.round}, {parent.hex()[:16]})",
                rebase=True,
            )

    def _parent_may_land(self, entry: RoundEntry, checkpoint: Checkpoint) -> bool:
        """Whether another replica's open claim could still finalize the state this round started from
        (this worker's own earlier rounds are all settled when this is asked)."""
        members = self.client.call(
            self.ledger.functions.membersOf(self.model_id, self.stage), action="membersOf"
        )
        return len(members) > 1 and checkpoint.round < entry.round - 1

    def _skip(self, entry: RoundEntry, why: str, *, rebase: bool) -> None:
        self.journal.update(entry, status=RoundStatus.SKIPPED)
        self.rebase = self.rebase or rebase
        log.warning("round %d skipped: cannot be claimed, %s", entry.round, why)

    def _ensure_bond(self) -> None:
        """Top the stake up when its free part no longer covers a claim bond (after a slash)."""
        bond = self.client.call(self.ledger.functions.parameters(), action="parameters")[1]
        staked, locked = self.client.call(
            self.ledger.functions.stakeOf(self.client.address), action="stakeOf"
        )[:2]
        if staked - locked < bond:
            missing = bond - (staked - locked)
            receipt = self.client.transact(self.ledger.functions.stake(), value=missing, action="stake")
            log.info(
                "staked %d wei to cover the claim bond, tx %s",
                missing,
                receipt["transactionHash"].to_0x_hex(),
            )

    def _send(self, entry: RoundEntry, checkpoint: Checkpoint) -> None:
        self._ensure_bond()
        published = replace(entry.published, parent_cid=checkpoint.cid)
        entry = self.journal.update(entry, published=published, status=RoundStatus.SENDING, tx=None)
        submit = self.ledger.functions.submitClaim(published.claim_input())
        try:
            tx = self.client.submit(submit, action="submitClaim")
        except ContractRevert as revert:
            self.journal.update(entry, status=RoundStatus.PUBLISHED)
            log.warning("round %d: submitClaim refused: %s; will look again", entry.round, revert)
            return
        crash_point("after-send")
        entry = self.journal.update(entry, tx=tx.to_0x_hex())
        try:
            receipt = self.client.wait(tx, action="submitClaim")
        except ContractRevert as revert:
            self.journal.update(entry, status=RoundStatus.PUBLISHED, tx=None)
            log.warning("round %d: submitClaim reverted: %s; will look again", entry.round, revert)
            return
        (event,) = self.ledger.events.ClaimSubmitted().process_receipt(receipt, errors=DISCARD)
        claim_id = event["args"]["claimId"]
        self.journal.update(entry, status=RoundStatus.SUBMITTED, claim_id=claim_id)
        log.info(
            "round %d submitted: claim %d, checkpoint %s, trace %s, parent %s, %d work units, tx %s, gas %d",
            entry.round,
            claim_id,
            published.checkpoint_cid,
            published.trace_cid,
            published.parent_cid or "(seed)",
            published.work_units,
            entry.tx,
            receipt["gasUsed"],
        )
