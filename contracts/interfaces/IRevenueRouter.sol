// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IRevenueRouter
/// @notice Takes inference payments and splits them: a protocol fee to the treasury, an
/// operator fee to the model's operator, and the rest to the model's share holders.
interface IRevenueRouter {
    /// @notice This request id was already paid.
    error RequestAlreadyPaid(bytes32 requestId);
    /// @notice Payments must be positive.
    error ZeroPayment();
    /// @notice The model is not Active.
    error ModelNotActive(uint256 modelId);
    /// @notice ETH sent does not match the amount (ETH models), or ETH sent to an ERC-20 model.
    error PaymentValueMismatch(uint256 expected, uint256 received);
    /// @notice The router received fewer tokens than the amount (fee-on-transfer or rebasing token).
    error PaymentNotReceived(uint256 expected, uint256 received);
    /// @notice protocolFeeBps + operatorFeeBps would exceed the cap.
    error FeesTooHigh(uint256 totalBps, uint256 maxBps);
    /// @notice A zero address where one is required.
    error ZeroAddress();

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

    /// @notice Pay for one inference request of a model, in ETH or the model's ERC-20.
    /// @param modelId The model to pay.
    /// @param requestId Unique id of the request; it can be paid once.
    /// @param amount Amount in the model's revenue asset (equal to msg.value for ETH models).
    function payForInference(uint256 modelId, bytes32 requestId, uint256 amount) external payable;

    /// @notice Whether a request id was paid.
    function isPaid(bytes32 requestId) external view returns (bool);

    /// @notice Fee to the treasury, in basis points of each payment.
    function protocolFeeBps() external view returns (uint16);

    /// @notice Fee to the model operator, in basis points of each payment.
    function operatorFeeBps() external view returns (uint16);

    /// @notice Receiver of the protocol fee.
    function treasury() external view returns (address);
}
