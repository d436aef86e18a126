// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {IModelShares} from "./interfaces/IModelShares.sol";
import {IWorkLedger} from "./interfaces/IWorkLedger.sol";

/// @title WorkLedger
/// @notice Stake, stage membership, proof-of-work claims with challenges, votes and slashing,
/// and the minting of shares for work that survives the challenge window.
/// @dev ETH accounting: the ledger's balance always equals the sum over accounts of
/// staked + unbonding. Bonds are the `locked` part of `staked`; slashing moves stake between
/// accounts (the treasury's burn share is credited to the treasury's stake), so nothing but
/// withdraw() sends ETH out. Claims live in one lane per (model, worker), see IWorkLedger.
contract WorkLedger is IWorkLedger, Ownable2Step, ReentrancyGuardTransient {
    using SafeCast for uint256;

    uint256 private constant BPS = 10_000;
    uint256 private constant MAX_WINDOW = 30 days;
    uint256 private constant MAX_UNBONDING = 365 days;

    /// @dev A lane holds a worker's latest claim in one model; slots are rewritten every round.
    struct Lane {
        address worker;
        uint64 round;
        uint8 stage;
        ClaimStatus status;
        uint64 modelId;
        uint64 workUnits;
        uint40 deadline;
        uint88 bond;
        address challenger;
        uint40 voteDeadline;
        uint32 challengedStep;
        uint8 votesValid;
        uint8 votesInvalid;
        bytes32 checkpointDigest;
        string checkpointCID;
    }

    struct Member {
        uint64 laneId;
        uint32 index;
        uint8 stage;
        bool active;
    }

    /// @notice The registry of models, checkpoints and share tokens.
    IModelRegistry public immutable registry;
    /// @inheritdoc IWorkLedger
    address public immutable treasury;

    Parameters private _params;
    uint64 private _laneCount;
    mapping(address account => StakeAccount) private _stakes;
    mapping(uint256 modelId => mapping(address account => Member)) private _members;
    mapping(uint256 modelId => mapping(uint8 stage => address[])) private _stageMembers;
    mapping(uint256 laneId => Lane) private _lanes;
    mapping(uint256 claimId => mapping(address validator => bool)) private _voted;

    constructor(address owner_, IModelRegistry registry_, address treasury_, Parameters memory params)
        Ownable(owner_)
    {
        if (address(registry_) == address(0) || treasury_ == address(0)) revert ZeroAddress();
        registry = registry_;
        treasury = treasury_;
        _setParameter("challengeWindow", params.challengeWindow);
        _setParameter("voteWindow", params.voteWindow);
        _setParameter("unbondingPeriod", params.unbondingPeriod);
        _setParameter("claimBond", params.claimBond);
        _setParameter("minWorkerStake", params.minWorkerStake);
        _setParameter("minValidatorStake", params.minValidatorStake);
        _setParameter("maxWorkUnitsPerClaim", params.maxWorkUnitsPerClaim);
        _setParameter("quorum", params.quorum);
        _setParameter("burnBps", params.burnBps);
    }

    // ----------------------------------------------------------------------------- stake

    /// @inheritdoc IWorkLedger
    function stake() external payable {
        if (msg.value == 0) revert ZeroAmount();
        StakeAccount storage account = _stakes[msg.sender];
        account.staked += msg.value.toUint96();
        emit Staked(msg.sender, msg.value, account.staked);
    }

    /// @inheritdoc IWorkLedger
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        StakeAccount storage account = _stakes[msg.sender];
        uint256 free = account.staked - account.locked;
        if (amount > free) revert InsufficientStake(msg.sender, amount, free);
        uint256 remaining = account.staked - amount;
        uint256 required = _requiredStake(account);
        if (remaining < required) revert StakeStillRequired(msg.sender, required, remaining);
        // amount <= free <= staked < 2^96.
        account.staked = uint96(remaining);
        account.unbonding += uint128(amount);
        uint64 readyAt = uint64(block.timestamp) + _params.unbondingPeriod;
        account.readyAt = readyAt;
        emit UnstakeRequested(msg.sender, amount, readyAt);
    }

    /// @inheritdoc IWorkLedger
    function withdraw() external nonReentrant {
        StakeAccount storage account = _stakes[msg.sender];
        uint256 amount = account.unbonding;
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        if (block.timestamp < account.readyAt) revert UnbondingNotOver(msg.sender, account.readyAt);
        account.unbonding = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------------ membership

    /// @inheritdoc IWorkLedger
    function join(uint256 modelId, uint8 stage, bytes calldata peerId, bytes32 encryptionKey) external {
        (, uint8 numStages, IModelRegistry.ModelStatus status) = registry.sharesOf(modelId);
        if (status != IModelRegistry.ModelStatus.Active) revert ModelNotActive(modelId);
        if (stage >= numStages) revert StageOutOfRange(modelId, stage);
        Member storage member = _members[modelId][msg.sender];
        if (member.active) revert AlreadyMemberOfModel(modelId, msg.sender, member.stage);
        StakeAccount storage account = _stakes[msg.sender];
        uint256 minStake = _params.minWorkerStake;
        if (account.staked < minStake) revert InsufficientStake(msg.sender, minStake, account.staked);

        if (member.laneId == 0) member.laneId = ++_laneCount;
        address[] storage members = _stageMembers[modelId][stage];
        member.index = members.length.toUint32();
        member.stage = stage;
        member.active = true;
        members.push(msg.sender);
        account.memberships += 1;
        emit Joined(modelId, stage, msg.sender, peerId, encryptionKey);
    }

    /// @inheritdoc IWorkLedger
    function leave(uint256 modelId) external {
        Member storage member = _members[modelId][msg.sender];
        if (!member.active) revert NotModelMember(modelId, msg.sender);
        uint8 stage = member.stage;
        address[] storage members = _stageMembers[modelId][stage];
        address last = members[members.length - 1];
        members[member.index] = last;
        _members[modelId][last].index = member.index;
        members.pop();
        member.active = false;
        _stakes[msg.sender].memberships -= 1;
        emit Left(modelId, stage, msg.sender);
    }

    /// @inheritdoc IWorkLedger
    function membersOf(uint256 modelId, uint8 stage) external view returns (address[] memory) {
        return _stageMembers[modelId][stage];
    }

    /// @inheritdoc IWorkLedger
    function stageOf(uint256 modelId, address account) external view returns (bool member, uint8 stage) {
        Member storage record = _members[modelId][account];
        return (record.active, record.stage);
    }

    /// @inheritdoc IWorkLedger
    function registerValidator() external {
        StakeAccount storage account = _stakes[msg.sender];
        if (account.validator) revert AlreadyValidator(msg.sender);
        uint256 minStake = _params.minValidatorStake;
        if (account.staked < minStake) revert InsufficientStake(msg.sender, minStake, account.staked);
        account.validator = true;
        emit ValidatorRegistered(msg.sender);
    }

    // ---------------------------------------------------------------------------- claims

    /// @inheritdoc IWorkLedger
    function submitClaim(ClaimInput calldata input) external returns (uint256 claimId) {
        uint256 laneId = _checkClaim(input);
        uint88 bond = _params.claimBond;
        _lock(msg.sender, bond);
        Lane storage lane = _lanes[laneId];
        lane.worker = msg.sender;
        lane.round = input.round;
        lane.stage = input.stage;
        lane.status = ClaimStatus.Pending;
        lane.modelId = input.modelId.toUint64();
        lane.workUnits = input.workUnits;
        // Timestamps fit 40 bits until the year 36812; windows are capped at 30 days.
        lane.deadline = uint40(block.timestamp + _params.challengeWindow);
        lane.bond = bond;
        if (lane.challenger != address(0)) _clearDispute(lane);
        lane.checkpointDigest = input.checkpointDigest;
        lane.checkpointCID = input.checkpointCID;
        claimId = _claimId(laneId, input.round);
        _emitClaimSubmitted(claimId, input);
    }

    /// @inheritdoc IWorkLedger
    function challenge(uint256 claimId, uint32 stepIndex, string calldata evidenceCID) external {
        Lane storage lane = _claim(claimId);
        if (lane.status != ClaimStatus.Pending) revert WrongClaimStatus(claimId, lane.status);
        if (block.timestamp > lane.deadline) revert ChallengeWindowClosed(claimId, lane.deadline);
        if (!_stakes[msg.sender].validator) revert NotValidator(msg.sender);
        if (msg.sender == lane.worker) revert CannotChallengeOwnClaim(claimId, msg.sender);
        _lock(msg.sender, lane.bond);
        lane.status = ClaimStatus.Challenged;
        lane.challenger = msg.sender;
        lane.voteDeadline = uint40(block.timestamp + _params.voteWindow);
        lane.challengedStep = stepIndex;
        emit ClaimChallenged(claimId, msg.sender, stepIndex, evidenceCID);
    }

    /// @inheritdoc IWorkLedger
    function vote(uint256 claimId, bool claimValid) external {
        Lane storage lane = _claim(claimId);
        if (lane.status != ClaimStatus.Challenged) revert WrongClaimStatus(claimId, lane.status);
        if (!_stakes[msg.sender].validator) revert NotValidator(msg.sender);
        if (msg.sender == lane.worker || msg.sender == lane.challenger) {
            revert CannotVoteOnOwnDispute(claimId, msg.sender);
        }
        if (block.timestamp > lane.voteDeadline) revert VoteWindowClosed(claimId, lane.voteDeadline);
        if (_voted[claimId][msg.sender]) revert AlreadyVoted(claimId, msg.sender);
        _voted[claimId][msg.sender] = true;
        if (claimValid) lane.votesValid += 1;
        else lane.votesInvalid += 1;
        emit VoteCast(claimId, msg.sender, claimValid);
    }

    /// @inheritdoc IWorkLedger
    function resolve(uint256 claimId) external {
        Lane storage lane = _claim(claimId);
        if (lane.status != ClaimStatus.Challenged) revert WrongClaimStatus(claimId, lane.status);
        uint256 quorum = _params.quorum;
        (uint8 valid, uint8 invalid) = (lane.votesValid, lane.votesInvalid);
        uint256 bond = lane.bond;
        if (valid >= quorum && valid > invalid) {
            // The worker was right: the challenger's bond is slashed, the worker's stays locked until finalize.
            lane.status = ClaimStatus.Upheld;
            emit ClaimResolved(claimId, ClaimStatus.Upheld, true);
            _slash(lane.challenger, lane.worker, bond);
        } else if (invalid >= quorum && invalid > valid) {
            lane.status = ClaimStatus.Rejected;
            emit ClaimResolved(claimId, ClaimStatus.Rejected, true);
            emit ClaimRejected(claimId);
            _slash(lane.worker, lane.challenger, bond);
            _unlock(lane.challenger, bond);
        } else if (block.timestamp > lane.voteDeadline) {
            // No quorum in time: the claim mints nothing and nobody is slashed.
            lane.status = ClaimStatus.Rejected;
            emit ClaimResolved(claimId, ClaimStatus.Rejected, false);
            emit ClaimRejected(claimId);
            _unlock(lane.worker, bond);
            _unlock(lane.challenger, bond);
        } else {
            revert NotResolvable(claimId);
        }
    }

    /// @inheritdoc IWorkLedger
    function finalize(uint256 claimId) external nonReentrant {
        Lane storage lane = _claim(claimId);
        ClaimStatus status = lane.status;
        if (status == ClaimStatus.Pending) {
            if (block.timestamp <= lane.deadline) revert ChallengeWindowOpen(claimId, lane.deadline);
        } else if (status != ClaimStatus.Upheld) {
            revert WrongClaimStatus(claimId, status);
        }
        lane.status = ClaimStatus.Finalized;
        address worker = lane.worker;
        uint256 modelId = lane.modelId;
        _unlock(worker, lane.bond);
        (address shares, uint256 sharesPerWorkUnit) = registry.workTermsOf(modelId);
        uint256 minted = uint256(lane.workUnits) * sharesPerWorkUnit;
        emit ClaimFinalized(claimId, minted);
        IModelShares(shares).mint(worker, minted);
        registry.recordCheckpoint(modelId, lane.stage, lane.round, lane.checkpointCID, lane.checkpointDigest);
    }

    /// @inheritdoc IWorkLedger
    function getClaim(uint256 claimId) external view returns (Claim memory) {
        Lane storage lane = _claim(claimId);
        return Claim({
            worker: lane.worker,
            round: lane.round,
            stage: lane.stage,
            status: lane.status,
            modelId: lane.modelId,
            workUnits: lane.workUnits,
            deadline: lane.deadline,
            bond: lane.bond,
            challenger: lane.challenger,
            voteDeadline: lane.voteDeadline,
            challengedStep: lane.challengedStep,
            votesValid: lane.votesValid,
            votesInvalid: lane.votesInvalid,
            checkpointDigest: lane.checkpointDigest,
            checkpointCID: lane.checkpointCID
        });
    }

    // ------------------------------------------------------------------------ parameters

    /// @inheritdoc IWorkLedger
    function stakeOf(address account) external view returns (StakeAccount memory) {
        return _stakes[account];
    }

    /// @inheritdoc IWorkLedger
    function parameters() external view returns (Parameters memory) {
        return _params;
    }

    /// @inheritdoc IWorkLedger
    function setParameter(bytes32 name, uint256 value) external onlyOwner {
        _setParameter(name, value);
    }

    function _setParameter(bytes32 name, uint256 value) private {
        if (name == "challengeWindow") {
            _params.challengeWindow = uint64(_bounded(name, value, 1, MAX_WINDOW));
        } else if (name == "voteWindow") {
            _params.voteWindow = uint64(_bounded(name, value, 1, MAX_WINDOW));
        } else if (name == "unbondingPeriod") {
            _params.unbondingPeriod = uint64(_bounded(name, value, 0, MAX_UNBONDING));
        } else if (name == "claimBond") {
            _params.claimBond = uint88(_bounded(name, value, 1, type(uint88).max));
        } else if (name == "minWorkerStake") {
            _params.minWorkerStake = uint96(_bounded(name, value, 0, type(uint96).max));
        } else if (name == "minValidatorStake") {
            _params.minValidatorStake = uint96(_bounded(name, value, 0, type(uint96).max));
        } else if (name == "maxWorkUnitsPerClaim") {
            _params.maxWorkUnitsPerClaim = uint64(_bounded(name, value, 1, type(uint64).max));
        } else if (name == "quorum") {
            _params.quorum = uint8(_bounded(name, value, 1, type(uint8).max));
        } else if (name == "burnBps") {
            _params.burnBps = uint16(_bounded(name, value, 0, BPS));
        } else {
            revert UnknownParameter(name);
        }
        emit ParameterChanged(name, value);
    }

    // --------------------------------------------------------------------------- helpers

    /// @dev Every precondition of submitClaim; returns the caller's lane in the model.
    function _checkClaim(ClaimInput calldata input) private view returns (uint256 laneId) {
        Member storage member = _members[input.modelId][msg.sender];
        if (!member.active || member.stage != input.stage) {
            revert NotStageMember(input.modelId, input.stage, msg.sender);
        }
        (,, IModelRegistry.ModelStatus status) = registry.sharesOf(input.modelId);
        if (status != IModelRegistry.ModelStatus.Active) revert ModelNotActive(input.modelId);
        uint64 maxWorkUnits = _params.maxWorkUnitsPerClaim;
        if (input.workUnits == 0 || input.workUnits > maxWorkUnits) {
            revert InvalidWorkUnits(input.workUnits, maxWorkUnits);
        }
        if (bytes(input.checkpointCID).length == 0) revert EmptyCheckpointCID();

        laneId = member.laneId;
        Lane storage lane = _lanes[laneId];
        if (_isOpen(lane.status)) revert PreviousClaimOpen(_claimId(laneId, lane.round));
        (string memory parent,, uint64 parentRound) = registry.checkpointOf(input.modelId, input.stage);
        if (keccak256(bytes(parent)) != keccak256(bytes(input.parentCID))) {
            revert ParentMismatch(parent, input.parentCID);
        }
        uint64 lastRound = lane.round > parentRound ? lane.round : parentRound;
        if (input.round <= lastRound) revert RoundNotIncreasing(input.round, lastRound);
    }

    function _emitClaimSubmitted(uint256 claimId, ClaimInput calldata input) private {
        emit ClaimSubmitted(
            claimId,
            input.modelId,
            input.stage,
            input.round,
            msg.sender,
            input.parentCID,
            input.checkpointCID,
            input.checkpointDigest,
            input.traceRoot,
            input.traceCID,
            input.workUnits
        );
    }

    function _bounded(bytes32 name, uint256 value, uint256 min, uint256 max) private pure returns (uint256) {
        if (value < min || value > max) revert ParameterOutOfBounds(name, value);
        return value;
    }

    function _requiredStake(StakeAccount storage account) private view returns (uint256 required) {
        if (account.memberships != 0) required = _params.minWorkerStake;
        if (account.validator && _params.minValidatorStake > required) required = _params.minValidatorStake;
    }

    function _lock(address who, uint256 amount) private {
        StakeAccount storage account = _stakes[who];
        uint256 free = account.staked - account.locked;
        if (free < amount) revert InsufficientStake(who, amount, free);
        // amount <= free, so locked stays <= staked < 2^96.
        account.locked += uint96(amount);
    }

    function _unlock(address who, uint256 amount) private {
        // Only bonds locked by _lock are unlocked, so locked >= amount.
        _stakes[who].locked -= uint96(amount);
    }

    /// @dev Takes `amount` of `loser`'s locked bond: burnBps of it to the treasury's stake, the
    /// rest to `winner`'s stake.
    function _slash(address loser, address winner, uint256 amount) private {
        StakeAccount storage account = _stakes[loser];
        // The bond is locked, so staked >= locked >= amount; amount fits in 88 bits.
        account.locked -= uint96(amount);
        account.staked -= uint96(amount);
        uint256 toTreasury = amount * _params.burnBps / BPS;
        uint256 toWinner = amount - toTreasury;
        _stakes[winner].staked += uint96(toWinner);
        _stakes[treasury].staked += uint96(toTreasury);
        emit Slashed(loser, amount, winner, toWinner);
    }

    function _clearDispute(Lane storage lane) private {
        lane.challenger = address(0);
        lane.voteDeadline = 0;
        lane.challengedStep = 0;
        lane.votesValid = 0;
        lane.votesInvalid = 0;
    }

    function _claim(uint256 claimId) private view returns (Lane storage lane) {
        lane = _lanes[claimId >> 64];
        if (lane.status == ClaimStatus.None || lane.round != uint64(claimId)) revert UnknownClaim(claimId);
    }

    function _claimId(uint256 laneId, uint64 round) private pure returns (uint256) {
        return laneId << 64 | round;
    }

    function _isOpen(ClaimStatus status) private pure returns (bool) {
        return status == ClaimStatus.Pending || status == ClaimStatus.Challenged || status == ClaimStatus.Upheld;
    }
}
