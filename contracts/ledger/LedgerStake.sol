// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IModelRegistry} from "../interfaces/IModelRegistry.sol";
import {IWorkLedger} from "../interfaces/IWorkLedger.sol";

/// @title LedgerStake
/// @notice The WorkLedger's stake accounts and parameters: stake, unbond, withdraw; bonds locked,
/// released and slashed; parameters set by name within bounds.
/// @dev ETH accounting: the ledger's balance always equals the sum over accounts of staked +
/// unbonding. Bonds are the `locked` part of `staked`; slashing moves stake between accounts (the
/// burnt share is credited to the treasury's stake), so nothing but withdraw() sends ETH out.
abstract contract LedgerStake is IWorkLedger, Ownable2Step, ReentrancyGuardTransient {
    using SafeCast for uint256;

    /// @notice Ring size of a lane's claim slots, and the upper bound of maxPendingClaims.
    uint16 public constant MAX_PENDING_CLAIMS = 64;
    uint256 internal constant BPS = 10_000;
    uint256 private constant MAX_WINDOW = 30 days;
    uint256 private constant MAX_UNBONDING = 365 days;

    /// @notice The registry of models, checkpoints and share tokens.
    IModelRegistry public immutable registry;
    /// @inheritdoc IWorkLedger
    address public immutable treasury;

    /// @dev The parameters packed by who reads them, so each hot path reads one slot: submitClaim
    /// the first, disputes the second, stake and seats the third. Windows and periods fit 32 bits
    /// (at most 365 days); the bounds in _setParameter keep every value inside its field.
    struct Config {
        uint88 claimBond;
        uint32 challengeWindow;
        uint64 maxWorkUnitsPerClaim;
        uint16 maxPendingClaims;
        uint8 quorum;
        uint16 burnBps;
        uint32 availabilityGrace;
        uint32 voteWindow;
        uint88 voteBond;
        uint16 loserVoteSlashBps;
        uint16 noQuorumSlashBps;
        uint96 minWorkerStake;
        uint96 minValidatorStake;
        uint32 validatorDelay;
        uint32 unbondingPeriod;
    }

    Config internal _params;
    mapping(address account => StakeAccount) internal _stakes;

    constructor(address owner_, IModelRegistry registry_, address treasury_, Parameters memory params)
        Ownable(owner_)
    {
        if (address(registry_) == address(0) || treasury_ == address(0)) revert ZeroAddress();
        registry = registry_;
        treasury = treasury_;
        // challengeWindow before availabilityGrace: the grace is bounded by the window.
        _setParameter("challengeWindow", params.challengeWindow);
        _setParameter("claimBond", params.claimBond);
        _setParameter("maxWorkUnitsPerClaim", params.maxWorkUnitsPerClaim);
        _setParameter("quorum", params.quorum);
        _setParameter("burnBps", params.burnBps);
        _setParameter("voteWindow", params.voteWindow);
        _setParameter("unbondingPeriod", params.unbondingPeriod);
        _setParameter("minWorkerStake", params.minWorkerStake);
        _setParameter("minValidatorStake", params.minValidatorStake);
        _setParameter("maxPendingClaims", params.maxPendingClaims);
        _setParameter("availabilityGrace", params.availabilityGrace);
        _setParameter("validatorDelay", params.validatorDelay);
        _setParameter("voteBond", params.voteBond);
        _setParameter("loserVoteSlashBps", params.loserVoteSlashBps);
        _setParameter("noQuorumSlashBps", params.noQuorumSlashBps);
    }

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
        // Unbonding outlasts a vote window, so stake counted in a vote cannot be withdrawn and
        // staked again by another validator to weigh twice in the same dispute.
        uint256 period = Math.max(_params.unbondingPeriod, uint256(_params.voteWindow) + 1);
        // Both are at most 365 days: the sum stays far below 2^64.
        uint64 readyAt = uint64(block.timestamp + period);
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

    /// @inheritdoc IWorkLedger
    function stakeOf(address account) external view returns (StakeAccount memory) {
        return _stakes[account];
    }

    /// @inheritdoc IWorkLedger
    function parameters() external view returns (Parameters memory) {
        Config storage c = _params;
        return Parameters({
            challengeWindow: c.challengeWindow,
            claimBond: c.claimBond,
            maxWorkUnitsPerClaim: c.maxWorkUnitsPerClaim,
            quorum: c.quorum,
            burnBps: c.burnBps,
            voteWindow: c.voteWindow,
            unbondingPeriod: c.unbondingPeriod,
            minWorkerStake: c.minWorkerStake,
            minValidatorStake: c.minValidatorStake,
            maxPendingClaims: c.maxPendingClaims,
            availabilityGrace: c.availabilityGrace,
            validatorDelay: c.validatorDelay,
            voteBond: c.voteBond,
            loserVoteSlashBps: c.loserVoteSlashBps,
            noQuorumSlashBps: c.noQuorumSlashBps
        });
    }

    /// @inheritdoc IWorkLedger
    function setParameter(bytes32 name, uint256 value) external onlyOwner {
        _setParameter(name, value);
    }

    /// @dev Every bound is checked here, so the casts below cannot truncate.
    function _setParameter(bytes32 name, uint256 value) private {
        Config storage p = _params;
        if (name == "challengeWindow") {
            // The window must stay longer than the availability grace it contains.
            p.challengeWindow = uint32(_bounded(name, value, uint256(p.availabilityGrace) + 1, MAX_WINDOW));
        } else if (name == "claimBond") {
            p.claimBond = uint88(_bounded(name, value, 1, type(uint88).max));
        } else if (name == "maxWorkUnitsPerClaim") {
            p.maxWorkUnitsPerClaim = uint64(_bounded(name, value, 1, type(uint64).max));
        } else if (name == "quorum") {
            p.quorum = uint8(_bounded(name, value, 1, type(uint8).max));
        } else if (name == "burnBps") {
            p.burnBps = uint16(_bounded(name, value, 0, BPS));
        } else if (name == "voteWindow") {
            p.voteWindow = uint32(_bounded(name, value, 1, MAX_WINDOW));
        } else if (name == "unbondingPeriod") {
            p.unbondingPeriod = uint32(_bounded(name, value, 0, MAX_UNBONDING));
        } else if (name == "minWorkerStake") {
            p.minWorkerStake = uint96(_bounded(name, value, 0, type(uint96).max));
        } else if (name == "minValidatorStake") {
            p.minValidatorStake = uint96(_bounded(name, value, 0, type(uint96).max));
        } else if (name == "maxPendingClaims") {
            p.maxPendingClaims = uint16(_bounded(name, value, 1, MAX_PENDING_CLAIMS));
        } else if (name == "availabilityGrace") {
            p.availabilityGrace = uint32(_bounded(name, value, 0, uint256(p.challengeWindow) - 1));
        } else if (name == "validatorDelay") {
            p.validatorDelay = uint32(_bounded(name, value, 0, MAX_WINDOW));
        } else if (name == "voteBond") {
            p.voteBond = uint88(_bounded(name, value, 0, type(uint88).max));
        } else if (name == "loserVoteSlashBps") {
            p.loserVoteSlashBps = uint16(_bounded(name, value, 0, BPS));
        } else if (name == "noQuorumSlashBps") {
            p.noQuorumSlashBps = uint16(_bounded(name, value, 0, BPS));
        } else {
            revert UnknownParameter(name);
        }
        emit ParameterChanged(name, value);
    }

    function _bounded(bytes32 name, uint256 value, uint256 min, uint256 max) private pure returns (uint256) {
        if (value < min || value > max) revert ParameterOutOfBounds(name, value);
        return value;
    }

    function _requiredStake(StakeAccount storage account) private view returns (uint256) {
        return account.memberships != 0 ? _params.minWorkerStake : 0;
    }

    /// @dev Reverts InsufficientStake unless `who` has at least `minStake` staked.
    function _requireStake(address who, uint256 minStake) internal view {
        uint256 staked = _stakes[who].staked;
        if (staked < minStake) revert InsufficientStake(who, minStake, staked);
    }

    function _lock(address who, uint256 amount) internal {
        StakeAccount storage account = _stakes[who];
        uint256 free = account.staked - account.locked;
        if (free < amount) revert InsufficientStake(who, amount, free);
        // amount <= free, so locked stays <= staked < 2^96.
        account.locked += uint96(amount);
    }

    function _unlock(address who, uint256 amount) internal {
        // Only bonds locked by _lock are unlocked, so locked >= amount (< 2^96).
        _stakes[who].locked -= uint96(amount);
    }

    /// @dev Takes `amount` of `loser`'s locked stake: burnBps of it to the treasury's stake, the
    /// rest to `winner`'s stake.
    function _slash(address loser, address winner, uint256 amount) internal {
        StakeAccount storage account = _stakes[loser];
        // The amount is locked, so staked >= locked >= amount, and amount < 2^96.
        account.locked -= uint96(amount);
        account.staked -= uint96(amount);
        uint256 toTreasury = amount * _params.burnBps / BPS;
        uint256 toWinner = amount - toTreasury;
        // Stake only moves between accounts: no balance can exceed the ledger's ETH (< 2^96).
        _stakes[winner].staked += uint96(toWinner);
        _stakes[treasury].staked += uint96(toTreasury);
        emit Slashed(loser, amount, winner, toWinner);
    }
}
