// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IModelRegistry
/// @notice The registry of protocol models: what each model is (its spec on IPFS), how many
/// pipeline stages it has, which ERC-20 of ownership shares belongs to it, the latest
/// finalized checkpoint of every stage, and who may drive its training rounds (drivers, named
/// by the creator) and serve its inference (gateways, named by the operator) on the P2P plane.
/// @dev Checkpoint CIDs are bytes32: the sha2-256 digest inside a CIDv0 (base58btc of 0x12 0x20 + digest).
interface IModelRegistry {
    /// @notice Lifecycle of a model. Only Active models accept new members and claims.
    enum ModelStatus {
        Active,
        Paused,
        Retired
    }

    /// @notice Everything the registry knows about one model.
    /// @param creator Address that called createModel; the only one that may change the status.
    /// @param shares The model's ModelShares token (an EIP-1167 clone).
    /// @param numStages Number of pipeline stages the model is split into.
    /// @param status Current lifecycle status.
    /// @param specCID IPFS CID of the JSON model spec.
    /// @param revenueAsset ERC-20 the model is paid in, or address(0) for ETH.
    /// @param operator Receives the operator fee of every inference payment.
    /// @param sharesPerWorkUnit Shares minted per verified unit of work.
    struct Model {
        address creator;
        address shares;
        uint8 numStages;
        ModelStatus status;
        string specCID;
        address revenueAsset;
        address operator;
        uint256 sharesPerWorkUnit;
    }

    /// @notice Latest finalized checkpoint of one stage.
    /// @param cid CIDv0 digest of the encrypted checkpoint (0 before the first).
    /// @param digest sha256 of the plaintext canonical stage state.
    /// @param round The round it closes (0 before the first).
    struct Checkpoint {
        bytes32 cid;
        bytes32 digest;
        uint64 round;
    }

    /// @notice The model id does not exist.
    error UnknownModel(uint256 modelId);
    /// @notice numStages must be between 1 and the registry maximum.
    error InvalidStageCount(uint8 numStages);
    /// @notice The stage index is not below the model's numStages.
    error StageOutOfRange(uint256 modelId, uint8 stage);
    /// @notice sharesPerWorkUnit must be positive and fit in 96 bits.
    error InvalidSharesPerWorkUnit(uint256 sharesPerWorkUnit);
    /// @notice The revenue asset must be address(0) (ETH) or a contract.
    error InvalidRevenueAsset(address revenueAsset);
    /// @notice A zero address where one is required.
    error ZeroAddress();
    /// @notice The share implementation and WorkLedger were already wired.
    error AlreadyWired();
    /// @notice createModel needs the share implementation and WorkLedger wired first.
    error NotWired();
    /// @notice The spec CID must not be empty.
    error EmptySpecCID();
    /// @notice Only the model's creator may do this.
    error NotModelCreator(uint256 modelId, address account);
    /// @notice Only the WorkLedger may do this.
    error NotWorkLedger(address account);
    /// @notice Only the model's operator may do this.
    error NotModelOperator(uint256 modelId, address account);
    /// @notice The new share token is not at the registry's CREATE address for nonce modelId, where
    /// the RevenueRouter looks for it (a chain whose contract nonces start at 0, or whose CREATE
    /// derives addresses otherwise, such as zkSync): no model can be created there.
    error SharesAddressMismatch(address expected, address created);

    /// @notice A model was registered and its share token deployed.
    event ModelCreated(
        uint256 indexed modelId, address indexed creator, address shares, uint8 numStages, string specCID
    );
    /// @notice The share implementation and the WorkLedger were set (once).
    event Wired(address sharesImplementation, address workLedger);
    /// @notice A model's status changed.
    event ModelStatusChanged(uint256 indexed modelId, ModelStatus status);
    /// @notice A stage's finalized checkpoint advanced.
    event CheckpointAccepted(uint256 indexed modelId, uint8 indexed stage, uint64 round, bytes32 cid);
    /// @notice The creator authorized (or deauthorized) `driver` to drive the model's training rounds.
    event DriverSet(uint256 indexed modelId, address indexed driver, bool allowed);
    /// @notice The operator authorized (or deauthorized) `gateway` to serve the model's inference.
    event GatewaySet(uint256 indexed modelId, address indexed gateway, bool allowed);

    /// @notice Register a model and deploy its ModelShares as an EIP-1167 clone.
    /// @dev The clone is the registry's modelId-th contract creation (CREATE at nonce modelId):
    /// the RevenueRouter relies on it to find a model's token without a call, and createModel
    /// checks it (SharesAddressMismatch), so no payment can reach another model's token.
    /// @param specCID IPFS CID of the model spec.
    /// @param numStages Number of pipeline stages.
    /// @param sharesPerWorkUnit Shares minted per verified unit of work.
    /// @param revenueAsset ERC-20 the model is paid in, or address(0) for ETH.
    /// @param operator Receiver of the operator fee.
    /// @return modelId The new model's id (ids start at 1).
    function createModel(
        string calldata specCID,
        uint8 numStages,
        uint256 sharesPerWorkUnit,
        address revenueAsset,
        address operator
    ) external returns (uint256 modelId);

    /// @notice Set the ModelShares implementation cloned per model and the WorkLedger. Only the
    /// owner, once: shares clones trust the router and ledger baked into the implementation.
    function wire(address sharesImplementation, address workLedger) external;

    /// @notice The ModelShares implementation every model's token is a clone of.
    function sharesImplementation() external view returns (address);

    /// @notice The WorkLedger, the only writer of checkpoints.
    function workLedger() external view returns (address);

    /// @notice Everything known about a model; reverts UnknownModel for an unknown id.
    function getModel(uint256 modelId) external view returns (Model memory);

    /// @notice The model's share token, stage count and status: one storage read, for the router and the ledger.
    function sharesOf(uint256 modelId) external view returns (address shares, uint8 numStages, ModelStatus status);

    /// @notice The model's share token and shares per work unit, for minting: two storage reads.
    function workTermsOf(uint256 modelId) external view returns (address shares, uint256 sharesPerWorkUnit);

    /// @notice Number of models created so far (the highest model id).
    function modelCount() external view returns (uint256);

    /// @notice Latest finalized checkpoint of a stage; zero cid and round 0 before the first.
    function checkpointOf(uint256 modelId, uint8 stage) external view returns (bytes32 cid, bytes32 digest, uint64 round);

    /// @notice Change a model's status. Only the creator. The RevenueRouter is told too.
    function setStatus(uint256 modelId, ModelStatus status) external;

    /// @notice Advance a stage's finalized checkpoint. Only the WorkLedger; ignored unless newer.
    /// @return accepted Whether the checkpoint advanced.
    function recordCheckpoint(uint256 modelId, uint8 stage, uint64 round, bytes32 cid, bytes32 digest)
        external
        returns (bool accepted);

    /// @notice Authorize or deauthorize a driver of the model's training rounds. Only the creator.
    function setDriver(uint256 modelId, address driver, bool allowed) external;

    /// @notice Authorize or deauthorize a gateway serving the model's inference. Only the operator.
    function setGateway(uint256 modelId, address gateway, bool allowed) external;

    /// @notice Whether `account` may drive the model's training rounds.
    function isDriver(uint256 modelId, address account) external view returns (bool);

    /// @notice Whether `account` may serve the model's inference.
    function isGateway(uint256 modelId, address account) external view returns (bool);
}
