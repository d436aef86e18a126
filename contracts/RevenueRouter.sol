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

/// @title RevenueRouter
/// @notice Takes inference payments in ETH or a model's ERC-20, records each request id once,
/// accrues the protocol and operator fees, and deposits the rest into the model's ModelShares.
/// @dev Gas: one payment writes the request record (a new slot), one packed fee slot per model and
/// the shares' accounting; fees are pulled later instead of pushed, which costs less and means a
/// treasury or operator that rejects transfers cannot block payments.
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

    struct Fees {
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
    mapping(uint256 modelId => Fees) private _fees;

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
        if (_payments[requestId].amount != 0) revert RequestAlreadyPaid(requestId);
        (address shares,, IModelRegistry.ModelStatus status) = registry.sharesOf(modelId);
        if (status != IModelRegistry.ModelStatus.Active) revert ModelNotActive(modelId);
        address token;
        if (msg.value != 0) {
            if (msg.value != amount) revert PaymentValueMismatch(amount, msg.value);
        } else {
            token = IModelShares(shares).revenueAsset();
            if (token == address(0)) revert PaymentValueMismatch(amount, 0);
            _pullExactly(token, amount);
        }

        (uint16 protocolBps, uint16 operatorBps) = (protocolFeeBps, operatorFeeBps);
        uint256 toProtocol = amount * protocolBps / BPS;
        uint256 toOperator = amount * operatorBps / BPS;
        // The fees sum to at most MAX_TOTAL_FEE_BPS / BPS of amount, so this cannot underflow.
        uint256 toHolders = amount - toProtocol - toOperator;
        _payments[requestId] = Payment({modelId: modelId.toUint64(), amount: amount.toUint192()});
        if (toProtocol != 0 || toOperator != 0) {
            Fees storage fees = _fees[modelId];
            fees.toProtocol += toProtocol.toUint128();
            fees.toOperator += toOperator.toUint128();
        }
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
        Fees storage fees = _fees[modelId];
        return (fees.toProtocol, fees.toOperator);
    }

    /// @inheritdoc IRevenueRouter
    function withdrawProtocolFees(uint256 modelId) external nonReentrant returns (uint256 amount) {
        Fees storage fees = _fees[modelId];
        amount = fees.toProtocol;
        if (amount == 0) return 0;
        fees.toProtocol = 0;
        _payOut(modelId, treasury, amount);
    }

    /// @inheritdoc IRevenueRouter
    function withdrawOperatorFees(uint256 modelId) external nonReentrant returns (uint256 amount) {
        Fees storage fees = _fees[modelId];
        amount = fees.toOperator;
        if (amount == 0) return 0;
        fees.toOperator = 0;
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
        (address shares,,) = registry.sharesOf(modelId);
        address asset = IModelShares(shares).revenueAsset();
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
