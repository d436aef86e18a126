// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable, Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IModelRegistry} from "./interfaces/IModelRegistry.sol";
import {IModelShares} from "./interfaces/IModelShares.sol";
import {IRevenueRouter} from "./interfaces/IRevenueRouter.sol";
import {CreateAddress} from "./libraries/CreateAddress.sol";

/// @title RevenueRouter
/// @notice Takes inference payments in ETH or a model's ERC-20, records each request id once,
/// accrues the protocol and operator fees, and deposits the rest into the model's ModelShares.
/// @dev Gas: a payment writes the request record (a new slot) and one slot per model, which holds
/// the holders' revenue total, both fee accruals and the model's status; ModelShares then updates
/// its revenue per share. Nothing asks the registry: the share token's address is computed (see
/// IRevenueRouter) and the registry pushes status changes here. Fees are pulled later instead of
/// pushed, which costs less and means a treasury or operator that rejects transfers cannot block
/// payments. A fee accrual kept in the model's slot holds up to 2^64-1 (18.4 ETH in wei); one
/// that would grow past that moves whole to the model's full-width spill slot, so the hot slot
/// stays one word and no amount is ever capped.
contract RevenueRouter is IRevenueRouter, Ownable2Step, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    /// @notice Cap on protocolFeeBps + operatorFeeBps.
    uint16 public constant MAX_TOTAL_FEE_BPS = 2_000;
    uint256 private constant BPS = 10_000;

    struct Payment {
        uint64 modelId;
        uint192 amount;
    }

    /// @dev What one payment updates: the holders' total (2^120 - 1 is past any real revenue; a
    /// larger total reverts rather than wraps) and the fee accruals below the spill.
    struct ModelAccount {
        uint120 holderRevenue;
        uint64 protocolFees;
        uint64 operatorFees;
        IModelRegistry.ModelStatus status;
    }

    struct SpilledFees {
        uint128 toProtocol;
        uint128 toOperator;
    }

    /// @notice The registry models are looked up in.
    IModelRegistry public immutable registry;

    /// @inheritdoc IRevenueRouter
    address public treasury;
    /// @inheritdoc IRevenueRouter
    uint16 public protocolFeeBps;
    /// @inheritdoc IRevenueRouter
    uint16 public operatorFeeBps;

    mapping(bytes32 requestId => Payment) private _payments;
    mapping(uint256 modelId => ModelAccount) private _accounts;
    mapping(uint256 modelId => SpilledFees) private _spilled;

    constructor(address owner_, IModelRegistry registry_, address treasury_, uint16 protocolFeeBps_, uint16 operatorFeeBps_)
        Ownable(owner_)
    {
        if (address(registry_) == address(0)) revert ZeroAddress();
        registry = registry_;
        _setTreasury(treasury_);
        _setFees(protocolFeeBps_, operatorFeeBps_);
    }

    /// @inheritdoc IRevenueRouter
    /// @dev A payment with ETH attached is an ETH payment: the router does not read the model's
    /// asset (saving a call) and ModelShares.depositRevenue refuses ETH for an ERC-20 model.
    function payForInference(uint256 modelId, bytes32 requestId, uint256 amount) external payable nonReentrant {
        if (amount == 0) revert ZeroPayment();
        Payment storage payment = _payments[requestId];
        if (payment.amount != 0) revert RequestAlreadyPaid(requestId);
        address shares = _sharesOf(modelId);
        ModelAccount storage account = _accounts[modelId];
        if (account.status != IModelRegistry.ModelStatus.Active) revert ModelNotActive(modelId);
        address token;
        if (msg.value != 0) {
            if (msg.value != amount) revert PaymentValueMismatch(amount, msg.value);
        } else {
            token = IModelShares(shares).revenueAsset();
            if (token == address(0)) revert PaymentValueMismatch(amount, 0);
            _pullExactly(token, amount);
        }

        uint256 toProtocol = amount * protocolFeeBps / BPS;
        uint256 toOperator = amount * operatorFeeBps / BPS;
        // The fees sum to at most MAX_TOTAL_FEE_BPS / BPS of amount, so this cannot underflow.
        uint256 toHolders = amount - toProtocol - toOperator;
        (payment.modelId, payment.amount) = (modelId.toUint64(), amount.toUint192());
        _credit(modelId, account, toHolders, toProtocol, toOperator);
        emit InferencePaid(modelId, requestId, msg.sender, amount, toHolders, toOperator, toProtocol);

        if (token == address(0)) {
            IModelShares(shares).depositRevenue{value: toHolders}(toHolders);
        } else {
            IERC20(token).forceApprove(shares, toHolders);
            IModelShares(shares).depositRevenue(toHolders);
        }
    }

    /// @inheritdoc IRevenueRouter
    function isPaid(bytes32 requestId) external view returns (bool) {
        return _payments[requestId].amount != 0;
    }

    /// @inheritdoc IRevenueRouter
    function paymentOf(bytes32 requestId) external view returns (uint256 modelId, uint256 amount) {
        Payment storage payment = _payments[requestId];
        return (payment.modelId, payment.amount);
    }

    /// @inheritdoc IRevenueRouter
    function feesOwed(uint256 modelId) external view returns (uint256 toProtocol, uint256 toOperator) {
        ModelAccount storage account = _accounts[modelId];
        SpilledFees storage spilled = _spilled[modelId];
        return (spilled.toProtocol + account.protocolFees, spilled.toOperator + account.operatorFees);
    }

    /// @inheritdoc IRevenueRouter
    function holderRevenueOf(uint256 modelId) external view returns (uint256) {
        return _accounts[modelId].holderRevenue;
    }

    /// @inheritdoc IRevenueRouter
    function setModelStatus(uint256 modelId, IModelRegistry.ModelStatus status) external {
        if (msg.sender != address(registry)) revert NotRegistry(msg.sender);
        _accounts[modelId].status = status;
    }

    /// @inheritdoc IRevenueRouter
    function withdrawProtocolFees(uint256 modelId) external nonReentrant returns (uint256 amount) {
        ModelAccount storage account = _accounts[modelId];
        SpilledFees storage spilled = _spilled[modelId];
        amount = spilled.toProtocol + account.protocolFees;
        if (amount == 0) return 0;
        (spilled.toProtocol, account.protocolFees) = (0, 0);
        _payOut(modelId, treasury, amount);
    }

    /// @inheritdoc IRevenueRouter
    function withdrawOperatorFees(uint256 modelId) external nonReentrant returns (uint256 amount) {
        ModelAccount storage account = _accounts[modelId];
        SpilledFees storage spilled = _spilled[modelId];
        amount = spilled.toOperator + account.operatorFees;
        if (amount == 0) return 0;
        (spilled.toOperator, account.operatorFees) = (0, 0);
        _payOut(modelId, registry.getModel(modelId).operator, amount);
    }

    /// @inheritdoc IRevenueRouter
    function setFees(uint16 protocolFeeBps_, uint16 operatorFeeBps_) external onlyOwner {
        _setFees(protocolFeeBps_, operatorFeeBps_);
    }

    /// @inheritdoc IRevenueRouter
    function setTreasury(address treasury_) external onlyOwner {
        _setTreasury(treasury_);
    }

    /// @dev The model's share token: the registry's modelId-th creation (a contract's nonce starts
    /// at 1 and the registry creates nothing but share tokens, one per model id in order). No code
    /// there means no such model yet.
    function _sharesOf(uint256 modelId) private view returns (address shares) {
        shares = CreateAddress.compute(address(registry), modelId);
        if (shares.code.length == 0) revert UnknownModel(modelId);
    }

    /// @dev Adds one payment to the model's slot in a single write; a fee accrual that would pass
    /// 64 bits moves whole to the spill slot first.
    function _credit(
        uint256 modelId,
        ModelAccount storage account,
        uint256 toHolders,
        uint256 toProtocol,
        uint256 toOperator
    ) private {
        uint256 protocolFees = account.protocolFees + toProtocol;
        uint256 operatorFees = account.operatorFees + toOperator;
        if (protocolFees > type(uint64).max) {
            _spilled[modelId].toProtocol += protocolFees.toUint128();
            protocolFees = 0;
        }
        if (operatorFees > type(uint64).max) {
            _spilled[modelId].toOperator += operatorFees.toUint128();
            operatorFees = 0;
        }
        // Both fee accruals are at most type(uint64).max here.
        (account.holderRevenue, account.protocolFees, account.operatorFees) =
            ((account.holderRevenue + toHolders).toUint120(), uint64(protocolFees), uint64(operatorFees));
    }

    /// @dev Pulls `amount` tokens from the payer and insists they all arrived, which refuses
    /// fee-on-transfer tokens (and rebasing ones that move during the call).
    function _pullExactly(address token, uint256 amount) private {
        uint256 balanceBefore = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = IERC20(token).balanceOf(address(this)) - balanceBefore;
        if (received != amount) revert PaymentNotReceived(amount, received);
    }

    function _payOut(uint256 modelId, address to, uint256 amount) private {
        emit FeesWithdrawn(modelId, to, amount);
        address asset = IModelShares(_sharesOf(modelId)).revenueAsset();
        if (asset == address(0)) {
            (bool ok,) = to.call{value: amount}("");
            if (!ok) revert FeeTransferFailed(to, amount);
        } else {
            IERC20(asset).safeTransfer(to, amount);
        }
    }

    function _setFees(uint16 protocolFeeBps_, uint16 operatorFeeBps_) private {
        uint256 total = uint256(protocolFeeBps_) + operatorFeeBps_;
        if (total > MAX_TOTAL_FEE_BPS) revert FeesTooHigh(total, MAX_TOTAL_FEE_BPS);
        protocolFeeBps = protocolFeeBps_;
        operatorFeeBps = operatorFeeBps_;
        emit FeesChanged(protocolFeeBps_, operatorFeeBps_);
    }

    function _setTreasury(address treasury_) private {
        if (treasury_ == address(0)) revert ZeroAddress();
        treasury = treasury_;
        emit TreasuryChanged(treasury_);
    }
}
