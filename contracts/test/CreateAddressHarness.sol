// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {CreateAddress} from "../libraries/CreateAddress.sol";

/// @dev Test helper: exposes CreateAddress.compute.
contract CreateAddressHarness {
    function compute(address deployer, uint256 nonce) external pure returns (address) {
        return CreateAddress.compute(deployer, nonce);
    }
}
