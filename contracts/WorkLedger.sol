// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {IWorkLedger} from "./interfaces/IWorkLedger.sol";
import {LedgerClaims} from "./ledger/LedgerClaims.sol";
import {LedgerStake} from "./ledger/LedgerStake.sol";

/// @title WorkLedger
/// @notice Turns verified training work into ownership: stake (LedgerStake), one stage per model
/// per address as worker or validator (LedgerSeats), chained multi-round claims (LedgerClaims),
/// and here the disputes: a stage validator challenges a claim, the stage's validators vote with
/// the weight of their stake, and resolve slashes the loser after the vote window.
/// @dev Disputes are keyed by claim id, outside the claim ring, so a dispute of a voided claim
/// can still be resolved (returning the challenger's bond) after its ring slot was reused.
/// Defences against a dispute decided by fresh addresses in one block: validators challenge
/// and vote only validatorDelay after registering; resolve waits for the vote window unless every
/// eligible validator of the stage voted; votes weigh by stake; a challenge without a decision
/// costs the challenger noQuorumSlashBps of its bond; losing voters lose loserVoteSlashBps of
/// their vote bond.
contract WorkLedger is LedgerClaims {
    struct Dispute {
        address challenger;
        ChallengeKind kind;
        uint40 voteDeadline;
        uint32 voters;
        ClaimStatus outcome; // None while open
        uint64 round;
        uint32 step;
        uint88 bond;
        uint40 openedAt;
        uint128 weightValid;
        uint128 weightInvalid;
    }

    struct Vote {
        uint88 bond;
        bool cast;
        bool claimValid;
        bool settled;
    }

    mapping(uint256 claimId => Dispute) private _disputes;
    mapping(uint256 claimId => mapping(address validator => Vote)) private _votes;

    constructor(address owner_, IModelRegistry registry_, address treasury_, Parameters memory params)
        LedgerStake(owner_, registry_, treasury_, params)
    {}

    /// @inheritdoc IWorkLedger
    function challenge(uint256 claimId, uint64 round, uint32 stepIndex, bytes32 evidenceCID) external {
        ClaimSlot storage slot = _slotOf(claimId);
        if (round < slot.firstRound || round > slot.lastRound) revert RoundOutsideClaim(claimId, round);
        _openDispute(claimId, slot, ChallengeKind.Divergence, round, stepIndex);
        emit ClaimChallenged(claimId, msg.sender, ChallengeKind.Divergence, round, stepIndex, evidenceCID);
    }

    /// @inheritdoc IWorkLedger
    function challengeUnavailable(uint256 claimId) external {
        ClaimSlot storage slot = _slotOf(claimId);
        // The grace in force now: one raised since the claim was submitted may end after the
        // claim's deadline, and then _openDispute refuses with ChallengeWindowClosed.
        uint64 graceEndsAt = slot.submittedAt + _params.availabilityGrace;
        if (block.timestamp < graceEndsAt) revert AvailabilityGraceNotOver(claimId, graceEndsAt);
        _openDispute(claimId, slot, ChallengeKind.Unavailable, 0, 0);
        emit ClaimChallenged(claimId, msg.sender, ChallengeKind.Unavailable, 0, 0, 0);
    }

    /// @inheritdoc IWorkLedger
    function vote(uint256 claimId, bool claimValid) external {
        ClaimStatus status = _statusOf(claimId);
        if (status != ClaimStatus.Challenged) revert WrongClaimStatus(claimId, status);
        Dispute storage dispute = _disputes[claimId];
        (address worker, uint256 modelId) = _ownerOf(claimId);
        if (msg.sender == worker || msg.sender == dispute.challenger) revert CannotVoteOnOwnDispute(claimId, msg.sender);
        // Only the stage's validators when the dispute opened vote on it: none registered after.
        _requireEligibleValidator(modelId, _lanes[claimId >> 64].stage, msg.sender, dispute.openedAt);
        if (block.timestamp > dispute.voteDeadline) revert VoteWindowClosed(claimId, dispute.voteDeadline);
        Vote storage ballot = _votes[claimId][msg.sender];
        if (ballot.cast) revert AlreadyVoted(claimId, msg.sender);
        uint88 bond = _params.voteBond;
        _lock(msg.sender, bond);
        uint96 weight = _stakes[msg.sender].staked;
        (ballot.bond, ballot.cast, ballot.claimValid) = (bond, true, claimValid);
        dispute.voters += 1;
        // The sum of the voters' stakes is below the ledger's ETH (< 2^96).
        if (claimValid) dispute.weightValid += weight;
        else dispute.weightInvalid += weight;
        emit VoteCast(claimId, msg.sender, claimValid, weight);
    }

    /// @inheritdoc IWorkLedger
    function resolve(uint256 claimId) external {
        Dispute storage dispute = _disputes[claimId];
        (uint64 laneId, uint64 seq) = _split(claimId);
        Lane storage lane = _lanes[laneId];
        if (dispute.challenger == address(0) || dispute.outcome != ClaimStatus.None) {
            revert WrongClaimStatus(claimId, _statusOf(claimId));
        }
        (address worker, uint256 modelId) = _ownerOf(claimId);
        if (seq <= lane.settled) {
            // An earlier claim of the lane was rejected while this one was disputed.
            dispute.outcome = ClaimStatus.Voided;
            emit ClaimResolved(claimId, ClaimStatus.Voided, false);
            _unlock(dispute.challenger, dispute.bond);
            return;
        }
        if (block.timestamp <= dispute.voteDeadline && !_everyEligibleVoted(claimId, modelId, lane.stage, worker)) {
            revert VoteWindowOpen(claimId, dispute.voteDeadline);
        }
        ClaimSlot storage slot = _rings[laneId][seq % MAX_PENDING_CLAIMS];
        (uint256 valid, uint256 invalid) = (dispute.weightValid, dispute.weightInvalid);
        if (dispute.voters < _params.quorum || valid == invalid) {
            _standWithoutDecision(claimId, slot, dispute, worker);
        } else if (valid > invalid) {
            (slot.status, dispute.outcome) = (ClaimStatus.Upheld, ClaimStatus.Upheld);
            emit ClaimResolved(claimId, ClaimStatus.Upheld, true);
            _slash(dispute.challenger, worker, dispute.bond);
        } else {
            if (seq != lane.settled + 1) revert EarlierClaimOpen(claimId, claimId - seq + lane.settled + 1);
            (slot.status, dispute.outcome) = (ClaimStatus.Rejected, ClaimStatus.Rejected);
            emit ClaimResolved(claimId, ClaimStatus.Rejected, true);
            emit ClaimRejected(claimId);
            _voidLater(claimId, lane, slot.bond, modelId, worker);
            _slash(worker, dispute.challenger, slot.bond);
            _unlock(dispute.challenger, dispute.bond);
        }
    }

    /// @inheritdoc IWorkLedger
    function settleVote(uint256 claimId) external {
        Vote storage ballot = _votes[claimId][msg.sender];
        if (!ballot.cast || ballot.settled) revert NothingToSettle(claimId, msg.sender);
        ClaimStatus outcome = _disputes[claimId].outcome;
        (uint64 laneId, uint64 seq) = _split(claimId);
        if (outcome == ClaimStatus.None && seq > _lanes[laneId].settled) {
            revert WrongClaimStatus(claimId, ClaimStatus.Challenged);
        }
        bool lost = (outcome == ClaimStatus.Upheld && !ballot.claimValid)
            || (outcome == ClaimStatus.Rejected && ballot.claimValid);
        uint256 slashed = lost ? uint256(ballot.bond) * _params.loserVoteSlashBps / BPS : 0;
        ballot.settled = true;
        emit VoteSettled(claimId, msg.sender, slashed);
        _unlock(msg.sender, ballot.bond - slashed);
        if (slashed != 0) _slash(msg.sender, treasury, slashed);
    }

    /// @inheritdoc IWorkLedger
    function getClaim(uint256 claimId) external view returns (Claim memory claim) {
        ClaimSlot storage slot = _slotOf(claimId);
        (claim.worker, claim.modelId) = _ownerOf(claimId);
        (claim.stage, claim.status) = (slot.stage, _statusOf(claimId));
        (claim.firstRound, claim.lastRound, claim.workUnits) = (slot.firstRound, slot.lastRound, slot.workUnits);
        (claim.submittedAt, claim.deadline, claim.bond) = (slot.submittedAt, slot.deadline, slot.bond);
        (claim.checkpointCID, claim.checkpointDigest, claim.roundsRoot) =
            (slot.checkpointCID, slot.checkpointDigest, slot.roundsRoot);
        if (slot.chained) claim.previousClaimId = claimId - 1;
        Dispute storage dispute = _disputes[claimId];
        (claim.challenger, claim.kind, claim.challengedRound, claim.challengedStep) =
            (dispute.challenger, dispute.kind, dispute.round, dispute.step);
        (claim.voteDeadline, claim.voters, claim.weightValid, claim.weightInvalid) =
            (dispute.voteDeadline, dispute.voters, dispute.weightValid, dispute.weightInvalid);
    }

    /// @dev Checks shared by both challenge kinds, then the dispute record and the challenger's bond.
    function _openDispute(uint256 claimId, ClaimSlot storage slot, ChallengeKind kind, uint64 round, uint32 step)
        private
    {
        ClaimStatus status = _statusOf(claimId);
        Dispute storage dispute = _disputes[claimId];
        if (dispute.challenger != address(0)) revert AlreadyChallenged(claimId, dispute.challenger);
        if (status != ClaimStatus.Pending) revert WrongClaimStatus(claimId, status);
        if (block.timestamp > slot.deadline) revert ChallengeWindowClosed(claimId, slot.deadline);
        (address worker, uint256 modelId) = _ownerOf(claimId);
        if (msg.sender == worker) revert CannotChallengeOwnClaim(claimId, msg.sender);
        _requireEligibleValidator(modelId, _lanes[claimId >> 64].stage, msg.sender, block.timestamp);
        _lock(msg.sender, slot.bond);
        slot.status = ClaimStatus.Challenged;
        (dispute.challenger, dispute.kind) = (msg.sender, kind);
        // Timestamps fit 40 bits until the year 36812; the vote window is capped at 30 days.
        (dispute.round, dispute.step, dispute.bond, dispute.openedAt) =
            (round, step, slot.bond, uint40(block.timestamp));
        dispute.voteDeadline = uint40(block.timestamp + _params.voteWindow);
    }

    /// @dev No decision: the claim is Pending again (due once past its deadline) and the
    /// challenger loses noQuorumSlashBps of its bond to the worker (less the burn).
    function _standWithoutDecision(uint256 claimId, ClaimSlot storage slot, Dispute storage dispute, address worker)
        private
    {
        uint256 penalty = uint256(dispute.bond) * _params.noQuorumSlashBps / BPS;
        (slot.status, dispute.outcome) = (ClaimStatus.Pending, ClaimStatus.Pending);
        emit ClaimResolved(claimId, ClaimStatus.Pending, penalty != 0);
        _unlock(dispute.challenger, dispute.bond - penalty);
        if (penalty != 0) _slash(dispute.challenger, worker, penalty);
    }

    /// @dev Voids every open claim of the lane after the rejected head in O(1): `settled` jumps to
    /// the tip (their stored statuses now read as Voided) and their bonds are released at once.
    function _voidLater(uint256 claimId, Lane storage lane, uint256 rejectedBond, uint256 modelId, address worker)
        private
    {
        (uint64 settled, uint64 tip) = (lane.settled, lane.tip);
        // openBonds includes the rejected claim's bond.
        uint256 released = lane.openBonds - rejectedBond;
        (lane.settled, lane.openBonds) = (tip, 0);
        // The rejected claim is settled + 1 and at most MAX_PENDING_CLAIMS are open.
        uint32 voided = uint32(tip - settled - 1);
        if (voided != 0) emit LaneVoided(modelId, worker, claimId, voided, released);
        _unlock(worker, released);
    }

    /// @dev Early resolution: every validator of the stage that could vote now (eligible when the
    /// dispute opened and holding minValidatorStake), other than the worker and the challenger, has
    /// voted. O(validators of the stage); after the vote window resolve does not need it.
    function _everyEligibleVoted(uint256 claimId, uint256 modelId, uint8 stage, address worker)
        private
        view
        returns (bool)
    {
        Dispute storage dispute = _disputes[claimId];
        (address challenger, uint256 openedAt) = (dispute.challenger, dispute.openedAt);
        uint256 minStake = _params.minValidatorStake;
        StageValidators storage validators = _validators[modelId][stage];
        for (uint256 i; i < validators.count; ++i) {
            address validator = validators.at[i];
            if (validator == worker || validator == challenger || _votes[claimId][validator].cast) continue;
            if (openedAt >= _seats[modelId][validator].eligibleAt && _stakes[validator].staked >= minStake) {
                return false;
            }
        }
        return true;
    }

    function _ownerOf(uint256 claimId) private view returns (address worker, uint256 modelId) {
        LaneOwner storage owner = _owners[claimId >> 64];
        return (owner.worker, owner.modelId);
    }
}
