// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IWorkLedger
/// @notice Turns verified training work into ownership. Workers stake, join one stage of a
/// model, and claim each round's work with a bond; validators may challenge a claim with an
/// equal bond before its deadline and vote on it; unchallenged or upheld claims finalize,
/// mint shares and advance the stage checkpoint; the loser of a dispute is slashed.
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
    /// @param traceRoot Merkle root of the round's step trace.
    /// @param traceCID CID of the stored trace.
    /// @param workUnits Units of work claimed (bounded by maxWorkUnitsPerClaim).
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

    /// @notice On-chain state of a claim (the CIDs live in the ClaimSubmitted event).
    struct Claim {
        address worker;
        uint64 round;
        uint8 stage;
        ClaimStatus status;
        uint256 modelId;
        uint64 workUnits;
        uint64 deadline;
        uint64 voteDeadline;
        address challenger;
        uint32 challengedStep;
        uint16 votesValid;
        uint16 votesInvalid;
        uint256 bond;
        bytes32 checkpointDigest;
        bytes32 traceRoot;
    }

    error InsufficientStake(address account, uint256 required, uint256 available);
    error NothingToWithdraw(address account);
    error UnbondingNotOver(address account, uint64 readyAt);
    error ModelNotActive(uint256 modelId);
    error StageOutOfRange(uint256 modelId, uint8 stage);
    error AlreadyMemberOfModel(uint256 modelId, address account, uint8 stage);
    error NotModelMember(uint256 modelId, address account);
    error NotStageMember(uint256 modelId, uint8 stage, address account);
    error NotValidator(address account);
    error AlreadyValidator(address account);
    error RoundNotIncreasing(uint64 round, uint64 lastRound);
    error ParentMismatch(string expected, string given);
    error InvalidWorkUnits(uint64 workUnits, uint64 maxWorkUnits);
    error UnknownClaim(uint256 claimId);
    error WrongClaimStatus(uint256 claimId, ClaimStatus status);
    error ChallengeWindowClosed(uint256 claimId, uint64 deadline);
    error ChallengeWindowOpen(uint256 claimId, uint64 deadline);
    error VoteWindowClosed(uint256 claimId, uint64 voteDeadline);
    error CannotVoteOnOwnDispute(uint256 claimId, address account);
    error AlreadyVoted(uint256 claimId, address account);
    error NotResolvable(uint256 claimId);
    error ParameterOutOfBounds(bytes32 name, uint256 value);
    error TransferFailed(address to, uint256 amount);

    event Staked(address indexed account, uint256 amount, uint256 total);
    event UnstakeRequested(address indexed account, uint256 amount, uint64 readyAt);
    event Withdrawn(address indexed account, uint256 amount);
    event Joined(uint256 indexed modelId, uint8 indexed stage, address indexed account, bytes peerId, bytes32 encryptionKey);
    event Left(uint256 indexed modelId, uint8 indexed stage, address indexed account);
    event ValidatorRegistered(address indexed account);
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
    event ClaimChallenged(uint256 indexed claimId, address indexed challenger, uint32 stepIndex, string evidenceCID);
    event VoteCast(uint256 indexed claimId, address indexed validator, bool claimValid);
    event ClaimResolved(uint256 indexed claimId, ClaimStatus outcome);
    event ClaimFinalized(uint256 indexed claimId, uint256 sharesMinted);
    event ClaimRejected(uint256 indexed claimId);
    event Slashed(address indexed account, uint256 amount);
    event ParameterChanged(bytes32 indexed name, uint256 value);

    /// @notice Add the sent ETH to the caller's stake.
    function stake() external payable;
    /// @notice Start unbonding `amount` of the caller's free stake.
    function requestUnstake(uint256 amount) external;
    /// @notice Withdraw unbonded stake once the unbonding period has passed.
    function withdraw() external;

    /// @notice Join one stage of a model. An address holds at most one stage per model.
    function join(uint256 modelId, uint8 stage, bytes calldata peerId, bytes32 encryptionKey) external;
    /// @notice Leave the caller's stage of a model.
    function leave(uint256 modelId) external;
    /// @notice Current members of a stage.
    function membersOf(uint256 modelId, uint8 stage) external view returns (address[] memory);

    /// @notice Become a validator (requires minValidatorStake).
    function registerValidator() external;

    /// @notice Claim one round of work; locks claimBond of the caller's stake.
    function submitClaim(ClaimInput calldata input) external returns (uint256 claimId);
    /// @notice Dispute a pending claim, locking a bond equal to the claim's.
    function challenge(uint256 claimId, uint32 stepIndex, string calldata evidenceCID) external;
    /// @notice Vote on a challenged claim.
    function vote(uint256 claimId, bool claimValid) external;
    /// @notice Settle a challenged claim once quorum agrees or the vote window has passed.
    function resolve(uint256 claimId) external;
    /// @notice Mint the shares of an unchallenged (after its deadline) or upheld claim.
    function finalize(uint256 claimId) external;
    /// @notice State of a claim.
    function getClaim(uint256 claimId) external view returns (Claim memory);
}
