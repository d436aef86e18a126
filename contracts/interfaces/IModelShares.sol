// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @dev Cap on a model's share supply. The WorkLedger mints no more than what fits under it.
uint256 constant SHARE_SUPPLY_CAP = type(uint128).max;

/// @title IModelShares
/// @notice One revenue-bearing ERC-20 per model. Shares are minted for verified training
/// work; inference revenue deposited by the RevenueRouter accrues to holders pro rata and is
/// pulled with claim(). Accounting is magnified revenue per share (2^128, rounded down per
/// deposit) and per-holder corrections kept on every mint, burn and transfer.
/// @dev Revenue that arrives while the supply is zero is held and distributed to the holders of
/// the first mint (see heldRevenue), so no payment is ever stranded.
interface IModelShares is IERC20 {
    /// @notice Only the WorkLedger may mint.
    error NotMinter(address account);
    /// @notice Only the RevenueRouter may deposit revenue.
    error NotRevenueRouter(address account);
    /// @notice The ETH sent does not match the amount (ETH models), or ETH was sent to an ERC-20 model.
    error RevenueValueMismatch(uint256 expected, uint256 received);
    /// @notice The token balance grew by a different amount than the deposited amount.
    error RevenueNotReceived(uint256 expected, uint256 received);
    /// @notice Paying out a claim failed.
    error RevenueTransferFailed(address holder, uint256 amount);
    /// @notice Minting would push the supply above `cap`: SHARE_SUPPLY_CAP, or less once revenue per
    /// share is too high for more shares to fit the accounting (see mintable).
    error SupplyCapExceeded(uint256 supply, uint256 cap);
    /// @notice A zero address where one is required.
    error ZeroAddress();

    /// @notice Revenue was credited: to the holders of `totalSupply`, or held when it is zero.
    event RevenueDeposited(uint256 amount, uint256 totalSupply);
    /// @notice Revenue held while the supply was zero was distributed to the first holders.
    event HeldRevenueReleased(uint256 amount, uint256 totalSupply);
    /// @notice A holder pulled its revenue.
    event RevenueClaimed(address indexed holder, uint256 amount);

    /// @notice Mint shares for verified work. Only the WorkLedger, which mints at most mintable().
    function mint(address to, uint256 amount) external;

    /// @notice Shares that can still be minted: up to SHARE_SUPPLY_CAP, and no more than keeps
    /// magnified revenue per share x supply within 2^254, so that every holder's entitlement stays
    /// computable (only revenue on the order of 2^100 units of the asset per share lowers it).
    function mintable() external view returns (uint256);

    /// @notice Credit inference revenue to the current holders. Only the RevenueRouter.
    /// @dev ETH models: msg.value must equal amount. ERC-20 models: the contract pulls `amount`
    /// from the router and credits only if its balance grew by exactly that much, so tokens or
    /// ETH pushed to it any other way are never credited to anyone.
    function depositRevenue(uint256 amount) external payable;

    /// @notice Revenue the holder can claim now.
    function claimable(address holder) external view returns (uint256);

    /// @notice Pay the caller its claimable revenue in the revenue asset (0 pays nothing).
    /// @return amount The amount paid.
    function claim() external returns (uint256 amount);

    /// @notice Total revenue ever credited (including revenue still held for the first holders);
    /// the RevenueRouter keeps this total (IRevenueRouter.holderRevenueOf).
    function totalRevenue() external view returns (uint256);

    /// @notice Total revenue ever paid out by claim().
    function totalClaimed() external view returns (uint256);

    /// @notice Revenue that arrived while the supply was zero, waiting for the first mint.
    function heldRevenue() external view returns (uint256);

    /// @notice The ERC-20 revenue is paid in, or address(0) for ETH.
    function revenueAsset() external view returns (address);

    /// @notice The model this token belongs to.
    function modelId() external view returns (uint256);

    /// @notice The RevenueRouter, the only depositor (the registry tells it about status changes).
    function router() external view returns (address);
}
