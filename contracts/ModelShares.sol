// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";
import {IModelShares, SHARE_SUPPLY_CAP} from "./interfaces/IModelShares.sol";
import {IRevenueRouter} from "./interfaces/IRevenueRouter.sol";

/// @title ModelShares
/// @notice The ownership token of one model, deployed by the ModelRegistry as an EIP-1167 clone
/// with immutable args (revenue asset, model id) appended to its code, so a clone needs no
/// initializer and no storage write to know what it is.
/// @dev Revenue accounting: every deposit raises `_magnifiedRevenuePerShare` by
/// amount * 2^128 / supply, rounded down: all holders together lose less than supply / 2^128 wei
/// of a deposit (under a wei even at the supply cap; under 10^-11 wei at 10^9 whole shares), and
/// a deposit writes one word. A holder's entitlement is perShare * balance + correction; mints,
/// burns and transfers adjust corrections so that moving shares moves no past revenue, and a
/// claim subtracts what it paid from the correction (the sub-wei fraction stays with the holder).
/// The total credited is kept by the router beside the fees (totalRevenue reads it there), which
/// bounds it to 120 bits and so keeps perShare within 248 bits. Permit: the EIP-712 domain name
/// and version are the implementation's immutables, the verifying contract is the clone itself
/// (OZ's EIP712 rebuilds the separator whenever address(this) differs from the implementation),
/// so every clone has its own domain; `eip712Domain()` (ERC-5267) tells wallets what to sign.
contract ModelShares is IModelShares, ERC20Permit, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;
    using SafeCast for int256;

    /// @notice EIP-712 domain name shared by every model's token.
    string public constant EIP712_NAME = "Protocol Model Shares";
    /// @notice Supply cap (the WorkLedger mints no more than fits under it).
    uint256 public constant MAX_SUPPLY = SHARE_SUPPLY_CAP;
    uint256 private constant MAGNITUDE = 2 ** 128;
    /// @dev Every perShare x balance must fit an int256 (corrections are signed). Deposits add less
    /// than 2^248 to perShare x supply in all (the router keeps the holders' total below 2^120), so
    /// a mint that keeps perShare x supply <= 2^254 keeps it below 2^255 for good.
    uint256 private constant MAX_MAGNIFIED_SUPPLY = 2 ** 254;

    /// @inheritdoc IModelShares
    address public immutable router;
    /// @notice The WorkLedger, the only minter.
    address public immutable minter;

    uint256 private _magnifiedRevenuePerShare;
    uint256 private _totalClaimed;
    uint256 private _heldRevenue;
    mapping(address holder => int256) private _magnifiedCorrections;

    constructor(address router_, address minter_) ERC20("", "") ERC20Permit(EIP712_NAME) {
        if (router_ == address(0) || minter_ == address(0)) revert ZeroAddress();
        router = router_;
        minter = minter_;
    }

    /// @notice "Protocol Model <id> Shares".
    function name() public view override returns (string memory) {
        return string.concat("Protocol Model ", Strings.toString(modelId()), " Shares");
    }

    /// @notice "PM<id>".
    function symbol() public view override returns (string memory) {
        return string.concat("PM", Strings.toString(modelId()));
    }

    /// @inheritdoc IModelShares
    function revenueAsset() public view returns (address) {
        return address(uint160(_cloneArg(0)));
    }

    /// @inheritdoc IModelShares
    function modelId() public view returns (uint256) {
        return _cloneArg(1);
    }

    /// @inheritdoc IModelShares
    function mint(address to, uint256 amount) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        _mint(to, amount);
    }

    /// @inheritdoc IModelShares
    function mintable() external view returns (uint256) {
        uint256 limit = _supplyLimit(_magnifiedRevenuePerShare);
        uint256 supply = totalSupply();
        return limit > supply ? limit - supply : 0;
    }

    /// @inheritdoc IModelShares
    /// @dev No reentrancy guard of its own: only the router calls it, and the router holds its own
    /// lock for the whole payment, so a second deposit cannot start while one runs.
    function depositRevenue(uint256 amount) external payable {
        if (msg.sender != router) revert NotRevenueRouter(msg.sender);
        address asset = revenueAsset();
        if (asset == address(0)) {
            if (msg.value != amount) revert RevenueValueMismatch(amount, msg.value);
        } else {
            if (msg.value != 0) revert RevenueValueMismatch(0, msg.value);
            uint256 balanceBefore = IERC20(asset).balanceOf(address(this));
            IERC20(asset).safeTransferFrom(msg.sender, address(this), amount);
            uint256 received = IERC20(asset).balanceOf(address(this)) - balanceBefore;
            if (received != amount) revert RevenueNotReceived(amount, received);
        }
        uint256 supply = totalSupply();
        if (supply == 0) {
            _heldRevenue += amount;
        } else {
            _distribute(amount, supply);
        }
        emit RevenueDeposited(amount, supply);
    }

    /// @inheritdoc IModelShares
    function claimable(address holder) public view returns (uint256) {
        return _magnifiedEntitlement(holder) / MAGNITUDE;
    }

    /// @inheritdoc IModelShares
    function claim() external nonReentrant returns (uint256 amount) {
        amount = claimable(msg.sender);
        if (amount == 0) return 0;
        _magnifiedCorrections[msg.sender] -= (amount * MAGNITUDE).toInt256();
        _totalClaimed += amount;
        emit RevenueClaimed(msg.sender, amount);
        address asset = revenueAsset();
        if (asset == address(0)) {
            (bool ok,) = msg.sender.call{value: amount}("");
            if (!ok) revert RevenueTransferFailed(msg.sender, amount);
        } else {
            IERC20(asset).safeTransfer(msg.sender, amount);
        }
    }

    /// @inheritdoc IModelShares
    function totalRevenue() external view returns (uint256) {
        return IRevenueRouter(router).holderRevenueOf(modelId());
    }

    /// @inheritdoc IModelShares
    function totalClaimed() external view returns (uint256) {
        return _totalClaimed;
    }

    /// @inheritdoc IModelShares
    function heldRevenue() external view returns (uint256) {
        return _heldRevenue;
    }

    /// @dev Keeps every holder's entitlement fixed across balance changes, releases revenue held
    /// at zero supply to the first mint, and enforces the supply limit (before any product with
    /// perShare is taken).
    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        uint256 perShare = _magnifiedRevenuePerShare;
        if (from == address(0)) {
            uint256 limit = _supplyLimit(perShare);
            if (totalSupply() > limit) revert SupplyCapExceeded(totalSupply(), limit);
        }
        if (perShare != 0 && value != 0) {
            int256 correction = (perShare * value).toInt256();
            if (from != address(0)) _magnifiedCorrections[from] += correction;
            if (to != address(0)) _magnifiedCorrections[to] -= correction;
        }
        if (from == address(0)) {
            uint256 supply = totalSupply();
            uint256 held = _heldRevenue;
            if (held != 0 && supply != 0) {
                _heldRevenue = 0;
                _distribute(held, supply);
                emit HeldRevenueReleased(held, supply);
            }
        }
    }

    /// @dev The supply cap, lowered once revenue per share is so high that more shares would take
    /// perShare x supply past MAX_MAGNIFIED_SUPPLY (only a model paid on the order of 2^100 units of
    /// its asset per share gets there).
    function _supplyLimit(uint256 perShare) private pure returns (uint256) {
        return perShare == 0 ? MAX_SUPPLY : Math.min(MAX_SUPPLY, MAX_MAGNIFIED_SUPPLY / perShare);
    }

    function _distribute(uint256 amount, uint256 supply) private {
        _magnifiedRevenuePerShare += amount * MAGNITUDE / supply;
    }

    function _magnifiedEntitlement(address holder) private view returns (uint256) {
        int256 accrued = (_magnifiedRevenuePerShare * balanceOf(holder)).toInt256();
        return (accrued + _magnifiedCorrections[holder]).toUint256();
    }

    /// @dev Word `index` of the clone's immutable args, abi.encode(asset, modelId), which follow
    /// its 45 bytes of proxy code (Clones.fetchCloneArgs, one word read instead of all of them).
    function _cloneArg(uint256 index) private view returns (uint256 word) {
        assembly ("memory-safe") {
            extcodecopy(address(), 0, add(45, shl(5, index)), 32)
            word := mload(0)
        }
    }
}
