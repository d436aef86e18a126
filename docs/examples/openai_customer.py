"""Pay a gateway on-chain and get a completion with the official OpenAI client.

Needs: pip install openai httpx web3. Environment: PM_GATEWAY (the gateway's URL), PM_RPC_URL (the
chain), PM_PRIVATE_KEY (a funded account), PM_MODEL (the model id, default 1; a model paid in ETH).
"""

import os

import httpx
import openai
from eth_account import Account
from web3 import Web3

GATEWAY = os.environ.get("PM_GATEWAY", "http://127.0.0.1:8000")
MODEL = os.environ.get("PM_MODEL", "1")
PAY = [  # RevenueRouter.payForInference: the one function this needs
    {
        "name": "payForInference",
        "type": "function",
        "stateMutability": "payable",
        "inputs": [
            {"name": "modelId", "type": "uint256"},
            {"name": "requestId", "type": "bytes32"},
            {"name": "amount", "type": "uint256"},
        ],
        "outputs": [],
    }
]

w3 = Web3(Web3.HTTPProvider(os.environ.get("PM_RPC_URL", "http://127.0.0.1:8545")))
account = Account.from_key(os.environ["PM_PRIVATE_KEY"])
request = {"model": MODEL, "prompt": "The assert statement", "max_tokens": 16, "temperature": 0}

# 1. The price of exactly this request, and a ticket to pay it with.
quote = httpx.post(f"{GATEWAY}/v1/quote", json=request).json()
amount = int(quote["amount"])

# 2. Pay the ticket's request id on-chain (the router splits it: holders, operator, protocol).
router = w3.eth.contract(address=quote["router"], abi=PAY)
transaction = router.functions.payForInference(int(MODEL), quote["requestId"], amount).build_transaction(
    {"from": account.address, "value": amount, "nonce": w3.eth.get_transaction_count(account.address)}
)
receipt = w3.eth.wait_for_transaction_receipt(
    w3.eth.send_raw_transaction(account.sign_transaction(transaction).raw_transaction)
)
print(f"paid {amount} wei in tx {receipt['transactionHash'].to_0x_hex()}")

# 3. The ticket is the API key: any OpenAI client now gets the completion (once).
client = openai.OpenAI(base_url=f"{GATEWAY}/v1", api_key=quote["ticket"])
for chunk in client.completions.create(**request, stream=True):
    print(chunk.choices[0].text if chunk.choices else "", end="", flush=True)
print()
