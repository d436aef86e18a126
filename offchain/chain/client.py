"""A web3.py client for the daemons: signed EIP-1559 transactions from one local account.

What it adds to web3.py: a local nonce counter so several transactions can be in flight,
fees with a hard cap, receipts waited with a timeout, reverts decoded to the custom error
name, and retries of transient RPC failures. Keys stay inside the LocalAccount.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import requests
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractCustomError, ContractLogicError, TimeExhausted, Web3RPCError
from web3.types import TxReceipt

from offchain.chain.artifacts import DecodedError, decode_revert, load_artifact
from offchain.chain.retry import with_retries
from offchain.errors import UserError
from offchain.keys import redact_url

log = logging.getLogger(__name__)

GWEI = 10**9


class ContractRevert(UserError):
    """A transaction or call reverted; `error` names the custom error when the ABI knows it."""

    def __init__(self, action: str, error: DecodedError | None, raw: bytes = b"") -> None:
        self.error = error
        reason = str(error) if error else f"unknown revert data 0x{raw.hex()}" if raw else "no reason given"
        super().__init__(f"{action} reverted: {reason}")


@dataclass(frozen=True)
class FeePolicy:
    """EIP-1559 fee settings: maxFee = min(2 * baseFee + tip, cap)."""

    max_fee_cap_wei: int = 200 * GWEI
    default_tip_wei: int = 1 * GWEI


def _revert_data(error: BaseException) -> bytes:
    data = getattr(error, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    return b""


class ChainClient:
    """One account's view of one chain."""

    def __init__(
        self,
        rpc_url: str,
        account: LocalAccount | None = None,
        *,
        fees: FeePolicy | None = None,
        request_timeout_s: float = 15.0,
        retry_deadline_s: float = 60.0,
    ) -> None:
        self.rpc_url = rpc_url
        self.account = account
        self.fees = fees or FeePolicy()
        self.retry_deadline_s = retry_deadline_s
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": request_timeout_s}))
        # web3's validation middleware asks the node for its chain id before every call and gas
        # estimate: a second round trip each, on a 1 s claim-keeper poll and every paid request.
        # Its check adds nothing here: transactions are signed with `chain_id` read at connect, so
        # a node of another chain refuses them.
        self.w3.middleware_onion.remove("validation")
        self.chain_id = self._connect()
        self._nonce_lock = threading.Lock()
        self._next_nonce: int | None = None

    def _connect(self) -> int:
        try:
            # Quiet retries: a wrong URL should read as one error line, not a page of warnings.
            chain_id = lambda: self.w3.eth.chain_id  # noqa: E731
            return with_retries(chain_id, what="eth_chainId", deadline_s=5.0, log_level=logging.DEBUG)
        except (requests.ConnectionError, requests.Timeout):
            raise UserError(f"cannot reach the RPC URL {redact_url(self.rpc_url)}") from None
        except (requests.HTTPError, ValueError, Web3RPCError) as error:
            raise UserError(
                f"{redact_url(self.rpc_url)} is not an Ethereum JSON-RPC node ({type(error).__name__})"
            ) from None

    def rpc(self, what: str, call: Any) -> Any:
        """Run one RPC call with transient-failure retries."""
        return with_retries(call, what=what, deadline_s=self.retry_deadline_s)

    @property
    def address(self) -> str:
        if self.account is None:
            raise UserError("this command needs a key: pass --key-file or set PM_PRIVATE_KEY")
        return self.account.address

    def contract(self, name: str, address: str) -> Contract:
        """A contract handle from its build artifact's ABI."""
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)

    def call(self, fn: ContractFunction, action: str = "") -> Any:
        """A read-only call; reverts raise ContractRevert with the decoded error."""
        try:
            return self.rpc(
                action or fn.fn_name, lambda: fn.call({"from": self.account.address} if self.account else {})
            )
        except (ContractCustomError, ContractLogicError) as error:
            raw = _revert_data(error)
            raise ContractRevert(action or fn.fn_name, decode_revert(raw), raw) from None

    def fee_fields(self) -> dict[str, int]:
        base_fee = self.rpc("get_block", lambda: self.w3.eth.get_block("latest"))["baseFeePerGas"]
        if base_fee > self.fees.max_fee_cap_wei:
            cap = self.fees.max_fee_cap_wei
            raise UserError(f"base fee {base_fee / GWEI:.2f} gwei exceeds the fee cap {cap / GWEI:.2f} gwei")
        try:
            tip = self.rpc("max_priority_fee", lambda: self.w3.eth.max_priority_fee)
        except (Web3RPCError, ValueError):
            tip = self.fees.default_tip_wei
        max_fee = min(2 * base_fee + tip, self.fees.max_fee_cap_wei)
        return {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(tip, max_fee)}

    def _take_nonce(self) -> int:
        with self._nonce_lock:
            pending = self.rpc(
                "get_transaction_count", lambda: self.w3.eth.get_transaction_count(self.address, "pending")
            )
            nonce = pending if self._next_nonce is None else max(pending, self._next_nonce)
            self._next_nonce = nonce + 1
            return nonce

    def _forget_nonce(self) -> None:
        with self._nonce_lock:
            self._next_nonce = None

    def submit(
        self, fn: ContractFunction, *, value: int = 0, action: str = "", gas: int | None = None
    ) -> HexBytes:
        """Sign and send a transaction without waiting for it; returns its hash.

        The gas estimate runs the call first, so a transaction that would revert raises
        ContractRevert here and is never sent.
        """
        action = action or fn.fn_name
        # Gas is estimated without chainId: web3's validation middleware (removed in __init__)
        # stripped it from eth_estimateGas, and a node may refuse it there.
        call: dict[str, Any] = {"from": self.address, "value": value}
        tx = {**call, "chainId": self.chain_id}
        if gas is None:
            try:
                estimate = self.rpc(f"estimate_gas {action}", lambda: fn.estimate_gas(call))
            except (ContractCustomError, ContractLogicError) as error:
                raw = _revert_data(error)
                raise ContractRevert(action, decode_revert(raw), raw) from None
            gas = estimate * 6 // 5 + 10_000
        tx.update(self.fee_fields(), gas=gas, nonce=self._take_nonce())
        signed = self.account.sign_transaction(fn.build_transaction(tx))
        try:
            tx_hash = self.rpc(
                f"send {action}", lambda: self.w3.eth.send_raw_transaction(signed.raw_transaction)
            )
        except Web3RPCError as error:
            if "already known" in str(error):
                return HexBytes(signed.hash)
            self._forget_nonce()
            raise UserError(f"{action}: the node refused the transaction: {error}") from None
        log.info("sent %s tx=%s nonce=%d", action, tx_hash.hex(), tx["nonce"])
        return tx_hash

    def wait(self, tx_hash: HexBytes, *, action: str = "transaction", timeout_s: float = 120.0) -> TxReceipt:
        """Wait for a receipt; a reverted transaction raises ContractRevert with the decoded error."""
        try:
            receipt = self.rpc(
                "wait_for_receipt",
                lambda: self.w3.eth.wait_for_transaction_receipt(
                    tx_hash, timeout=timeout_s, poll_latency=0.2
                ),
            )
        except TimeExhausted:
            raise UserError(f"{action}: no receipt for {tx_hash.hex()} after {timeout_s:.0f}s") from None
        if receipt["status"] != 1:
            raise self._explain_failure(receipt, action)
        return receipt

    def _explain_failure(self, receipt: TxReceipt, action: str) -> ContractRevert:
        tx = self.w3.eth.get_transaction(receipt["transactionHash"])
        replay = {key: tx[key] for key in ("from", "to", "value", "input")}
        replay["data"] = replay.pop("input")
        # Before the block first; a revert caused by an earlier transaction of the same block (two
        # validators racing to challenge one claim) only shows against the state after it.
        for block in (receipt["blockNumber"] - 1, receipt["blockNumber"]):
            try:
                self.w3.eth.call(replay, block)
            except (ContractCustomError, ContractLogicError) as error:
                raw = _revert_data(error)
                return ContractRevert(action, decode_revert(raw), raw)
        return ContractRevert(action, None)

    def transact(
        self, fn: ContractFunction, *, value: int = 0, action: str = "", timeout_s: float = 120.0
    ) -> TxReceipt:
        """Send a transaction and wait for its receipt."""
        action = action or fn.fn_name
        return self.wait(self.submit(fn, value=value, action=action), action=action, timeout_s=timeout_s)
