// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title CreateAddress
/// @notice The address of a contract deployed with CREATE: keccak256(rlp([deployer, nonce]))[12:]
/// (Ethereum yellow paper, section 7). Lets a contract find another one's creation without a call.
library CreateAddress {
    /// @dev RLP list prefix of [20-byte address, nonce] when the nonce encodes as one byte
    /// (0xc0 + 22), followed by the string prefix of the 20-byte address (0x80 + 20).
    bytes2 private constant SHORT_PREFIX = 0xd694;

    /// @notice The address `deployer` creates at `nonce`. A contract's nonce starts at 1 (EIP-161)
    /// and stays below 2^64 (EIP-2681); a larger `nonce` yields an address nothing can deploy to.
    function compute(address deployer, uint256 nonce) internal pure returns (address) {
        bytes memory encoded;
        if (nonce != 0 && nonce < 0x80) {
            // A nonce below 0x80 is its own RLP encoding.
            encoded = abi.encodePacked(SHORT_PREFIX, deployer, uint8(nonce));
        } else {
            // Otherwise 0x80 + its length, then its big-endian bytes (none for 0). length <= 32,
            // so both prefixes stay below 0x100.
            uint256 length = nonce == 0 ? 0 : Math.log256(nonce) + 1;
            encoded = abi.encodePacked(
                bytes1(uint8(0xd6 + length)),
                bytes1(0x94),
                deployer,
                bytes1(uint8(0x80 + length)),
                bytes32(nonce << (256 - 8 * length))
            );
            // Hash the 23 + length meaningful bytes only, not the 32-byte padded tail.
            assembly ("memory-safe") {
                mstore(encoded, add(23, length))
            }
        }
        return address(uint160(uint256(keccak256(encoded))));
    }
}
