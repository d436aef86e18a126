// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Forces ETH into a contract that has no payable entry for it: SELFDESTRUCT in the
/// constructor still moves the balance after EIP-6780.
contract ForceSend {
    constructor(address payable target) payable {
        selfdestruct(target);
    }
}
