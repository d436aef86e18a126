// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IModelRegistry} from "../interfaces/IModelRegistry.sol";
import {IWorkLedger} from "../interfaces/IWorkLedger.sol";
import {IModelShares} from "../interfaces/IModelShares.sol";
import {LedgerSeats} from "./LedgerSeats.sol";

/// @title LedgerClaims
/// @notice Chained multi-round claims in lanes: submit on the lane's tip, finalize runs of due
/// claims in lane order with one mint and one checkpoint record.
/// @dev A claim lives in slot seq % MAX_PENDING_CLAIMS of its lane's ring. Open claims are the
/// contiguous seqs settled+1..tip and there are at most MAX_PENDING_CLAIMS of them, so a slot is
/// reused only by a claim submitted after the one it held was settled: in steady state every
/// write of submitClaim rewrites a nonzero slot (5k gas instead of 22k). A settled claim whose
/// stored status is still open was voided (rejection voids by moving `settled`, not by writing).
abstract contract LedgerClaims is LedgerSeats {
    /// @dev Two slots of metadata (status..chained; rounds) and three of hashes.
    struct ClaimSlot {
        ClaimStatus status;
        uint40 submittedAt;
        uint40 deadline;
        uint64 workUnits;
        uint88 bond;
        bool chained;
        uint64 firstRound;
        uint64 lastRound;
        uint8 stage;
        bytes32 checkpointCID;
        bytes32 checkpointDigest;
        bytes32 roundsRoot;
    }

    /// @dev Whose lane it is; written with the lane's first claim.
    struct LaneOwner {
        address worker;
        uint96 modelId;
    }

    mapping(uint256 laneId => ClaimSlot[MAX_PENDING_CLAIMS]) internal _rings;
    mapping(uint256 laneId => LaneOwner) internal _owners;

    /// @inheritdoc IWorkLedger
    function submitClaim(ClaimInput calldata input) external returns (uint256 claimId) {
        Seat storage seat = _seats[input.modelId][msg.sender];
        if (!seat.member || seat.stage != input.stage) revert NotStageMember(input.modelId, input.stage, msg.sender);
        (,, IModelRegistry.ModelStatus status) = registry.sharesOf(input.modelId);
        if (status != IModelRegistry.ModelStatus.Active) revert ModelNotActive(input.modelId);
        _checkInput(input);

        uint64 laneId = seat.laneId;
        Lane storage lane = _lanes[laneId];
        (uint64 settled, uint64 tip) = (lane.settled, lane.tip);
        uint256 limit = _params.maxPendingClaims;
        if (tip - settled >= limit) revert TooManyPendingClaims(input.modelId, msg.sender, limit);
        bool chained = tip != settled;
        _checkParent(input, laneId, tip, chained);

        uint88 bond = _params.claimBond;
        _lock(msg.sender, bond);
        // tip < 2^64 - 1: a lane would need 2^64 claims to reach it.
        uint64 seq = tip + 1;
        lane.tip = seq;
        lane.openBonds += bond;
        lane.stage = input.stage;
        // Model ids count up from 1 in the registry, which knows this one (sharesOf above).
        if (tip == 0) _owners[laneId] = LaneOwner(msg.sender, uint96(input.modelId));
        ClaimSlot storage slot = _rings[laneId][seq % MAX_PENDING_CLAIMS];
        // Timestamps fit 40 bits until the year 36812; windows are capped at 30 days.
        (slot.status, slot.submittedAt, slot.deadline) =
            (ClaimStatus.Pending, uint40(block.timestamp), uint40(block.timestamp + _params.challengeWindow));
        (slot.workUnits, slot.bond, slot.chained) = (input.workUnits, bond, chained);
        (slot.firstRound, slot.lastRound, slot.stage) = (input.firstRound, input.lastRound, input.stage);
        (slot.checkpointCID, slot.checkpointDigest, slot.roundsRoot) =
            (input.checkpointCID, input.checkpointDigest, input.roundsRoot);
        claimId = _claimId(laneId, seq);
        _emitClaimSubmitted(claimId, chained ? claimId - 1 : 0, input);
    }

    /// @inheritdoc IWorkLedger
    function finalize(uint256 claimId) external nonReentrant {
        (uint64 laneId, uint64 seq) = _split(claimId);
        Lane storage lane = _lanes[laneId];
        uint64 settled = lane.settled;
        if (seq <= settled) revert WrongClaimStatus(claimId, _statusOf(claimId));
        if (seq > lane.tip) revert UnknownClaim(claimId);
        LaneOwner memory owner = _owners[laneId];
        (address shares, uint256 sharesPerWorkUnit) = registry.workTermsOf(owner.modelId);
        // Shares beyond what the token can hold (its supply cap, lowered by huge revenue per share)
        // are not minted, so a run can always finalize.
        uint256 room = IModelShares(shares).mintable();
        uint256 minted;
        uint256 bonds;
        ClaimSlot[MAX_PENDING_CLAIMS] storage ring = _rings[laneId];
        for (uint64 s = settled + 1; s <= seq; ++s) {
            ClaimSlot storage slot = ring[s % MAX_PENDING_CLAIMS];
            _requireDue(_claimId(laneId, s), slot);
            slot.status = ClaimStatus.Finalized;
            uint256 shares_ = uint256(slot.workUnits) * sharesPerWorkUnit;
            if (shares_ > room) shares_ = room;
            // shares_ <= room, and minted + room stays what mintable() returned (< 2^128).
            unchecked {
                room -= shares_;
                minted += shares_;
            }
            bonds += slot.bond;
            emit ClaimFinalized(_claimId(laneId, s), shares_);
        }
        lane.settled = seq;
        // bonds is the sum of these claims' bonds, all part of openBonds (< 2^96).
        lane.openBonds -= uint96(bonds);
        _unlock(owner.worker, bonds);
        emit ClaimsFinalized(owner.modelId, owner.worker, _claimId(laneId, settled + 1), claimId, seq - settled, minted);

        if (minted != 0) IModelShares(shares).mint(owner.worker, minted);
        ClaimSlot storage last = ring[seq % MAX_PENDING_CLAIMS];
        registry.recordCheckpoint(owner.modelId, lane.stage, last.lastRound, last.checkpointCID, last.checkpointDigest);
    }

    /// @inheritdoc IWorkLedger
    function laneOf(uint256 modelId, address worker) external view returns (LaneView memory view_) {
        Seat storage seat = _seats[modelId][worker];
        uint64 laneId = seat.laneId;
        if (laneId == 0) return view_;
        Lane storage lane = _lanes[laneId];
        view_.laneId = laneId;
        // At most MAX_PENDING_CLAIMS claims are open.
        view_.openCount = uint32(lane.tip - lane.settled);
        if (view_.openCount != 0) {
            view_.headClaimId = _claimId(laneId, lane.settled + 1);
            view_.tipClaimId = _claimId(laneId, lane.tip);
            ClaimSlot storage tip = _rings[laneId][lane.tip % MAX_PENDING_CLAIMS];
            (view_.tipRound, view_.tipCheckpointCID) = (tip.lastRound, tip.checkpointCID);
        } else {
            // A lane's owner holds one stage of the model for good (LedgerSeats): its seat's.
            (view_.tipCheckpointCID,, view_.tipRound) = registry.checkpointOf(modelId, seat.stage);
        }
    }

    /// @inheritdoc IWorkLedger
    function openClaimsOf(uint256 modelId, address worker) external view returns (uint256[] memory ids) {
        uint64 laneId = _seats[modelId][worker].laneId;
        Lane storage lane = _lanes[laneId];
        ids = new uint256[](lane.tip - lane.settled);
        for (uint256 i; i < ids.length; ++i) {
            ids[i] = _claimId(laneId, lane.settled + 1) + i;
        }
    }

    /// @dev A claim's status: a settled claim still stored as open was voided by a rejection.
    /// Reverts UnknownClaim for a seq never used or whose slot was reused.
    function _statusOf(uint256 claimId) internal view returns (ClaimStatus) {
        (uint64 laneId, uint64 seq) = _split(claimId);
        Lane storage lane = _lanes[laneId];
        ClaimStatus stored = _slotOf(claimId).status;
        if (seq <= lane.settled && _isOpen(stored)) return ClaimStatus.Voided;
        return stored;
    }

    /// @dev The ring slot holding `claimId`; UnknownClaim if it never existed or was reused.
    function _slotOf(uint256 claimId) internal view returns (ClaimSlot storage) {
        (uint64 laneId, uint64 seq) = _split(claimId);
        uint64 tip = _lanes[laneId].tip;
        if (seq == 0 || seq > tip || uint256(seq) + MAX_PENDING_CLAIMS <= tip) revert UnknownClaim(claimId);
        return _rings[laneId][seq % MAX_PENDING_CLAIMS];
    }

    function _split(uint256 claimId) internal pure returns (uint64 laneId, uint64 seq) {
        // A claim id is laneId << 64 | seq; higher bits make an id unknown, not another lane's.
        if (claimId >> 128 != 0) revert UnknownClaim(claimId);
        return (uint64(claimId >> 64), uint64(claimId));
    }

    function _claimId(uint64 laneId, uint64 seq) internal pure returns (uint256) {
        return uint256(laneId) << 64 | seq;
    }

    function _isOpen(ClaimStatus status) internal pure returns (bool) {
        return status == ClaimStatus.Pending || status == ClaimStatus.Challenged || status == ClaimStatus.Upheld;
    }

    /// @dev Due = Pending past its deadline, or Upheld; otherwise revert with the reason.
    function _requireDue(uint256 claimId, ClaimSlot storage slot) private view {
        ClaimStatus status = slot.status;
        if (status == ClaimStatus.Pending) {
            if (block.timestamp <= slot.deadline) revert ChallengeWindowOpen(claimId, slot.deadline);
        } else if (status != ClaimStatus.Upheld) {
            revert WrongClaimStatus(claimId, status);
        }
    }

    function _checkInput(ClaimInput calldata input) private view {
        uint64 maxWorkUnits = _params.maxWorkUnitsPerClaim;
        if (input.workUnits == 0 || input.workUnits > maxWorkUnits) {
            revert InvalidWorkUnits(input.workUnits, maxWorkUnits);
        }
        // Every round is at least one unit of work: rounds <= workUnits.
        if (input.lastRound < input.firstRound || input.lastRound - input.firstRound >= input.workUnits) {
            revert InvalidRoundRange(input.firstRound, input.lastRound);
        }
        if (input.checkpointCID == 0) revert EmptyCheckpointCID();
    }

    /// @dev The parent is the lane's tip when the lane has open claims, else the stage's finalized
    /// checkpoint; the claim's first round follows the parent's directly.
    function _checkParent(ClaimInput calldata input, uint64 laneId, uint64 tip, bool chained) private view {
        bytes32 parentCID;
        uint64 parentRound;
        if (chained) {
            ClaimSlot storage parent = _rings[laneId][tip % MAX_PENDING_CLAIMS];
            (parentCID, parentRound) = (parent.checkpointCID, parent.lastRound);
        } else {
            (parentCID,, parentRound) = registry.checkpointOf(input.modelId, input.stage);
        }
        if (input.parentCID != parentCID) revert ParentMismatch(parentCID, input.parentCID);
        // A round of 2^64 - 1 needs 2^64 / maxWorkUnitsPerClaim claims first: unreachable.
        uint64 expected = parentRound + 1;
        if (input.firstRound != expected) revert RoundsNotContiguous(input.firstRound, expected);
    }

    function _emitClaimSubmitted(uint256 claimId, uint256 previousClaimId, ClaimInput calldata input) private {
        emit ClaimSubmitted(
            claimId,
            input.modelId,
            input.stage,
            input.firstRound,
            input.lastRound,
            msg.sender,
            previousClaimId,
            input.parentCID,
            input.checkpointCID,
            input.checkpointDigest,
            input.roundsRoot,
            input.manifestCID,
            input.workUnits
        );
    }
}
