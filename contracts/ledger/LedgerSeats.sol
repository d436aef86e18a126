// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IModelRegistry} from "../interfaces/IModelRegistry.sol";
import {IWorkLedger} from "../interfaces/IWorkLedger.sol";
import {LedgerStake} from "./LedgerStake.sol";

/// @title LedgerSeats
/// @notice Who holds which stage of a model: workers (join/leave) and validators
/// (registerValidator/leaveValidator), bound to ONE stage per model across both roles and for
/// good, so the weights of a model are never all in one hand.
/// @dev One storage slot per (model, account) — the seat — holds both roles and the account's
/// lane id; a worker that starts validating its own stage rewrites a slot it already has. A
/// stage's validator list keeps its count in a slot that also remembers the registry confirmed
/// the stage exists (stages never change), so only a stage's first registration asks the registry.
/// A validator's stake is checked, not counted: registering writes the seat and the stage's list
/// entry (two new slots) and nothing in the stake account, and minValidatorStake is required again
/// whenever it challenges or votes, so a validator that unstaked below it can do neither (the
/// bonds a dispute locks are what is at risk, not the registration).
abstract contract LedgerSeats is LedgerStake {
    using SafeCast for uint256;

    /// @dev An account's place in a model. `stage` is the stage of whichever role is active.
    struct Seat {
        uint64 laneId;
        uint32 memberIndex;
        uint32 validatorIndex;
        uint40 eligibleAt;
        uint8 stage;
        bool member;
        bool validator;
    }

    /// @dev A lane's open claims are seqs settled+1..tip, all of stage `stage`; openBonds is the
    /// sum of their bonds, which is what voiding them releases in O(1).
    struct Lane {
        uint64 settled;
        uint64 tip;
        uint96 openBonds;
        uint8 stage;
    }

    /// @dev Validators of one stage: `at[0..count)`, and whether the stage is known to exist.
    struct StageValidators {
        uint32 count;
        bool known;
        mapping(uint256 index => address) at;
    }

    uint64 private _laneCount;
    mapping(uint256 modelId => mapping(address account => Seat)) internal _seats;
    mapping(uint256 modelId => mapping(uint8 stage => address[])) private _members;
    mapping(uint256 modelId => mapping(uint8 stage => StageValidators)) internal _validators;
    mapping(uint256 laneId => Lane) internal _lanes;

    /// @inheritdoc IWorkLedger
    function join(uint256 modelId, uint8 stage, bytes calldata peerId, bytes32 encryptionKey) external {
        (, uint8 numStages, IModelRegistry.ModelStatus status) = registry.sharesOf(modelId);
        if (status != IModelRegistry.ModelStatus.Active) revert ModelNotActive(modelId);
        if (stage >= numStages) revert StageOutOfRange(modelId, stage);
        Seat storage seat = _seats[modelId][msg.sender];
        if (seat.member) revert AlreadyMemberOfModel(modelId, msg.sender, seat.stage);
        _requireSameStage(modelId, seat, stage);
        _requireStake(msg.sender, _params.minWorkerStake);

        if (seat.laneId == 0) seat.laneId = ++_laneCount;
        address[] storage members = _members[modelId][stage];
        seat.memberIndex = members.length.toUint32();
        seat.stage = stage;
        seat.member = true;
        members.push(msg.sender);
        _stakes[msg.sender].memberships += 1;
        emit Joined(modelId, stage, msg.sender, peerId, encryptionKey);
    }

    /// @inheritdoc IWorkLedger
    function leave(uint256 modelId) external {
        Seat storage seat = _seats[modelId][msg.sender];
        if (!seat.member) revert NotModelMember(modelId, msg.sender);
        uint8 stage = seat.stage;
        address[] storage members = _members[modelId][stage];
        address last = members[members.length - 1];
        members[seat.memberIndex] = last;
        _seats[modelId][last].memberIndex = seat.memberIndex;
        members.pop();
        seat.member = false;
        _stakes[msg.sender].memberships -= 1;
        emit Left(modelId, stage, msg.sender);
    }

    /// @inheritdoc IWorkLedger
    function membersOf(uint256 modelId, uint8 stage) external view returns (address[] memory) {
        return _members[modelId][stage];
    }

    /// @inheritdoc IWorkLedger
    function stageOf(uint256 modelId, address account) external view returns (bool member, uint8 stage) {
        Seat storage seat = _seats[modelId][account];
        return (seat.member, seat.stage);
    }

    /// @inheritdoc IWorkLedger
    /// @dev A validator may register for a model in any status: disputes of a paused model still
    /// need votes.
    function registerValidator(uint256 modelId, uint8 stage) external {
        StageValidators storage validators = _validators[modelId][stage];
        if (!validators.known) {
            (, uint8 numStages,) = registry.sharesOf(modelId);
            if (stage >= numStages) revert StageOutOfRange(modelId, stage);
            validators.known = true;
        }
        Seat storage seat = _seats[modelId][msg.sender];
        if (seat.validator) revert AlreadyValidator(modelId, msg.sender, seat.stage);
        _requireSameStage(modelId, seat, stage);
        _requireStake(msg.sender, _params.minValidatorStake);

        uint32 index = validators.count;
        uint40 eligibleAt = (block.timestamp + _params.validatorDelay).toUint40();
        (seat.validatorIndex, seat.eligibleAt, seat.stage, seat.validator) = (index, eligibleAt, stage, true);
        validators.at[index] = msg.sender;
        validators.count = index + 1;
        emit ValidatorRegistered(modelId, stage, msg.sender, eligibleAt);
    }

    /// @inheritdoc IWorkLedger
    function leaveValidator(uint256 modelId) external {
        Seat storage seat = _seats[modelId][msg.sender];
        uint8 stage = seat.stage;
        if (!seat.validator) revert NotStageValidator(modelId, stage, msg.sender);
        StageValidators storage validators = _validators[modelId][stage];
        // count >= 1: the caller is one of them.
        uint32 lastIndex = validators.count - 1;
        address last = validators.at[lastIndex];
        validators.at[seat.validatorIndex] = last;
        _seats[modelId][last].validatorIndex = seat.validatorIndex;
        validators.count = lastIndex;
        seat.validator = false;
        emit ValidatorLeft(modelId, stage, msg.sender);
    }

    /// @inheritdoc IWorkLedger
    function validatorsOf(uint256 modelId, uint8 stage) external view returns (address[] memory list) {
        StageValidators storage validators = _validators[modelId][stage];
        list = new address[](validators.count);
        for (uint256 i; i < list.length; ++i) {
            list[i] = validators.at[i];
        }
    }

    /// @inheritdoc IWorkLedger
    function validatorOf(uint256 modelId, address account)
        external
        view
        returns (bool registered, uint8 stage, uint64 eligibleAt)
    {
        Seat storage seat = _seats[modelId][account];
        return (seat.validator, seat.stage, seat.eligibleAt);
    }

    /// @dev Reverts unless `account` validates `stage` of the model, was eligible at time `since`
    /// (now for a challenge, the challenge's time for a vote) and holds minValidatorStake
    /// (registering does not lock it, see the contract's dev note).
    function _requireEligibleValidator(uint256 modelId, uint8 stage, address account, uint256 since)
        internal
        view
    {
        Seat storage seat = _seats[modelId][account];
        if (!seat.validator || seat.stage != stage) revert NotStageValidator(modelId, stage, account);
        if (since < seat.eligibleAt) revert ValidatorTooNew(account, seat.eligibleAt);
        _requireStake(account, _params.minValidatorStake);
    }

    /// @dev The one-stage rule, for good: the first stage an account takes in a model, as worker or
    /// validator, is the only one it may take there ever after. A leaver keeps the stage keys it was
    /// handed, so an address free to move on could collect the stages one after another. A seat was
    /// taken iff it has a lane (every join gives one) or an eligibleAt (every registration sets one),
    /// and its `stage` never changes after that, so its lane's claims are all of that stage too.
    function _requireSameStage(uint256 modelId, Seat storage seat, uint8 stage) private view {
        if ((seat.laneId != 0 || seat.eligibleAt != 0) && seat.stage != stage) {
            revert AlreadyHoldsOtherStage(modelId, msg.sender, seat.stage);
        }
    }
}
