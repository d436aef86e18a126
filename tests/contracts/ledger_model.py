"""A Python model of WorkLedger v2 for the stateful test: for every action it predicts either the
custom error the contract must revert with (checks in the contract's order) or the exact effect.

Time is the model's: every transaction is mined at a timestamp the test sets (`now`), so deadline
edges are predicted exactly. Stored claim statuses are kept as the contract keeps them; a settled
claim still stored as open reads as Voided, as in the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from offchain.chain.protocol import ClaimStatus

OPEN = (ClaimStatus.PENDING, ClaimStatus.CHALLENGED, ClaimStatus.UPHELD)
RING = 64
BPS = 10_000


class Revert(Exception):
    """The custom error the contract is expected to revert with."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


@dataclass
class Account:
    staked: int = 0
    locked: int = 0
    unbonding: int = 0
    ready_at: int = 0
    memberships: int = 0


@dataclass
class Seat:
    member: bool = False
    validator: bool = False
    stage: int = 0
    eligible_at: int = 0
    lane: int = 0


@dataclass
class Vote:
    valid: bool
    bond: int
    settled: bool = False


@dataclass
class Dispute:
    challenger: str
    opened_at: int
    vote_deadline: int
    bond: int
    voters: int = 0
    valid: int = 0
    invalid: int = 0
    outcome: ClaimStatus = ClaimStatus.NONE
    votes: dict[str, Vote] = field(default_factory=dict)


@dataclass
class Claim:
    claim_id: int
    lane: int
    seq: int
    model: int
    stage: int
    worker: str
    first: int
    last: int
    units: int
    bond: int
    submitted: int
    deadline: int
    cid: str
    chained: bool
    status: ClaimStatus = ClaimStatus.PENDING
    dispute: Dispute | None = None


@dataclass
class Lane:
    lane_id: int
    worker: str
    model: int
    settled: int = 0
    tip: int = 0
    stage: int = 0
    claims: dict[int, Claim] = field(default_factory=dict)

    @property
    def open_count(self) -> int:
        return self.tip - self.settled


class LedgerModel:
    def __init__(self, params, models: dict[int, tuple[int, int]], treasury: str, zero: str) -> None:
        """`models`: model id -> (stages, shares per work unit)."""
        self.p = params
        self.models = models
        self.treasury = treasury
        self.zero = zero
        self.now = 0
        self.accounts: dict[str, Account] = {treasury: Account()}
        self.seats: dict[tuple[int, str], Seat] = {}
        self.lanes: dict[int, Lane] = {}
        self.lane_count = 0
        self.claims: dict[int, Claim] = {}
        self.checkpoints = {(m, s): (zero, 0) for m, (stages, _) in models.items() for s in range(stages)}
        self.minted = dict.fromkeys(models, 0)
        self.deposited = 0
        self.withdrawn = 0

    # ------------------------------------------------------------------ helpers
    def account(self, who: str) -> Account:
        return self.accounts.setdefault(who, Account())

    def seat(self, model: int, who: str) -> Seat:
        return self.seats.setdefault((model, who), Seat())

    def status(self, claim: Claim) -> ClaimStatus:
        lane = self.lanes[claim.lane]
        if claim.seq <= lane.settled and claim.status in OPEN:
            return ClaimStatus.VOIDED
        return claim.status

    def live(self, claim: Claim) -> bool:
        """Whether the claim's ring slot still holds it."""
        return claim.seq + RING > self.lanes[claim.lane].tip

    def status_or_unknown(self, claim: Claim) -> ClaimStatus:
        if not self.live(claim):
            raise Revert("UnknownClaim")
        return self.status(claim)

    def lock(self, who: str, amount: int) -> None:
        account = self.account(who)
        if account.staked - account.locked < amount:
            raise Revert("InsufficientStake")
        account.locked += amount

    def slash(self, loser: str, winner: str, amount: int) -> None:
        account = self.account(loser)
        account.locked -= amount
        account.staked -= amount
        burn = amount * self.p.burn_bps // BPS
        self.account(winner).staked += amount - burn
        self.account(self.treasury).staked += burn

    @staticmethod
    def holds_other_stage(seat: Seat, stage: int) -> bool:
        """The first stage an address takes in a model (as worker or validator) is its stage for good."""
        return (seat.lane != 0 or seat.eligible_at != 0) and seat.stage != stage

    def parent_of(self, model: int, who: str, stage: int) -> tuple[str, int]:
        """(parent CID, parent round) the next claim of the lane must name."""
        lane = self.lanes.get(self.seat(model, who).lane)
        if lane is not None and lane.open_count:
            tip = lane.claims[lane.tip]
            return tip.cid, tip.last
        return self.checkpoints[(model, stage)]

    def eligible(self, model: int, stage: int, who: str, since: int) -> None:
        """`since`: when the validator must have been eligible (now to challenge, the challenge's
        time to vote)."""
        seat = self.seat(model, who)
        if not seat.validator or seat.stage != stage:
            raise Revert("NotStageValidator")
        if since < seat.eligible_at:
            raise Revert("ValidatorTooNew")
        if self.account(who).staked < self.p.min_validator_stake:
            raise Revert("InsufficientStake")

    # ------------------------------------------------------------------ stake
    def stake(self, who: str, amount: int) -> None:
        if amount == 0:
            raise Revert("ZeroAmount")
        self.account(who).staked += amount
        self.deposited += amount

    def request_unstake(self, who: str, amount: int) -> None:
        account = self.account(who)
        if amount == 0:
            raise Revert("ZeroAmount")
        if amount > account.staked - account.locked:
            raise Revert("InsufficientStake")
        required = self.p.min_worker_stake if account.memberships else 0
        if account.staked - amount < required:
            raise Revert("StakeStillRequired")
        account.staked -= amount
        account.unbonding += amount
        account.ready_at = self.now + max(self.p.unbonding_period, self.p.vote_window + 1)

    def withdraw(self, who: str) -> None:
        account = self.account(who)
        if account.unbonding == 0:
            raise Revert("NothingToWithdraw")
        if self.now < account.ready_at:
            raise Revert("UnbondingNotOver")
        self.withdrawn += account.unbonding
        account.unbonding = 0

    # ------------------------------------------------------------------ seats
    def join(self, who: str, model: int, stage: int) -> None:
        if stage >= self.models[model][0]:
            raise Revert("StageOutOfRange")
        seat = self.seat(model, who)
        if seat.member:
            raise Revert("AlreadyMemberOfModel")
        if self.holds_other_stage(seat, stage):
            raise Revert("AlreadyHoldsOtherStage")
        if self.account(who).staked < self.p.min_worker_stake:
            raise Revert("InsufficientStake")
        if seat.lane == 0:
            self.lane_count += 1
            seat.lane = self.lane_count
            self.lanes[seat.lane] = Lane(seat.lane, who, model)
        seat.member, seat.stage = True, stage
        self.account(who).memberships += 1

    def leave(self, who: str, model: int) -> None:
        seat = self.seat(model, who)
        if not seat.member:
            raise Revert("NotModelMember")
        seat.member = False
        self.account(who).memberships -= 1

    def register_validator(self, who: str, model: int, stage: int) -> None:
        if stage >= self.models[model][0]:
            raise Revert("StageOutOfRange")
        seat = self.seat(model, who)
        if seat.validator:
            raise Revert("AlreadyValidator")
        if self.holds_other_stage(seat, stage):
            raise Revert("AlreadyHoldsOtherStage")
        if self.account(who).staked < self.p.min_validator_stake:
            raise Revert("InsufficientStake")
        seat.validator, seat.stage, seat.eligible_at = True, stage, self.now + self.p.validator_delay

    def leave_validator(self, who: str, model: int) -> None:
        seat = self.seat(model, who)
        if not seat.validator:
            raise Revert("NotStageValidator")
        seat.validator = False

    def validators_of(self, model: int, stage: int) -> list[str]:
        return [w for (m, w), s in self.seats.items() if m == model and s.validator and s.stage == stage]

    # ------------------------------------------------------------------ claims
    def submit(
        self, who: str, model: int, stage: int, first: int, last: int, parent: str, cid: str, units: int
    ):
        seat = self.seat(model, who)
        if not seat.member or seat.stage != stage:
            raise Revert("NotStageMember")
        if units == 0 or units > self.p.max_work_units_per_claim:
            raise Revert("InvalidWorkUnits")
        if last < first or last - first >= units:
            raise Revert("InvalidRoundRange")
        lane = self.lanes[seat.lane]
        if lane.open_count >= self.p.max_pending_claims:
            raise Revert("TooManyPendingClaims")
        parent_cid, parent_round = self.parent_of(model, who, stage)
        if parent != parent_cid:
            raise Revert("ParentMismatch")
        if first != parent_round + 1:
            raise Revert("RoundsNotContiguous")
        bond = self.p.claim_bond
        self.lock(who, bond)
        chained = lane.open_count != 0
        lane.tip += 1
        lane.stage = stage
        claim_id = lane.lane_id << 64 | lane.tip
        claim = Claim(
            claim_id,
            lane.lane_id,
            lane.tip,
            model,
            stage,
            who,
            first,
            last,
            units,
            bond,
            self.now,
            self.now + self.p.challenge_window,
            cid,
            chained,
        )
        lane.claims[lane.tip] = claim
        self.claims[claim_id] = claim
        return claim

    def challenge(self, who: str, claim: Claim, round_: int | None) -> None:
        """round_ None: an Unavailable challenge."""
        if not self.live(claim):
            raise Revert("UnknownClaim")
        if round_ is None:
            if self.now < claim.submitted + self.p.availability_grace:
                raise Revert("AvailabilityGraceNotOver")
        elif not claim.first <= round_ <= claim.last:
            raise Revert("RoundOutsideClaim")
        status = self.status(claim)
        if claim.dispute is not None:
            raise Revert("AlreadyChallenged")
        if status != ClaimStatus.PENDING:
            raise Revert("WrongClaimStatus")
        if self.now > claim.deadline:
            raise Revert("ChallengeWindowClosed")
        if who == claim.worker:
            raise Revert("CannotChallengeOwnClaim")
        self.eligible(claim.model, self.lanes[claim.lane].stage, who, self.now)
        self.lock(who, claim.bond)
        claim.status = ClaimStatus.CHALLENGED
        claim.dispute = Dispute(who, self.now, self.now + self.p.vote_window, claim.bond)

    def vote(self, who: str, claim: Claim, valid: bool) -> None:
        status = self.status_or_unknown(claim)
        if status != ClaimStatus.CHALLENGED:
            raise Revert("WrongClaimStatus")
        dispute = claim.dispute
        if who in (claim.worker, dispute.challenger):
            raise Revert("CannotVoteOnOwnDispute")
        self.eligible(claim.model, self.lanes[claim.lane].stage, who, dispute.opened_at)
        if self.now > dispute.vote_deadline:
            raise Revert("VoteWindowClosed")
        if who in dispute.votes:
            raise Revert("AlreadyVoted")
        self.lock(who, self.p.vote_bond)
        weight = self.account(who).staked
        dispute.votes[who] = Vote(valid, self.p.vote_bond)
        dispute.voters += 1
        if valid:
            dispute.valid += weight
        else:
            dispute.invalid += weight

    def every_eligible_voted(self, claim: Claim) -> bool:
        dispute = claim.dispute
        for validator in self.validators_of(claim.model, self.lanes[claim.lane].stage):
            if validator in (claim.worker, dispute.challenger) or validator in dispute.votes:
                continue
            can_vote = self.account(validator).staked >= self.p.min_validator_stake
            if dispute.opened_at >= self.seat(claim.model, validator).eligible_at and can_vote:
                return False
        return True

    def resolve(self, claim: Claim) -> ClaimStatus:
        dispute, lane = claim.dispute, self.lanes[claim.lane]
        if dispute is None or dispute.outcome != ClaimStatus.NONE:
            self.status_or_unknown(claim)
            raise Revert("WrongClaimStatus")
        if claim.seq <= lane.settled:
            dispute.outcome = ClaimStatus.VOIDED
            self.account(dispute.challenger).locked -= dispute.bond
            return ClaimStatus.VOIDED
        if self.now <= dispute.vote_deadline and not self.every_eligible_voted(claim):
            raise Revert("VoteWindowOpen")
        if dispute.voters < self.p.quorum or dispute.valid == dispute.invalid:
            penalty = dispute.bond * self.p.no_quorum_slash_bps // BPS
            claim.status = dispute.outcome = ClaimStatus.PENDING
            self.account(dispute.challenger).locked -= dispute.bond - penalty
            if penalty:
                self.slash(dispute.challenger, claim.worker, penalty)
        elif dispute.valid > dispute.invalid:
            claim.status = dispute.outcome = ClaimStatus.UPHELD
            self.slash(dispute.challenger, claim.worker, dispute.bond)
        else:
            if claim.seq != lane.settled + 1:
                raise Revert("EarlierClaimOpen")
            claim.status = dispute.outcome = ClaimStatus.REJECTED
            released = sum(lane.claims[s].bond for s in range(claim.seq + 1, lane.tip + 1))
            lane.settled = lane.tip
            self.account(claim.worker).locked -= released
            self.slash(claim.worker, dispute.challenger, claim.bond)
            self.account(dispute.challenger).locked -= dispute.bond
        return dispute.outcome

    def settle_vote(self, who: str, claim: Claim) -> int:
        dispute = claim.dispute
        vote = dispute.votes.get(who) if dispute else None
        if vote is None or vote.settled:
            raise Revert("NothingToSettle")
        if dispute.outcome == ClaimStatus.NONE and claim.seq > self.lanes[claim.lane].settled:
            raise Revert("WrongClaimStatus")
        lost = (dispute.outcome == ClaimStatus.UPHELD and not vote.valid) or (
            dispute.outcome == ClaimStatus.REJECTED and vote.valid
        )
        slashed = vote.bond * self.p.loser_vote_slash_bps // BPS if lost else 0
        vote.settled = True
        self.account(who).locked -= vote.bond - slashed
        if slashed:
            self.slash(who, self.treasury, slashed)
        return slashed

    def finalize(self, claim: Claim) -> list[Claim]:
        """The run of claims finalized, in lane order."""
        lane = self.lanes[claim.lane]
        if claim.seq <= lane.settled:
            self.status_or_unknown(claim)
            raise Revert("WrongClaimStatus")
        run = [lane.claims[s] for s in range(lane.settled + 1, claim.seq + 1)]
        for item in run:
            if item.status == ClaimStatus.PENDING:
                if self.now <= item.deadline:
                    raise Revert("ChallengeWindowOpen")
            elif item.status != ClaimStatus.UPHELD:
                raise Revert("WrongClaimStatus")
        rate = self.models[claim.model][1]
        for item in run:
            item.status = ClaimStatus.FINALIZED
            self.minted[claim.model] += item.units * rate
        lane.settled = claim.seq
        self.account(claim.worker).locked -= sum(item.bond for item in run)
        key = (claim.model, lane.stage)
        if claim.last > self.checkpoints[key][1]:
            self.checkpoints[key] = (claim.cid, claim.last)
        return run

    # ------------------------------------------------------------------ invariants
    def expected_locked(self, who: str) -> int:
        """Bonds of open claims, of unresolved challenges and of unsettled votes: what `locked` must be."""
        total = 0
        for claim in self.claims.values():
            if claim.worker == who and claim.seq > self.lanes[claim.lane].settled:
                total += claim.bond
            dispute = claim.dispute
            if dispute and dispute.challenger == who and dispute.outcome == ClaimStatus.NONE:
                total += dispute.bond
            if dispute and who in dispute.votes and not dispute.votes[who].settled:
                total += dispute.votes[who].bond
        return total
