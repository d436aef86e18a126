// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IWorkLedger
/// @notice Turns verified training work into ownership. Workers stake, join one stage of a
/// model, and claim each round's work with a bond; validators may challenge a claim with an
/// equal bond before its deadline and vote on it; unchallenged or upheld claims finalize,
/// mint shares and advance the stage checkpoint; the loser of a dispute is slashed.
/// @dev Claims live in lanes: one lane per (model, stage, worker), holding that worker's latest
/// claim, so the storage of round r is reused by round r+1 (5k gas per slot instead of 22k).
/// A lane holds one open claim at a time, which the protocol implies anyway: a round's parent
/// must be the stage's finalized checkpoint. claimId = laneId << 64 | round; getClaim answers
/// for a lane's latest claim, earlier ones live in the events.
interface IWorkLedger {
    /// @notice Lifecycle of a claim.
    enum ClaimStatus {
        None,
        Pending,
        Challenged,
        Upheld,
        Finalized,
        Rejected
    }

    /// @notice What a worker claims for one round of one stage.
    /// @param modelId The model.
    /// @param stage The stage the worker is a member of.
    /// @param round Round number, strictly greater than the worker's last claimed round there.
    /// @param parentCID The stage's finalized checkpoint the round started from ("" for the first).
    /// @param checkpointCID CID of the encrypted checkpoint after the round.
    /// @param checkpointDigest sha256 of the plaintext canonical stage state after the round.
    /// @param traceRoot Merkle root of the round's step trace (kept in the ClaimSubmitted event).
    /// @param traceCID CID of the stored trace (kept in the ClaimSubmitted event).
    /// @param workUnits Units of work claimed (1..maxWorkUnitsPerClaim).
    struct ClaimInput {
        uint256 modelId;
        uint8 stage;
        uint64 round;
        string parentCID;
        string checkpointCID;
        bytes32 checkpointDigest;
        bytes32 traceRoot;
        string traceCID;
        uint64 workUnits;
    }

    /// @notice On-chain state of a claim; parentCID, traceRoot and traceCID are in ClaimSubmitted.
    struct Claim {
        address worker;
        uint64 round;
        uint8 stage;
        ClaimStatus status;
        uint256 modelId;
        uint64 workUnits;
        uint64 deadline;
        uint256 bond;
        address challenger;
        uint64 voteDeadline;
        uint32 challengedStep;
        uint8 votesValid;
        uint8 votesInvalid;
        bytes32 checkpointDigest;
        string checkpointCID;
    }

    /// @notice Protocol parameters, set by the admin within bounds. Ordered so that what
    /// submitClaim reads shares one storage slot.
    /// @param challengeWindow Seconds after submission during which a claim can be challenged.
    /// @param claimBond Stake locked per claim (and per challenge).
    /// @param maxWorkUnitsPerClaim Cap on workUnits of one claim.
    /// @param quorum Agreeing votes that settle a dispute.
    /// @param burnBps Share of a slashed bond that goes to the treasury instead of the winner.
    /// @param voteWindow Seconds after a challenge during which validators vote.
    /// @param unbondingPeriod Seconds between requestUnstake and withdraw.
    /// @param minWorkerStake Stake required to join a stage.
    /// @param minValidatorStake Stake required to register as a validator.
    struct Parameters {
        uint64 challengeWindow;
        uint88 claimBond;
        uint64 maxWorkUnitsPerClaim;
        uint8 quorum;
        uint16 burnBps;
        uint64 voteWindow;
        uint64 unbondingPeriod;
        uint96 minWorkerStake;
        uint96 minValidatorStake;
    }

    /// @notice Stake held for an account. The first four fields share one storage slot, so
    /// joining a stage or locking a bond rewrites a slot that staking already created.
    /// @param staked Stake in the ledger, including the part locked in bonds.
    /// @param locked Part of `staked` backing open claims or challenges.
    /// @param memberships Stages the account is a member of (across models).
    /// @param validator Whether the account registered as a validator.
    /// @param unbonding Stake waiting for the unbonding period, no longer counted in `staked`.
    /// @param readyAt When `unbonding` can be withdrawn.
    struct StakeAccount {
        uint96 staked;
        uint96 locked;
        uint32 memberships;
        bool validator;
        uint128 unbonding;
        uint64 readyAt;
    }

    /// @notice The account's (free) stake is below what the action needs.
    error InsufficientStake(address account, uint256 required, uint256 available);
    /// @notice Unstaking would leave less than a member's or validator's minimum stake.
    error StakeStillRequired(address account, uint256 required, uint256 remaining);
    /// @notice No unbonding stake to withdraw.
    error NothingToWithdraw(address account);
    /// @notice The unbonding period has not passed yet.
    error UnbondingNotOver(address account, uint64 readyAt);
    /// @notice Amounts must be positive.
    error ZeroAmount();
    /// @notice A zero address where one is required.
    error ZeroAddress();
    /// @notice The model is Paused or Retired.
    error ModelNotActive(uint256 modelId);
    /// @notice The stage is not below the model's numStages.
    error StageOutOfRange(uint256 modelId, uint8 stage);
    /// @notice The account already holds `stage` of this model (at most one stage per model).
    error AlreadyMemberOfModel(uint256 modelId, address account, uint8 stage);
    /// @notice The account holds no stage of this model.
    error NotModelMember(uint256 modelId, address account);
    /// @notice The account is not a member of that stage.
    error NotStageMember(uint256 modelId, uint8 stage, address account);
    /// @notice Only registered validators may do this.
    error NotValidator(address account);
    /// @notice The account is already a validator.
    error AlreadyValidator(address account);
    /// @notice The round must exceed the worker's last claimed round and the stage's finalized one.
    error RoundNotIncreasing(uint64 round, uint64 lastRound);
    /// @notice The worker's previous claim in this model is not settled yet.
    error PreviousClaimOpen(uint256 claimId);
    /// @notice parentCID is not the stage's finalized checkpoint.
    error ParentMismatch(string expected, string given);
    /// @notice The checkpoint CID must not be empty.
    error EmptyCheckpointCID();
    /// @notice workUnits must be between 1 and maxWorkUnitsPerClaim.
    error InvalidWorkUnits(uint64 workUnits, uint64 maxWorkUnits);
    /// @notice No such claim (or it was superseded in its lane; see the events).
    error UnknownClaim(uint256 claimId);
    /// @notice The claim is not in a status that allows this.
    error WrongClaimStatus(uint256 claimId, ClaimStatus status);
    /// @notice The claim's challenge deadline has passed.
    error ChallengeWindowClosed(uint256 claimId, uint64 deadline);
    /// @notice An unchallenged claim finalizes only after its deadline.
    error ChallengeWindowOpen(uint256 claimId, uint64 deadline);
    /// @notice The dispute's vote deadline has passed.
    error VoteWindowClosed(uint256 claimId, uint64 voteDeadline);
    /// @notice A worker cannot challenge its own claim.
    error CannotChallengeOwnClaim(uint256 claimId, address account);
    /// @notice The worker and the challenger cannot vote on their dispute.
    error CannotVoteOnOwnDispute(uint256 claimId, address account);
    /// @notice One vote per validator per claim.
    error AlreadyVoted(uint256 claimId, address account);
    /// @notice Neither side has a quorum and the vote window is still open.
    error NotResolvable(uint256 claimId);
    /// @notice No parameter has this name.
    error UnknownParameter(bytes32 name);
    /// @notice The value is outside the parameter's bounds.
    error ParameterOutOfBounds(bytes32 name, uint256 value);
    /// @notice Sending ETH failed.
    error TransferFailed(address to, uint256 amount);

    /// @notice Stake was added; `total` is the account's stake after it.
    event Staked(address indexed account, uint256 amount, uint256 total);
    /// @notice Stake started unbonding; all of the account's unbonding stake is withdrawable at `readyAt`.
    event UnstakeRequested(address indexed account, uint256 amount, uint64 readyAt);
    /// @notice Unbonded stake was paid out.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice An account joined a stage, announcing its peer id and X25519 encryption key.
    event Joined(
        uint256 indexed modelId, uint8 indexed stage, address indexed account, bytes peerId, bytes32 encryptionKey
    );
    /// @notice An account left its stage.
    event Left(uint256 indexed modelId, uint8 indexed stage, address indexed account);
    /// @notice An account became a validator.
    event ValidatorRegistered(address indexed account);
    /// @notice A worker claimed one round of work; the CIDs and the trace root live here.
    event ClaimSubmitted(
        uint256 indexed claimId,
        uint256 indexed modelId,
        uint8 stage,
        uint64 round,
        address indexed worker,
        string parentCID,
        string checkpointCID,
        bytes32 checkpointDigest,
        bytes32 traceRoot,
        string traceCID,
        uint64 workUnits
    );
    /// @notice A validator disputed a claim at one step of its trace.
    event ClaimChallenged(uint256 indexed claimId, address indexed challenger, uint32 stepIndex, string evidenceCID);
    /// @notice A validator voted on a dispute.
    event VoteCast(uint256 indexed claimId, address indexed validator, bool claimValid);
    /// @notice A dispute settled: Upheld (worker won), or Rejected (by vote or by the no-quorum fallback).
    event ClaimResolved(uint256 indexed claimId, ClaimStatus outcome, bool slashed);
    /// @notice A claim finalized and minted its shares.
    event ClaimFinalized(uint256 indexed claimId, uint256 sharesMinted);
    /// @notice A claim was rejected; it mints nothing.
    event ClaimRejected(uint256 indexed claimId);
    /// @notice `amount` of `account`'s bond was taken: `toWinner` to the dispute's winner, the rest to the treasury.
    event Slashed(address indexed account, uint256 amount, address indexed winner, uint256 toWinner);
    /// @notice The admin changed a parameter.
    event ParameterChanged(bytes32 indexed name, uint256 value);

    /// @notice Add the sent ETH to the caller's stake.
    function stake() external payable;
    /// @notice Start unbonding `amount` of the caller's free stake; restarts the unbonding clock.
    function requestUnstake(uint256 amount) external;
    /// @notice Withdraw unbonded stake once the unbonding period has passed.
    function withdraw() external;

    /// @notice Join one stage of a model. An address holds at most one stage per model.
    function join(uint256 modelId, uint8 stage, bytes calldata peerId, bytes32 encryptionKey) external;
    /// @notice Leave the caller's stage of a model (an open claim can still be settled).
    function leave(uint256 modelId) external;
    /// @notice Current members of a stage.
    function membersOf(uint256 modelId, uint8 stage) external view returns (address[] memory);
    /// @notice The stage an account holds in a model, if any.
    function stageOf(uint256 modelId, address account) external view returns (bool member, uint8 stage);

    /// @notice Become a validator (requires minValidatorStake).
    function registerValidator() external;

    /// @notice Claim one round of work; locks claimBond of the caller's stake.
    function submitClaim(ClaimInput calldata input) external returns (uint256 claimId);
    /// @notice Dispute a pending claim before its deadline, locking a bond equal to the claim's.
    function challenge(uint256 claimId, uint32 stepIndex, string calldata evidenceCID) external;
    /// @notice Vote on a challenged claim (validators other than the worker and the challenger).
    function vote(uint256 claimId, bool claimValid) external;
    /// @notice Settle a challenged claim once `quorum` votes agree, or after the vote window
    /// without a quorum (then the claim is rejected, nobody is slashed, both bonds return).
    function resolve(uint256 claimId) external;
    /// @notice Mint the shares of an unchallenged (after its deadline) or upheld claim.
    function finalize(uint256 claimId) external;
    /// @notice State of a claim (a lane's latest); reverts UnknownClaim otherwise.
    function getClaim(uint256 claimId) external view returns (Claim memory);

    /// @notice Stake held for an account.
    function stakeOf(address account) external view returns (StakeAccount memory);
    /// @notice Current parameters.
    function parameters() external view returns (Parameters memory);
    /// @notice Receiver of the burnt part of slashed bonds (credited as its stake).
    function treasury() external view returns (address);
    /// @notice Change one parameter by name ("challengeWindow", "quorum", ...). Only the admin.
    function setParameter(bytes32 name, uint256 value) external;
}
