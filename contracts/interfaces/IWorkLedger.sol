// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IWorkLedger (v2)
/// @notice Stake, stage membership (workers AND validators, one stage per model per address, for good),
/// chained multi-round claims, challenges (divergence or unavailability), stake-weighted votes
/// after a vote window, slashing, and the minting of shares for claims that survive.
/// @dev Claims live in lanes, one per (model, worker). A lane holds up to maxPendingClaims open
/// claims, oldest first; each chains on the one before it (or on the stage's finalized
/// checkpoint when the lane is empty), so a worker claims every round as soon as it is trained
/// instead of once per challenge window. claimId = laneId << 64 | seq, seq counting the lane's
/// claims from 1. Claims settle strictly in lane order: finalize(id) finalizes the lane's open
/// claims up to id in one transaction (one mint, one checkpoint record); a rejection needs every
/// earlier claim of the lane settled and voids every later open one in O(1). The storage of a
/// claim is a slot of a ring of MAX_PENDING_CLAIMS per lane, reused by the claim that many seqs
/// later, so getClaim answers for the lane's latest MAX_PENDING_CLAIMS claims; earlier ones live
/// in the events. CIDs are bytes32: the sha2-256 digest inside a CIDv0 (base58btc of
/// 0x12 0x20 + digest), in storage and in events alike.
interface IWorkLedger {
    /// @notice Lifecycle of a claim. Pending: in its challenge window or past it, due to finalize.
    /// Challenged: disputed, waiting for resolve. Upheld: the worker won the dispute, due to
    /// finalize. Finalized: minted. Rejected: refuted, its bond slashed. Voided: an earlier claim
    /// of the lane was rejected while this one was open: it mints nothing, its bond is released,
    /// it can no longer be challenged.
    enum ClaimStatus {
        None,
        Pending,
        Challenged,
        Upheld,
        Finalized,
        Rejected,
        Voided
    }

    /// @notice What a challenge disputes: Divergence = a replay of (round, step) disagrees with
    /// the claim's records; Unavailable = the claim's checkpoint, trace or manifest could not be
    /// fetched after availabilityGrace.
    enum ChallengeKind {
        None,
        Divergence,
        Unavailable
    }

    /// @notice What a worker claims: rounds firstRound..lastRound of its stage.
    /// @param modelId The model.
    /// @param stage The stage the worker is a member of.
    /// @param firstRound Must be the parent's round + 1.
    /// @param lastRound >= firstRound; a claim covers at most workUnits rounds (every round is at
    /// least one unit of work), so no claim can push a stage's rounds out of reach.
    /// @param parentCID CIDv0 digest of the checkpoint the first round started from: the lane's
    /// newest open claim's checkpoint if the lane has an open claim, else the stage's finalized
    /// checkpoint (0 = the spec's seed, round 0).
    /// @param checkpointCID CIDv0 digest of the encrypted checkpoint after lastRound (nonzero).
    /// @param checkpointDigest sha256 of the plaintext canonical stage state after lastRound.
    /// @param roundsRoot Merkle root over the per-round records (round, checkpoint digest, trace
    /// root, work units, ...) listed in the claim manifest.
    /// @param manifestCID CIDv0 digest of the claim manifest (per-round checkpoint and trace CIDs);
    /// kept in the ClaimSubmitted event only.
    /// @param workUnits Total over the rounds (1..maxWorkUnitsPerClaim).
    struct ClaimInput {
        uint256 modelId;
        uint8 stage;
        uint64 firstRound;
        uint64 lastRound;
        bytes32 parentCID;
        bytes32 checkpointCID;
        bytes32 checkpointDigest;
        bytes32 roundsRoot;
        bytes32 manifestCID;
        uint64 workUnits;
    }

    /// @notice On-chain view of a claim and of its dispute (the dispute fields are zero when it
    /// was never challenged).
    /// @param previousClaimId The lane's claim this one chains on (0: the stage's finalized checkpoint).
    /// @param voters Distinct voters so far.
    /// @param weightValid Stake of the voters who found the claim valid.
    /// @param weightInvalid Stake of the voters who found it invalid.
    struct Claim {
        address worker;
        uint256 modelId;
        uint8 stage;
        ClaimStatus status;
        uint64 firstRound;
        uint64 lastRound;
        uint64 workUnits;
        uint64 submittedAt;
        uint64 deadline;
        uint256 bond;
        bytes32 checkpointCID;
        bytes32 checkpointDigest;
        bytes32 roundsRoot;
        uint256 previousClaimId;
        address challenger;
        ChallengeKind kind;
        uint64 challengedRound;
        uint32 challengedStep;
        uint64 voteDeadline;
        uint32 voters;
        uint256 weightValid;
        uint256 weightInvalid;
    }

    /// @notice The lane of (model, worker). Its open claims, oldest first, are
    /// openClaimsOf(modelId, worker).
    /// @param laneId The lane (0: the account never joined the model).
    /// @param openCount Open claims (Pending, Challenged or Upheld).
    /// @param headClaimId Oldest open claim (0 if none).
    /// @param tipClaimId Newest open claim (0 if none): the claim a new claim chains on.
    /// @param tipRound lastRound of the tip, or the stage's finalized round when the lane is empty.
    /// @param tipCheckpointCID What the next claim's parentCID must be.
    struct LaneView {
        uint64 laneId;
        uint32 openCount;
        uint256 headClaimId;
        uint256 tipClaimId;
        uint64 tipRound;
        bytes32 tipCheckpointCID;
    }

    /// @notice Protocol parameters, each settable by name within its bounds (setParameter).
    /// @param challengeWindow Seconds after submission during which a claim can be challenged (1 s..30 days, > availabilityGrace).
    /// @param claimBond Stake locked per claim, and by the challenger per challenge (>= 1 wei).
    /// @param maxWorkUnitsPerClaim Cap on workUnits of one claim (>= 1).
    /// @param quorum Distinct voters a dispute needs to be decided (1..255).
    /// @param burnBps Share of a slashed bond that goes to the treasury instead of the winner (0..10,000).
    /// @param voteWindow Seconds after a challenge during which stage validators vote (1 s..30 days).
    /// @param unbondingPeriod Seconds between requestUnstake and withdraw (0..365 days); the wait is
    /// at least voteWindow + 1 whatever this is set to.
    /// @param minWorkerStake Stake required to join a stage.
    /// @param minValidatorStake Stake required to validate a stage.
    /// @param maxPendingClaims Open claims a lane may hold (1..MAX_PENDING_CLAIMS).
    /// @param availabilityGrace Seconds after submission before a claim may be challenged as
    /// Unavailable (< challengeWindow).
    /// @param validatorDelay Seconds after registerValidator before a validator may challenge or vote (0..30 days).
    /// @param voteBond Stake locked per vote until settleVote (0 disables it).
    /// @param loserVoteSlashBps Share of its vote bond a voter on the losing side of a decided dispute loses (0..10,000).
    /// @param noQuorumSlashBps Share of its bond a challenger loses when its dispute ends without
    /// a decision; the claim then stands (0..10,000).
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
        uint16 maxPendingClaims;
        uint64 availabilityGrace;
        uint64 validatorDelay;
        uint88 voteBond;
        uint16 loserVoteSlashBps;
        uint16 noQuorumSlashBps;
    }

    /// @notice Stake held for an account.
    /// @param staked Stake in the ledger, including the part locked in bonds.
    /// @param locked Part of `staked` backing open claims, challenges and votes.
    /// @param memberships Stages the account works (across models).
    /// @param unbonding Stake waiting for the unbonding period, no longer counted in `staked`.
    /// @param readyAt When `unbonding` can be withdrawn.
    struct StakeAccount {
        uint96 staked;
        uint96 locked;
        uint32 memberships;
        uint128 unbonding;
        uint64 readyAt;
    }

    /// @notice The account's (free) stake is below what the action needs.
    error InsufficientStake(address account, uint256 required, uint256 available);
    /// @notice Unstaking would leave a member with less than minWorkerStake.
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
    /// @notice The account holds, or once held, `stage` of this model (as worker or validator) and
    /// the action would give it a different one: an address takes one stage of a model for good.
    error AlreadyHoldsOtherStage(uint256 modelId, address account, uint8 stage);
    /// @notice The account already works `stage` of this model.
    error AlreadyMemberOfModel(uint256 modelId, address account, uint8 stage);
    /// @notice The account works no stage of this model.
    error NotModelMember(uint256 modelId, address account);
    /// @notice The account does not work that stage.
    error NotStageMember(uint256 modelId, uint8 stage, address account);
    /// @notice The account does not validate that stage.
    error NotStageValidator(uint256 modelId, uint8 stage, address account);
    /// @notice The account already validates `stage` of this model.
    error AlreadyValidator(uint256 modelId, address account, uint8 stage);
    /// @notice The validator becomes eligible at `eligibleAt` (validatorDelay after registering): a
    /// challenge needs it eligible now, a vote eligible when the dispute was opened.
    error ValidatorTooNew(address account, uint64 eligibleAt);
    /// @notice The lane already holds maxPendingClaims open claims.
    error TooManyPendingClaims(uint256 modelId, address worker, uint256 limit);
    /// @notice firstRound must be the parent's round + 1.
    error RoundsNotContiguous(uint64 firstRound, uint64 expected);
    /// @notice lastRound < firstRound, or more rounds than work units.
    error InvalidRoundRange(uint64 firstRound, uint64 lastRound);
    /// @notice parentCID is not the lane's tip checkpoint (or the stage's finalized one).
    error ParentMismatch(bytes32 expected, bytes32 given);
    /// @notice The checkpoint CID must not be zero.
    error EmptyCheckpointCID();
    /// @notice workUnits must be between 1 and maxWorkUnitsPerClaim.
    error InvalidWorkUnits(uint64 workUnits, uint64 maxWorkUnits);
    /// @notice No such claim, or its ring slot was reused (its history is in the events).
    error UnknownClaim(uint256 claimId);
    /// @notice The claim is not in a status that allows this.
    error WrongClaimStatus(uint256 claimId, ClaimStatus status);
    /// @notice The claim's challenge deadline has passed.
    error ChallengeWindowClosed(uint256 claimId, uint64 deadline);
    /// @notice An unchallenged claim finalizes only after its deadline.
    error ChallengeWindowOpen(uint256 claimId, uint64 deadline);
    /// @notice An Unavailable challenge waits for availabilityGrace after submission.
    error AvailabilityGraceNotOver(uint256 claimId, uint64 graceEndsAt);
    /// @notice The challenged round is not one of the claim's rounds.
    error RoundOutsideClaim(uint256 claimId, uint64 round);
    /// @notice A rejection waits until every earlier claim of the lane is settled.
    error EarlierClaimOpen(uint256 claimId, uint256 earlierClaimId);
    /// @notice The dispute's vote deadline has passed.
    error VoteWindowClosed(uint256 claimId, uint64 voteDeadline);
    /// @notice resolve waits for the vote deadline unless every eligible stage validator voted.
    error VoteWindowOpen(uint256 claimId, uint64 voteDeadline);
    /// @notice A claim is challenged at most once.
    error AlreadyChallenged(uint256 claimId, address challenger);
    /// @notice A worker cannot challenge its own claim.
    error CannotChallengeOwnClaim(uint256 claimId, address account);
    /// @notice The worker and the challenger cannot vote on their dispute.
    error CannotVoteOnOwnDispute(uint256 claimId, address account);
    /// @notice One vote per validator per claim.
    error AlreadyVoted(uint256 claimId, address account);
    /// @notice The account has no unsettled vote on this claim.
    error NothingToSettle(uint256 claimId, address account);
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
    /// @notice An account joined a stage. peerId = the libp2p peer id (bytes) it serves under;
    /// encryptionKey = its X25519 public key.
    event Joined(
        uint256 indexed modelId, uint8 indexed stage, address indexed account, bytes peerId, bytes32 encryptionKey
    );
    /// @notice An account left its stage.
    event Left(uint256 indexed modelId, uint8 indexed stage, address indexed account);
    /// @notice A validator registered for one stage of a model; it may challenge and vote from `eligibleAt`.
    event ValidatorRegistered(uint256 indexed modelId, uint8 indexed stage, address indexed account, uint64 eligibleAt);
    /// @notice A validator stopped validating its stage of a model.
    event ValidatorLeft(uint256 indexed modelId, uint8 indexed stage, address indexed account);
    /// @notice A worker claimed rounds firstRound..lastRound; previousClaimId is the lane claim it chains on (0: none).
    event ClaimSubmitted(
        uint256 indexed claimId,
        uint256 indexed modelId,
        uint8 stage,
        uint64 firstRound,
        uint64 lastRound,
        address indexed worker,
        uint256 previousClaimId,
        bytes32 parentCID,
        bytes32 checkpointCID,
        bytes32 checkpointDigest,
        bytes32 roundsRoot,
        bytes32 manifestCID,
        uint64 workUnits
    );
    /// @notice A stage validator disputed a claim: at (round, stepIndex) with its evidence
    /// (Divergence), or as unfetchable (Unavailable: round, stepIndex and evidenceCID are 0).
    event ClaimChallenged(
        uint256 indexed claimId,
        address indexed challenger,
        ChallengeKind kind,
        uint64 round,
        uint32 stepIndex,
        bytes32 evidenceCID
    );
    /// @notice A stage validator voted on a dispute with the weight of its stake.
    event VoteCast(uint256 indexed claimId, address indexed validator, bool claimValid, uint256 weight);
    /// @notice A dispute ended: Upheld (worker won), Rejected (challenger won), Pending (no
    /// decision: the claim stands) or Voided (an earlier claim of its lane was rejected meanwhile).
    /// `slashed` says whether a bond was taken.
    event ClaimResolved(uint256 indexed claimId, ClaimStatus outcome, bool slashed);
    /// @notice A run of a lane's claims, firstClaimId..lastClaimId in lane order, finalized in one transaction.
    event ClaimsFinalized(
        uint256 indexed modelId,
        address indexed worker,
        uint256 firstClaimId,
        uint256 lastClaimId,
        uint64 claims,
        uint256 sharesMinted
    );
    /// @notice One claim finalized (emitted per claim of a run, for readers that follow claim ids).
    event ClaimFinalized(uint256 indexed claimId, uint256 sharesMinted);
    /// @notice A claim was refuted; it mints nothing.
    event ClaimRejected(uint256 indexed claimId);
    /// @notice Every open claim of the lane after `rejectedClaimId` (`voidedClaims` of them) was
    /// voided in O(1), releasing `bondsReleased` of the worker's stake.
    event LaneVoided(
        uint256 indexed modelId, address indexed worker, uint256 rejectedClaimId, uint32 voidedClaims, uint256 bondsReleased
    );
    /// @notice `amount` of `account`'s bond was taken: `toWinner` to the dispute's winner, the rest to the treasury.
    event Slashed(address indexed account, uint256 amount, address indexed winner, uint256 toWinner);
    /// @notice A voter's vote bond was released; `slashed` of it went to the treasury (losing side).
    event VoteSettled(uint256 indexed claimId, address indexed validator, uint256 slashed);
    /// @notice The owner changed a parameter.
    event ParameterChanged(bytes32 indexed name, uint256 value);

    /// @notice Add the sent ETH to the caller's stake.
    function stake() external payable;
    /// @notice Start unbonding `amount` of the caller's free stake; restarts the unbonding clock,
    /// which runs unbondingPeriod but always longer than voteWindow (stake counted in a vote cannot
    /// leave and weigh again in the same dispute). A worker keeps minWorkerStake; a validator's
    /// minValidatorStake is checked whenever it registers, challenges or votes instead.
    function requestUnstake(uint256 amount) external;
    /// @notice Withdraw unbonded stake once the unbonding period has passed.
    function withdraw() external;

    /// @notice Work one stage of a model (minWorkerStake). Refused if the account holds or ever held
    /// another stage of the model, as worker or validator.
    function join(uint256 modelId, uint8 stage, bytes calldata peerId, bytes32 encryptionKey) external;
    /// @notice Stop working the caller's stage of a model; open claims still settle.
    function leave(uint256 modelId) external;
    /// @notice Current workers of a stage.
    function membersOf(uint256 modelId, uint8 stage) external view returns (address[] memory);
    /// @notice The stage an account works in a model, if any.
    function stageOf(uint256 modelId, address account) external view returns (bool member, uint8 stage);
    /// @notice Validate `stage` of `modelId` (minValidatorStake); refused if the account holds or
    /// ever held another stage of the model. Eligible to challenge and vote validatorDelay later,
    /// while it holds minValidatorStake.
    function registerValidator(uint256 modelId, uint8 stage) external;
    /// @notice Stop validating the caller's stage of a model; bonds of its open challenges and
    /// votes stay locked until they settle.
    function leaveValidator(uint256 modelId) external;
    /// @notice Current validators of a stage (eligible or not yet).
    function validatorsOf(uint256 modelId, uint8 stage) external view returns (address[] memory);
    /// @notice registered = validates `stage` of the model; eligibleAt = when it may challenge and vote.
    function validatorOf(uint256 modelId, address account)
        external
        view
        returns (bool registered, uint8 stage, uint64 eligibleAt);

    /// @notice Claim rounds firstRound..lastRound; locks claimBond of the caller's stake; the
    /// claim's deadline is now + challengeWindow.
    function submitClaim(ClaimInput calldata input) external returns (uint256 claimId);
    /// @notice Dispute a Pending claim at (round, stepIndex) before its deadline, locking a bond
    /// equal to the claim's. Only an eligible validator of the claim's stage, once per claim.
    function challenge(uint256 claimId, uint64 round, uint32 stepIndex, bytes32 evidenceCID) external;
    /// @notice Dispute a Pending claim as unfetchable, from availabilityGrace after its submission
    /// until its deadline. Same bond and eligibility as challenge.
    function challengeUnavailable(uint256 claimId) external;
    /// @notice Vote on a challenged claim with the weight of the caller's stake, locking voteBond.
    /// Validators of the claim's stage that were already eligible when the dispute was opened (so
    /// no address registered after a challenge votes on it), other than the worker and the challenger.
    function vote(uint256 claimId, bool claimValid) external;
    /// @notice End a dispute after its vote window, or earlier once every validator of the stage that
    /// may vote on it (eligible when it opened, holding minValidatorStake, neither the worker nor the
    /// challenger) voted. With at least `quorum` voters and
    /// unequal weights the heavier side wins: Upheld (the challenger's bond is slashed, the claim is
    /// due) or Rejected (the worker's bond is slashed; needs every earlier claim of the lane
    /// settled, EarlierClaimOpen otherwise; voids every later open claim of the lane in O(1)).
    /// Otherwise the claim stands (Pending again) and the challenger loses noQuorumSlashBps of its
    /// bond. On a Voided claim it returns the challenger's bond.
    function resolve(uint256 claimId) external;
    /// @notice Release the caller's vote bond on an ended dispute; a voter on the losing side of a
    /// decided dispute loses loserVoteSlashBps of it to the treasury.
    function settleVote(uint256 claimId) external;
    /// @notice Finalize `claimId` and every earlier open claim of its lane, each Pending past its
    /// deadline or Upheld (else the first that is not reverts with its reason): one mint of the
    /// run's work units x sharesPerWorkUnit, one checkpoint record (the run's last checkpoint).
    /// Shares that would exceed the share supply cap are not minted (the claims still finalize
    /// and release their bonds; ClaimFinalized reports what was minted).
    function finalize(uint256 claimId) external;
    /// @notice A claim of the lane's latest MAX_PENDING_CLAIMS; reverts UnknownClaim otherwise.
    function getClaim(uint256 claimId) external view returns (Claim memory);
    /// @notice The lane of (model, worker).
    function laneOf(uint256 modelId, address worker) external view returns (LaneView memory);
    /// @notice The lane's open claim ids, oldest first (at most maxPendingClaims).
    function openClaimsOf(uint256 modelId, address worker) external view returns (uint256[] memory);

    /// @notice Stake held for an account.
    function stakeOf(address account) external view returns (StakeAccount memory);
    /// @notice Current parameters.
    function parameters() external view returns (Parameters memory);
    /// @notice Receiver of the burnt part of slashed bonds (credited as its stake).
    function treasury() external view returns (address);
    /// @notice Change one parameter by name ("challengeWindow", "quorum", ...). Only the owner.
    function setParameter(bytes32 name, uint256 value) external;
}
