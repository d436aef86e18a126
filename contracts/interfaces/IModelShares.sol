// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @title IModelShares
/// @notice One revenue-bearing ERC-20 per model. Shares are minted for verified training
/// work; inference revenue deposited by the RevenueRouter accrues to holders pro rata and is
/// pulled with claim(). Accounting is magnified revenue per share (2^128) with the division
/// remainder carried, and per-holder corrections kept on every mint, burn and transfer.
interface IModelShares is IERC20 {
    /// @notice Only the WorkLedger may mint.
    error NotMinter(address account);
    /// @notice Only the RevenueRouter may deposit revenue.
    error NotRevenueRouter(address account);
    /// @notice The ETH sent does not match the amount (ETH models), or ETH was sent to an ERC-20 model.
    error RevenueValueMismatch(uint256 expected, uint256 received);
    /// @notice The token balance grew by less than the deposited amount.
    error RevenueNotReceived(uint256 expected, uint256 received);
    /// @notice Paying out a claim failed.
    error RevenueTransferFailed(address holder, uint256 amount);
    /// @notice The clone was already initialized.
    error AlreadyInitialized();

    /// @notice Revenue was credited to holders.
    event RevenueDeposited(uint256 amount, uint256 totalSupply);
    /// @notice A holder pulled its revenue.
    event RevenueClaimed(address indexed holder, uint256 amount);

    /// @notice Mint shares for verified work. Only the WorkLedger.
    function mint(address to, uint256 amount) external;

    /// @notice Credit inference revenue to the current holders. Only the RevenueRouter.
    /// @dev For ETH models msg.value must equal amount; for ERC-20 models the router transfers
    /// the tokens first and the credited amount is the tracked balance delta.
    function depositRevenue(uint256 amount) external payable;

    /// @notice Revenue the holder can claim now.
    function claimable(address holder) external view returns (uint256);

    /// @notice Pay the caller its claimable revenue in the revenue asset.
    /// @return amount The amount paid.
    function claim() external returns (uint256 amount);

    /// @notice Total revenue ever credited to holders.
    function totalRevenue() external view returns (uint256);

    /// @notice Total revenue ever paid out by claim().
    function totalClaimed() external view returns (uint256);

    /// @notice The ERC-20 revenue is paid in, or address(0) for ETH.
    function revenueAsset() external view returns (address);

    /// @notice The model this token belongs to.
    function modelId() external view returns (uint256);
}
