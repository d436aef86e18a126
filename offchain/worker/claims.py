"""The ledger side of a worker (IWorkLedger v2): group published rounds into claims and submit each as
soon as validators can fetch it, chained on the lane's own open claims; finalize due claims in runs;
follow challenges, rejections and the voids they cascade into.

The chain's rules shape the order. A lane (model, worker) holds up to maxPendingClaims open claims;
a claim's parent is the lane's newest open claim's checkpoint, or the stage's finalized checkpoint
when the lane is empty, and its first round is the parent's round + 1 (laneOf gives both). Claims
finalize in lane order, a run of due ones per transaction. A rejected claim voids every later open
claim of the lane: their rounds descend from a refuted state and are dead; a sole member takes its
stage back to the lane's tip (the last claim before the rejected one, or the finalized checkpoint)
and trains on from there, with replicas the swarm's majority state decides (the driver syncs it).

A published round joins a claim when it starts from the lane's tip (by state digest) or from the
round before it in the claim; a claim takes up to `rounds_per_claim` rounds (and no more work units
than maxWorkUnitsPerClaim), or fewer once its oldest round has waited `max_wait_s` of chain time.

A claim's "round" is the depth of the stage's lineage on-chain; the trace inside keeps the swarm
round it was trained in (the same number unless a sole member went back to an earlier checkpoint).

Every method here blocks on RPC calls (with ChainClient's retries): the daemon runs them in a
thread, one `tick` at a time. Deadlines are compared with the latest block's timestamp.

A tick costs one request (the block number) while nothing can have changed: no block since a tick
that left this worker nothing of its own to do (no unclaimed round, no claim prepared or being
sent). Everything else a tick reads only changes in a block, and the daemon ticks every second:
blocks come every 12 s on Ethereum, and only with transactions on anvil. A worker serving
inference between rounds polled three contract reads a second, on the thread that shares the
interpreter with its serving passes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from web3.logs import DISCARD

from offchain.chain.client import ContractRevert
from offchain.chain.protocol import ClaimStatus, Protocol
from offchain.chain.structs import call_struct
from offchain.crash import crash_point
from offchain.proofs.manifest import ClaimManifest
from offchain.proofs.rounds import claim_input, publish_manifest
from offchain.storage.cids import bytes32_to_cid, cid_to_bytes32
from offchain.storage.store import Store
from offchain.worker.availability import unfetchable
from offchain.worker.journal import ClaimEntry, ClaimJournal, ClaimState, RoundEntry

log = logging.getLogger("offchain.worker")

ZERO32 = bytes(32)


@dataclass(frozen=True)
class ClaimPolicy:
    """How many rounds a claim covers: `rounds_per_claim`, or fewer once the oldest of them has
    waited `max_wait_s` seconds of chain time (None: always a full claim)."""

    rounds_per_claim: int = 1
    max_wait_s: int | None = None


@dataclass(frozen=True)
class Lane:
    """IWorkLedger.laneOf: what the next claim must chain on."""

    open_count: int
    tip_claim_id: int
    tip_round: int
    tip_cid: str | None  # the parent the next claim names (None: the spec's seed)

    @classmethod
    def from_struct(cls, view: dict[str, Any]) -> Lane:
        cid = bytes(view["tipCheckpointCID"])
        return cls(
            view["openCount"],
            view["tipClaimId"],
            view["tipRound"],
            bytes32_to_cid(cid) if cid != ZERO32 else None,
        )


@dataclass(frozen=True)
class Checkpoint:
    """registry.checkpointOf(model, stage): the stage's latest finalized state (cid None before any)."""

    cid: str | None
    digest: bytes
    round: int


class ClaimKeeper:
    """Moves one worker's rounds of one (model, stage) through claims (see the module docstring)."""

    def __init__(
        self,
        protocol: Protocol,
        model_id: int,
        stage: int,
        journal: ClaimJournal,
        store: Store,
        *,
        seed_digest: bytes,
        policy: ClaimPolicy,
    ) -> None:
        self.protocol, self.client, self.ledger = protocol, protocol.client, protocol.ledger
        self.model_id, self.stage = model_id, stage
        self.journal, self.store = journal, store
        self.seed_digest = seed_digest
        self.policy = policy
        self.rebase = False  # set when a sole member must go back to its lane's tip
        self._said: set[str] = set()
        self._idle_at: int | None = None  # the block of the last tick that left nothing to do

    def _once(self, key: str, message: str, *args: Any) -> None:
        """Log a waiting condition once, until `_over(key)` says it ended."""
        if key not in self._said:
            self._said.add(key)
            log.warning(message, *args)

    def _over(self, key: str, message: str, *args: Any) -> None:
        if key in self._said:
            self._said.discard(key)
            log.info(message, *args)

    # ---- chain reads --------------------------------------------------------------------------

    def parameters(self) -> dict[str, Any]:
        return call_struct(self.client, self.ledger.functions.parameters(), "parameters")

    def checkpoint(self) -> Checkpoint:
        cid, digest, round_ = self.client.call(
            self.protocol.registry.functions.checkpointOf(self.model_id, self.stage), action="checkpointOf"
        )
        cid = bytes(cid)
        return Checkpoint(bytes32_to_cid(cid) if cid != ZERO32 else None, bytes(digest), round_)

    def lane(self) -> Lane:
        fn = self.ledger.functions.laneOf(self.model_id, self.client.address)
        return Lane.from_struct(call_struct(self.client, fn, "laneOf"))

    def claim(self, claim_id: int) -> dict[str, Any]:
        return call_struct(self.client, self.ledger.functions.getClaim(claim_id), "getClaim")

    def members(self) -> list[str]:
        fn = self.ledger.functions.membersOf(self.model_id, self.stage)
        return list(self.client.call(fn, action="membersOf"))

    def tip_digests(self, lane: Lane) -> set[bytes]:
        """Digests of the state the lane's next claim must start from: the tip claim's checkpoint
        (and the state this worker really committed there, which a `--cheat` claim misstates), or
        the stage's finalized checkpoint (the seed before any)."""
        if lane.tip_claim_id:
            entry = self.journal.claim_by_id(lane.tip_claim_id)
            if entry is None:
                return {bytes(self.claim(lane.tip_claim_id)["checkpointDigest"])}
            return {entry.state_digest, entry.manifest.checkpoint.checkpoint_digest}
        checkpoint = self.checkpoint()
        return {checkpoint.digest if checkpoint.cid else self.seed_digest}

    def live_chain(self, lane: Lane) -> list[ClaimEntry | RoundEntry]:
        """This worker's unsent claims and unclaimed rounds that descend from the lane's tip, in
        order: the states it may still train on (anything else can never be claimed)."""
        live, chain = self.tip_digests(lane), []
        for step in [
            *self.journal.claims_in(ClaimState.PREPARED, ClaimState.SENDING),
            *self.journal.unclaimed_rounds(),
        ]:
            if step.parent_digest in live:
                live.add(step.state_digest)
                chain.append(step)
        return chain

    def live_digests(self, lane: Lane) -> set[bytes]:
        return self.tip_digests(lane) | {step.state_digest for step in self.live_chain(lane)}

    def _now(self) -> int:
        return self.client.rpc("get_block", lambda: self.client.w3.eth.get_block("latest"))["timestamp"]

    def _block(self) -> int:
        return self.client.rpc("block_number", lambda: self.client.w3.eth.block_number)

    def _has_pending_transactions(self) -> bool:
        count = self.client.w3.eth.get_transaction_count
        address = self.client.address
        pending = self.client.rpc("nonce", lambda: count(address, "pending"))
        return pending > self.client.rpc("nonce", lambda: count(address, "latest"))

    def _logs(self, name: str, from_block: int, **filters: Any) -> list[Any]:
        event = getattr(self.ledger.events, name)()
        return self.client.rpc(
            f"get_logs {name}", lambda: event.get_logs(argument_filters=filters, from_block=from_block)
        )

    # ---- the loop's step ----------------------------------------------------------------------

    def tick(self) -> None:
        """One pass: settle a send a crash interrupted, follow the open claims (finalize the due
        ones), group new rounds into a claim, send it once it can be fetched. Nothing but the block
        number while nothing can have changed (see the module doc)."""
        block = self._block()
        if block == self._idle_at and not self._own_work():
            return
        self._idle_at = None
        params = self.parameters()
        for entry in self.journal.claims_in(ClaimState.SENDING):
            self._settle_sending(entry)
        if self.journal.claims_in(ClaimState.SENDING):
            return  # its fate decides what the lane's tip is
        self._follow()
        self._prepare(params)
        for entry in self.journal.claims_in(ClaimState.PREPARED):
            self._send(entry, params)
        if not self._own_work():
            self._idle_at = block

    def _own_work(self) -> bool:
        """Rounds or claims that wait on this worker, not on the chain: a round to group, a claim to
        send once validators can fetch it, a send to settle."""
        return bool(
            self.journal.claims_in(ClaimState.PREPARED, ClaimState.SENDING) or self.journal.unclaimed_rounds()
        )

    # ---- following the lane -------------------------------------------------------------------

    def _follow(self) -> None:
        fn = self.ledger.functions.openClaimsOf(self.model_id, self.client.address)
        open_ids = list(self.client.call(fn, action="openClaimsOf"))
        for entry in self.journal.claims_in(ClaimState.SUBMITTED):
            if entry.claim_id not in open_ids:
                self._settled(entry)
        self._watch_challenges(open_ids)
        now, due = self._now(), []
        for claim_id in open_ids:
            entry = self.journal.claim_by_id(claim_id)
            if entry is not None and not entry.challenged and now <= (entry.deadline or 0):
                break  # later claims have later deadlines
            claim = self.claim(claim_id)
            status = ClaimStatus(claim["status"])
            if status is ClaimStatus.UPHELD or (status is ClaimStatus.PENDING and now > claim["deadline"]):
                due.append(claim_id)
            else:
                break  # challenged, or not due yet: claims finalize in lane order
        if due:
            self._finalize(due)

    def _watch_challenges(self, open_ids: list[int]) -> None:
        watched = [
            entry
            for entry in self.journal.claims_in(ClaimState.SUBMITTED)
            if entry.claim_id in open_ids and not entry.challenged
        ]
        if not watched:
            return
        found = self._logs(
            "ClaimChallenged",
            min(entry.block for entry in watched),
            claimId=[entry.claim_id for entry in watched],
        )
        for event in found:
            entry = self.journal.claim_by_id(event["args"]["claimId"])
            if entry is None or entry.challenged:
                continue
            self.journal.update_claim(entry, challenged=True)
            args = event["args"]
            log.warning(
                "%s challenged: claim %d, round %d step %d, by %s",
                entry.rounds,
                entry.claim_id,
                args["round"],
                args["stepIndex"],
                args["challenger"],
            )

    def _settled(self, entry: ClaimEntry) -> None:
        """A submitted claim left the lane's open list: finalized (perhaps by a validator), rejected
        or voided."""
        claim = self.claim(entry.claim_id)
        status = ClaimStatus(claim["status"])
        if status is ClaimStatus.FINALIZED:
            self.journal.update_claim(entry, state=ClaimState.FINALIZED)
            log.info("%s finalized: claim %d (by another account)", entry.rounds, entry.claim_id)
        elif status is ClaimStatus.REJECTED:
            self._rejected(entry, bond=claim["bond"])
        elif status is ClaimStatus.VOIDED:
            self.journal.update_claim(entry, state=ClaimState.VOIDED)
            self.rebase = True
            log.error(
                "%s voided: claim %d, an earlier claim of the lane was rejected; no shares, bond released",
                entry.rounds,
                entry.claim_id,
            )

    def _rejected(self, entry: ClaimEntry, *, bond: int) -> None:
        resolved = self._logs("ClaimResolved", entry.block, claimId=entry.claim_id)
        slashed = any(event["args"]["slashed"] for event in resolved)
        voided = self._logs("LaneVoided", entry.block, modelId=self.model_id, worker=self.client.address)
        cascade = [event["args"] for event in voided if event["args"]["rejectedClaimId"] == entry.claim_id]
        self.journal.update_claim(entry, state=ClaimState.REJECTED)
        self.rebase = True
        log.error("%s rejected: claim %d, no shares", entry.rounds, entry.claim_id)
        if slashed:
            log.error("%s slashed: claim %d, bond of %d wei lost", entry.rounds, entry.claim_id, bond)
        for args in cascade:
            log.error(
                "claim %d's rejection voided %d later open claim(s) of the lane, %d wei of bonds released",
                entry.claim_id,
                args["voidedClaims"],
                args["bondsReleased"],
            )

    def _finalize(self, due: list[int]) -> None:
        """finalize(the last due claim): the chain finalizes it and every earlier open claim."""
        try:
            receipt = self.client.transact(self.ledger.functions.finalize(due[-1]), action="finalize")
        except ContractRevert as revert:  # a validator finalized first, or the block clock is behind
            log.debug("finalize of claims up to %d refused (%s); will look again", due[-1], revert)
            return
        finalized = self.ledger.events.ClaimFinalized().process_receipt(receipt, errors=DISCARD)
        entries = [self.journal.claim_by_id(event["args"]["claimId"]) for event in finalized]
        for entry in entries:
            if entry is not None:
                self.journal.update_claim(entry, state=ClaimState.FINALIZED)
        (run,) = self.ledger.events.ClaimsFinalized().process_receipt(receipt, errors=DISCARD)
        ours = [entry for entry in entries if entry is not None]
        log.info(
            "finalized %d claim(s) in one transaction (%s): %d shares minted, checkpoint %s, tx %s, gas %d",
            run["args"]["claims"],
            f"rounds {ours[0].manifest.first_round}..{ours[-1].manifest.last_round}" if ours else "?",
            run["args"]["sharesMinted"],
            ours[-1].manifest.checkpoint.checkpoint_cid if ours else "?",
            receipt["transactionHash"].to_0x_hex(),
            receipt["gasUsed"],
        )

    # ---- grouping rounds into a claim ---------------------------------------------------------

    def _prepare(self, params: dict[str, Any]) -> None:
        """Group the oldest unclaimed rounds that follow the lane's tip into the next claim."""
        if self.journal.claims_in(ClaimState.PREPARED):
            return  # one claim at a time: the next one chains on it
        unclaimed = self.journal.unclaimed_rounds()
        if not unclaimed:
            return
        lane = self.lane()
        parents = self.tip_digests(lane)
        start = next((i for i, entry in enumerate(unclaimed) if entry.parent_digest in parents), None)
        if start is None:
            self._unchainable(unclaimed, lane)
            return
        for entry in unclaimed[:start]:
            self._drop(entry, f"the lane's tip moved past it (it is at round {lane.tip_round})")
        group = self._group(unclaimed[start:], params)
        if not group:
            return
        manifest = ClaimManifest(
            self.model_id,
            self.stage,
            lane.tip_cid,
            tuple(entry.published.record(lane.tip_round + 1 + i) for i, entry in enumerate(group)),
        )
        claim = ClaimEntry(
            manifest,
            publish_manifest(self.store, manifest),
            tuple(entry.round for entry in group),
            group[0].parent_digest,
            group[-1].state_digest,
            self._block(),
        )
        self.journal.put_claim(claim)
        log.info(
            "%s (swarm rounds %d..%d) make one claim: manifest %s, %d work units",
            claim.rounds,
            claim.swarm_rounds[0],
            claim.swarm_rounds[-1],
            claim.manifest_cid,
            manifest.work_units,
        )
        crash_point("after-prepare")

    def _group(self, chain: list[RoundEntry], params: dict[str, Any]) -> list[RoundEntry]:
        """The rounds of the next claim from `chain` (its first round follows the tip); empty while
        the claim waits for more rounds."""
        group, limit = [chain[0]], params["maxWorkUnitsPerClaim"]
        units = chain[0].published.work_units
        for entry in chain[1:]:
            if len(group) == self.policy.rounds_per_claim:
                break
            if entry.parent_digest != group[-1].state_digest or units + entry.published.work_units > limit:
                return group  # the claim cannot grow: send it as it is
            group.append(entry)
            units += entry.published.work_units
        if len(group) >= self.policy.rounds_per_claim:
            return group
        budget = self.policy.max_wait_s
        if budget is not None and self._now() - group[0].published_at >= budget:
            return group
        return []

    def _unchainable(self, unclaimed: list[RoundEntry], lane: Lane) -> None:
        """No unclaimed round starts from the lane's tip. A sole member's rounds never will (they
        descend from a rejected or abandoned state): they are dropped and the stage goes back to the
        tip. With replicas, a round may still follow the stage's finalized checkpoint once this
        lane is empty and another replica's claim of its parent round finalized; past that, drop."""
        if len(self.members()) == 1:
            for entry in unclaimed:
                self._drop(entry, "it does not descend from the lane's tip")
            self.rebase = True
            return
        if lane.open_count:
            return
        for entry in unclaimed:
            if lane.tip_round >= entry.round - 1:
                self._drop(
                    entry, f"the stage's finalized checkpoint (round {lane.tip_round}) is not its parent"
                )

    def _drop(self, entry: RoundEntry, why: str) -> None:
        self.journal.drop_round(entry)
        log.warning("swarm round %d dropped: it cannot be claimed, %s", entry.round, why)

    # ---- submission ---------------------------------------------------------------------------

    def _send(self, entry: ClaimEntry, params: dict[str, Any]) -> None:
        manifest = entry.manifest
        lane = self.lane()
        if (lane.tip_round + 1, lane.tip_cid) != (manifest.first_round, manifest.parent_cid):
            self.journal.update_claim(entry, state=ClaimState.ABANDONED)
            log.warning(
                "%s abandoned before it was sent: the lane's tip is now round %d (%s)",
                entry.rounds,
                lane.tip_round,
                lane.tip_cid or "the seed",
            )
            return
        if lane.open_count >= params["maxPendingClaims"]:
            self._once(
                "lane-full",
                "%d claims open, the most a lane may hold (maxPendingClaims): %s waits for the oldest to "
                "finalize",
                lane.open_count,
                entry.rounds,
            )
            return
        self._over("lane-full", "the lane has room again: sending %s", entry.rounds)
        waiting = unfetchable(self.store, entry.cids)
        if waiting:
            self._once(
                "spool",
                "%s waits: %d of its %d files are only in the local spool (the Kubo daemon is unreachable), "
                "so no validator could fetch them; it is sent once they reach the daemon",
                entry.rounds,
                len(waiting),
                len(entry.cids),
            )
            return
        self._over("spool", "the spool drained: %s can be fetched, sending it", entry.rounds)
        self._ensure_bond(params)
        entry = self.journal.update_claim(entry, state=ClaimState.SENDING, tx=None)
        submit = self.ledger.functions.submitClaim(claim_input(manifest, entry.manifest_cid))
        try:
            tx = self.client.submit(submit, action="submitClaim")
        except ContractRevert as revert:
            self.journal.update_claim(entry, state=ClaimState.PREPARED)
            log.warning("%s: submitClaim refused: %s; will look again", entry.rounds, revert)
            return
        crash_point("after-send")
        entry = self.journal.update_claim(entry, tx=tx.to_0x_hex())
        try:
            receipt = self.client.wait(tx, action="submitClaim")
        except ContractRevert as revert:
            self.journal.update_claim(entry, state=ClaimState.PREPARED, tx=None)
            log.warning("%s: submitClaim reverted: %s; will look again", entry.rounds, revert)
            return
        (event,) = self.ledger.events.ClaimSubmitted().process_receipt(receipt, errors=DISCARD)
        args = event["args"]
        entry = self._submitted(entry, args["claimId"], entry.tx)
        log.info(
            "%s submitted: claim %d, chained on %s, %d work units, checkpoint %s, manifest %s, tx %s, gas %d",
            entry.rounds,
            entry.claim_id,
            f"claim {args['previousClaimId']}" if args["previousClaimId"] else "the finalized checkpoint",
            manifest.work_units,
            manifest.checkpoint.checkpoint_cid,
            entry.manifest_cid,
            entry.tx,
            receipt["gasUsed"],
        )

    def _submitted(self, entry: ClaimEntry, claim_id: int, tx: str | None) -> ClaimEntry:
        deadline = self.claim(claim_id)["deadline"]
        return self.journal.update_claim(
            entry, state=ClaimState.SUBMITTED, claim_id=claim_id, tx=tx, deadline=deadline
        )

    def _settle_sending(self, entry: ClaimEntry) -> None:
        """A submitClaim that may or may not have landed (a crash or an RPC drop hid its outcome):
        looked up by its manifest CID, which names exactly one claim."""
        if self._has_pending_transactions():
            return  # one of ours is still in the mempool: its fate decides
        manifest_cid = cid_to_bytes32(entry.manifest_cid)
        found = [
            event
            for event in self._logs(
                "ClaimSubmitted", entry.block, modelId=self.model_id, worker=self.client.address
            )
            if bytes(event["args"]["manifestCID"]) == manifest_cid
        ]
        if not found:
            self.journal.update_claim(entry, state=ClaimState.PREPARED, tx=None)
            log.warning(
                "%s: its submitClaim never landed (tx %s); it will be sent again", entry.rounds, entry.tx
            )
            return
        event = found[0]
        entry = self._submitted(entry, event["args"]["claimId"], event["transactionHash"].to_0x_hex())
        log.info(
            "%s submitted: claim %d already on-chain (found after restart), tx %s",
            entry.rounds,
            entry.claim_id,
            entry.tx,
        )

    def _ensure_bond(self, params: dict[str, Any]) -> None:
        """Top the stake up when its free part no longer covers a claim bond (each open claim locks
        one; a slash takes one)."""
        bond = params["claimBond"]
        account = call_struct(self.client, self.ledger.functions.stakeOf(self.client.address), "stakeOf")
        free = account["staked"] - account["locked"]
        if free < bond:
            receipt = self.client.transact(self.ledger.functions.stake(), value=bond - free, action="stake")
            log.info(
                "staked %d wei to cover the next claim bond, tx %s",
                bond - free,
                receipt["transactionHash"].to_0x_hex(),
            )
