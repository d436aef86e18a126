// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {IModelShares} from "./interfaces/IModelShares.sol";
import {IRevenueRouter} from "./interfaces/IRevenueRouter.sol";
import {CreateAddress} from "./libraries/CreateAddress.sol";

/// @title ModelRegistry
/// @notice Registers protocol models and deploys each one's ModelShares as an EIP-1167 clone.
/// @dev The owner only wires the share implementation and the WorkLedger, once; models belong to
/// their creators. A model takes three storage slots plus its spec CID: the share token, stage
/// count and status share one slot (the router reads it on every payment), creator and
/// sharesPerWorkUnit (96 bits) the next, the operator the third. The revenue asset is not stored
/// here: it is an immutable arg of the model's clone. Driver and gateway roles are one byte of
/// flags per (model, account), written only by setDriver / setGateway, so createModel pays nothing for them.
/// The registry creates nothing but share tokens, in model-id order, so model m's token is its
/// m-th creation and the RevenueRouter computes its address instead of asking (createModel checks
/// that the clone landed there, so a chain where it would not refuses every model); setStatus also
/// tells the router (found through the share implementation), which refuses payments to a model
/// that is not Active without calling back.
contract ModelRegistry is IModelRegistry, Ownable2Step {
    /// @notice Upper bound on pipeline stages per model.
    uint8 public constant MAX_STAGES = 64;
    uint8 private constant DRIVER = 1;
    uint8 private constant GATEWAY = 2;

    struct ModelRecord {
        address shares;
        uint8 numStages;
        ModelStatus status;
        address creator;
        uint96 sharesPerWorkUnit;
        address operator;
        string specCID;
    }

    /// @inheritdoc IModelRegistry
    address public sharesImplementation;
    /// @inheritdoc IModelRegistry
    address public workLedger;
    /// @inheritdoc IModelRegistry
    uint256 public modelCount;

    mapping(uint256 modelId => ModelRecord) private _models;
    mapping(uint256 modelId => mapping(uint8 stage => Checkpoint)) private _checkpoints;
    mapping(uint256 modelId => mapping(address account => uint8 roles)) private _roles;

    constructor(address owner_) Ownable(owner_) {}

    /// @inheritdoc IModelRegistry
    function wire(address sharesImplementation_, address workLedger_) external onlyOwner {
        if (sharesImplementation != address(0)) revert AlreadyWired();
        if (sharesImplementation_ == address(0) || workLedger_ == address(0)) revert ZeroAddress();
        sharesImplementation = sharesImplementation_;
        workLedger = workLedger_;
        emit Wired(sharesImplementation_, workLedger_);
    }

    /// @inheritdoc IModelRegistry
    function createModel(
        string calldata specCID,
        uint8 numStages,
        uint256 sharesPerWorkUnit,
        address revenueAsset,
        address operator
    ) external returns (uint256 modelId) {
        address implementation = sharesImplementation;
        if (implementation == address(0)) revert NotWired();
        if (bytes(specCID).length == 0) revert EmptySpecCID();
        if (numStages == 0 || numStages > MAX_STAGES) revert InvalidStageCount(numStages);
        if (sharesPerWorkUnit == 0 || sharesPerWorkUnit > type(uint96).max) {
            revert InvalidSharesPerWorkUnit(sharesPerWorkUnit);
        }
        if (revenueAsset != address(0) && revenueAsset.code.length == 0) revert InvalidRevenueAsset(revenueAsset);
        if (operator == address(0)) revert ZeroAddress();

        modelId = ++modelCount;
        address shares = Clones.cloneWithImmutableArgs(implementation, abi.encode(revenueAsset, modelId));
        address expected = CreateAddress.compute(address(this), modelId);
        if (shares != expected) revert SharesAddressMismatch(expected, shares);
        _models[modelId] = ModelRecord({
            shares: shares,
            numStages: numStages,
            status: ModelStatus.Active,
            creator: msg.sender,
            // Bounded by the check above.
            sharesPerWorkUnit: uint96(sharesPerWorkUnit),
            operator: operator,
            specCID: specCID
        });
        emit ModelCreated(modelId, msg.sender, shares, numStages, specCID);
    }

    /// @inheritdoc IModelRegistry
    function getModel(uint256 modelId) external view returns (Model memory) {
        ModelRecord storage record = _record(modelId);
        return Model({
            creator: record.creator,
            shares: record.shares,
            numStages: record.numStages,
            status: record.status,
            specCID: record.specCID,
            revenueAsset: IModelShares(record.shares).revenueAsset(),
            operator: record.operator,
            sharesPerWorkUnit: record.sharesPerWorkUnit
        });
    }

    /// @inheritdoc IModelRegistry
    function sharesOf(uint256 modelId)
        external
        view
        returns (address shares, uint8 numStages, ModelStatus status)
    {
        ModelRecord storage record = _record(modelId);
        return (record.shares, record.numStages, record.status);
    }

    /// @inheritdoc IModelRegistry
    function workTermsOf(uint256 modelId) external view returns (address shares, uint256 sharesPerWorkUnit) {
        ModelRecord storage record = _record(modelId);
        return (record.shares, record.sharesPerWorkUnit);
    }

    /// @inheritdoc IModelRegistry
    function checkpointOf(uint256 modelId, uint8 stage) external view returns (bytes32 cid, bytes32 digest, uint64 round) {
        _checkStage(modelId, stage);
        Checkpoint storage checkpoint = _checkpoints[modelId][stage];
        return (checkpoint.cid, checkpoint.digest, checkpoint.round);
    }

    /// @inheritdoc IModelRegistry
    function setStatus(uint256 modelId, ModelStatus status) external {
        ModelRecord storage record = _record(modelId);
        if (msg.sender != record.creator) revert NotModelCreator(modelId, msg.sender);
        record.status = status;
        emit ModelStatusChanged(modelId, status);
        IRevenueRouter(IModelShares(sharesImplementation).router()).setModelStatus(modelId, status);
    }

    /// @inheritdoc IModelRegistry
    function recordCheckpoint(uint256 modelId, uint8 stage, uint64 round, bytes32 cid, bytes32 digest)
        external
        returns (bool accepted)
    {
        if (msg.sender != workLedger) revert NotWorkLedger(msg.sender);
        _checkStage(modelId, stage);
        Checkpoint storage checkpoint = _checkpoints[modelId][stage];
        if (round <= checkpoint.round) return false;
        checkpoint.cid = cid;
        checkpoint.digest = digest;
        checkpoint.round = round;
        emit CheckpointAccepted(modelId, stage, round, cid);
        return true;
    }

    /// @inheritdoc IModelRegistry
    function setDriver(uint256 modelId, address driver, bool allowed) external {
        if (msg.sender != _record(modelId).creator) revert NotModelCreator(modelId, msg.sender);
        _setRole(modelId, driver, DRIVER, allowed);
        emit DriverSet(modelId, driver, allowed);
    }

    /// @inheritdoc IModelRegistry
    function setGateway(uint256 modelId, address gateway, bool allowed) external {
        if (msg.sender != _record(modelId).operator) revert NotModelOperator(modelId, msg.sender);
        _setRole(modelId, gateway, GATEWAY, allowed);
        emit GatewaySet(modelId, gateway, allowed);
    }

    /// @inheritdoc IModelRegistry
    function isDriver(uint256 modelId, address account) external view returns (bool) {
        return _roles[modelId][account] & DRIVER != 0;
    }

    /// @inheritdoc IModelRegistry
    function isGateway(uint256 modelId, address account) external view returns (bool) {
        return _roles[modelId][account] & GATEWAY != 0;
    }

    function _setRole(uint256 modelId, address account, uint8 role, bool allowed) private {
        if (account == address(0)) revert ZeroAddress();
        uint8 roles = _roles[modelId][account];
        _roles[modelId][account] = allowed ? roles | role : roles & ~role;
    }

    function _record(uint256 modelId) private view returns (ModelRecord storage record) {
        record = _models[modelId];
        if (record.shares == address(0)) revert UnknownModel(modelId);
    }

    function _checkStage(uint256 modelId, uint8 stage) private view {
        if (stage >= _record(modelId).numStages) revert StageOutOfRange(modelId, stage);
    }
}
