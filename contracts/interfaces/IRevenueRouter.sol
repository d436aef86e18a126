// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IModelRegistry} from "./IModelRegistry.sol";

/// @title IRevenueRouter
/// @notice Takes inference payments and splits them: a protocol fee to the treasury, an
/// operator fee to the model's operator, and the rest to the model's share holders.
/// @dev Fees accrue per model in the router and are pulled with withdrawProtocolFees /
/// withdrawOperatorFees, so a reverting treasury or operator can never block a payment. The
/// router also keeps, per model, the revenue it credited to the holders (ModelShares.totalRevenue
/// reads it) and a copy of the model's status that the registry updates, so a payment never calls
/// the registry: model m's share token is the registry's m-th contract creation, its address
/// computed from the registry's address and m.
interface IRevenueRouter {
    /// @notice This request id was already paid.
    error RequestAlreadyPaid(bytes32 requestId);
    /// @notice Payments must be positive.
    error ZeroPayment();
    /// @notice The model is not Active.
    error ModelNotActive(uint256 modelId);
    /// @notice The model id does not exist.
    error UnknownModel(uint256 modelId);
    /// @notice Only the ModelRegistry may do this.
    error NotRegistry(address account);
    /// @notice ETH sent does not match the amount, or no ETH was sent to an ETH model.
    error PaymentValueMismatch(uint256 expected, uint256 received);
    /// @notice The router received a different amount of tokens (fee-on-transfer or rebasing token).
    error PaymentNotReceived(uint256 expected, uint256 received);
    /// @notice protocolFeeBps + operatorFeeBps would exceed the cap.
    error FeesTooHigh(uint256 totalBps, uint256 maxBps);
    /// @notice A zero address where one is required.
    error ZeroAddress();
    /// @notice Paying out accrued fees failed.
    error FeeTransferFailed(address to, uint256 amount);

    /// @notice A request was paid and split.
    event InferencePaid(
        uint256 indexed modelId,
        bytes32 indexed requestId,
        address indexed payer,
        uint256 amount,
        uint256 toHolders,
        uint256 toOperator,
        uint256 toProtocol
    );
    /// @notice The fee split changed.
    event FeesChanged(uint16 protocolFeeBps, uint16 operatorFeeBps);
    /// @notice The treasury changed.
    event TreasuryChanged(address treasury);
    /// @notice Accrued fees of a model were paid out to the treasury or the operator.
    event FeesWithdrawn(uint256 indexed modelId, address indexed to, uint256 amount);

    /// @notice Pay for one inference request of a model, in ETH or the model's ERC-20.
    /// @param modelId The model to pay.
    /// @param requestId Unique id of the request; it can be paid once.
    /// @param amount Amount in the model's revenue asset (equal to msg.value for ETH models; ETH
    /// sent to an ERC-20 model is refused by ModelShares with RevenueValueMismatch).
    function payForInference(uint256 modelId, bytes32 requestId, uint256 amount) external payable;

    /// @notice Whether a request id was paid.
    function isPaid(bytes32 requestId) external view returns (bool);

    /// @notice The model and amount a request id paid (0, 0 if unpaid), for gateways checking a price.
    function paymentOf(bytes32 requestId) external view returns (uint256 modelId, uint256 amount);

    /// @notice Fees accrued for a model and not yet withdrawn, in the model's revenue asset.
    function feesOwed(uint256 modelId) external view returns (uint256 toProtocol, uint256 toOperator);

    /// @notice Revenue credited to a model's share holders so far (what ModelShares.totalRevenue reports).
    function holderRevenueOf(uint256 modelId) external view returns (uint256);

    /// @notice Record a model's new status. Only the ModelRegistry, from setStatus.
    function setModelStatus(uint256 modelId, IModelRegistry.ModelStatus status) external;

    /// @notice Pay a model's accrued protocol fees to the treasury (anyone may call).
    function withdrawProtocolFees(uint256 modelId) external returns (uint256 amount);

    /// @notice Pay a model's accrued operator fees to its operator (anyone may call).
    function withdrawOperatorFees(uint256 modelId) external returns (uint256 amount);

    /// @notice Change the fee split. Only the admin; the sum is capped by MAX_TOTAL_FEE_BPS.
    function setFees(uint16 protocolFeeBps, uint16 operatorFeeBps) external;

    /// @notice Change the receiver of protocol fees. Only the admin.
    function setTreasury(address treasury) external;

    /// @notice Fee to the treasury, in basis points of each payment.
    function protocolFeeBps() external view returns (uint16);

    /// @notice Fee to the model operator, in basis points of each payment.
    function operatorFeeBps() external view returns (uint16);

    /// @notice Receiver of the protocol fee.
    function treasury() external view returns (address);
}
