// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IModelShares} from "../interfaces/IModelShares.sol";

/// @notice A share holder whose receive() re-enters claim(). In `swallow` mode it catches the
/// failed re-entry (so the outer claim can complete); otherwise the failure bubbles up.
contract ReentrantClaimer {
    IModelShares public immutable shares;
    bool public immutable swallow;
    uint256 public reentryAttempts;
    uint256 public reentryFailures;

    constructor(IModelShares shares_, bool swallow_) {
        shares = shares_;
        swallow = swallow_;
    }

    function claim() external returns (uint256) {
        return shares.claim();
    }

    receive() external payable {
        reentryAttempts += 1;
        if (!swallow) {
            shares.claim();
            return;
        }
        try shares.claim() {}
        catch {
            reentryFailures += 1;
        }
    }
}
