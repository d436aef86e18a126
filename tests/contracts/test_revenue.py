"""ModelShares: pro-rata revenue, rounding, zero-supply revenue, claims in ETH and ERC-20."""

from conftest import pay_eth, request_id, split, within_one_wei
from custom_errors import reverts_with

ETHER = 10**18


def test_only_the_ledger_mints_and_only_the_router_deposits(eth_shares, minter, accounts):
    with reverts_with("NotMinter", accounts[5].address):
        eth_shares.mint(accounts[5], 1, {"from": accounts[5]})
    with reverts_with("NotRevenueRouter", minter.address):
        eth_shares.depositRevenue(1, {"from": minter, "value": 1})


def test_revenue_is_split_pro_rata_and_claimed_in_eth(router, eth_model, eth_shares, minter, holders):
    a, b, payer = holders[0], holders[1], holders[4]
    eth_shares.mint(a, 1 * ETHER, {"from": minter})
    eth_shares.mint(b, 3 * ETHER, {"from": minter})
    tx = pay_eth(router, eth_model, 4 * ETHER, payer)
    to_holders = split(4 * ETHER)[0]
    assert tx.events["RevenueDeposited"] == {"amount": to_holders, "totalSupply": 4 * ETHER}
    share_a = eth_shares.claimable(a)
    assert within_one_wei(share_a, to_holders // 4)
    assert within_one_wei(eth_shares.claimable(b), to_holders * 3 // 4)
    assert eth_shares.totalRevenue() == to_holders

    before = a.balance()
    tx = eth_shares.claim({"from": a})
    assert tx.return_value == share_a
    assert tx.events["RevenueClaimed"] == {"holder": a, "amount": share_a}
    assert a.balance() - before == share_a  # the development network's gas price is 0
    assert eth_shares.claimable(a) == 0
    assert eth_shares.totalClaimed() == share_a
    assert eth_shares.balance() == to_holders - share_a


def test_claim_with_nothing_pays_nothing(eth_shares, holders):
    tx = eth_shares.claim({"from": holders[0]})
    assert tx.return_value == 0
    assert "RevenueClaimed" not in tx.events


def test_rounding_leaves_each_holder_less_than_a_wei_behind(router, eth_model, eth_shares, minter, holders):
    """Each deposit's per-share increment rounds down: 3 holders of 1 share unit, 30 payments of
    1 wei (fees round to 0), exact share 10 wei each; all 30 wei stay in the contract."""
    for holder in holders[:3]:
        eth_shares.mint(holder, 1, {"from": minter})
    for i in range(30):
        pay_eth(router, eth_model, 1, holders[4], label=f"wei-{i}")
    assert eth_shares.totalRevenue() == 30
    assert [eth_shares.claimable(h) for h in holders[:3]] == [9] * 3  # 10 - 10/2^128, floored
    assert eth_shares.balance() == 30


def test_revenue_paid_at_zero_supply_is_held_for_the_first_mint(
    router, eth_model, eth_shares, minter, holders
):
    pay_eth(router, eth_model, ETHER, holders[4])
    held = split(ETHER)[0]
    assert eth_shares.heldRevenue() == held
    assert eth_shares.totalRevenue() == held
    tx = eth_shares.mint(holders[0], 7, {"from": minter})
    assert tx.events["HeldRevenueReleased"] == {"amount": held, "totalSupply": 7}
    assert eth_shares.heldRevenue() == 0
    first = eth_shares.claimable(holders[0])
    assert within_one_wei(first, held)
    eth_shares.mint(holders[1], 7, {"from": minter})
    assert eth_shares.claimable(holders[1]) == 0
    assert eth_shares.claimable(holders[0]) == first


def test_transfers_move_shares_but_not_accrued_revenue(router, eth_model, eth_shares, minter, holders):
    a, b = holders[0], holders[1]
    eth_shares.mint(a, 10, {"from": minter})
    pay_eth(router, eth_model, ETHER, holders[4], label="first")
    accrued = eth_shares.claimable(a)
    eth_shares.transfer(b, 10, {"from": a})
    assert eth_shares.claimable(a) == accrued
    assert eth_shares.claimable(b) == 0
    pay_eth(router, eth_model, ETHER, holders[4], label="second")
    assert eth_shares.claimable(a) == accrued
    assert within_one_wei(eth_shares.claimable(b), split(ETHER)[0])


def test_erc20_revenue_is_pulled_and_claimed_in_the_token(
    router, token, token_model, token_shares, minter, holders
):
    a, b, payer = holders[0], holders[1], holders[4]
    token_shares.mint(a, 1, {"from": minter})
    token_shares.mint(b, 1, {"from": minter})
    token.mint(payer, 1_000_000, {"from": payer})
    token.approve(router, 1_000_000, {"from": payer})
    tx = router.payForInference(token_model, request_id("erc20"), 1_000_000, {"from": payer})
    to_holders, to_operator, to_protocol = split(1_000_000)
    assert tx.events["InferencePaid"]["toHolders"] == to_holders
    assert token.balanceOf(token_shares) == to_holders
    assert token.balanceOf(router) == to_operator + to_protocol
    assert token.allowance(router, token_shares) == 0
    share_a = token_shares.claimable(a)
    assert within_one_wei(share_a, to_holders // 2)
    token_shares.claim({"from": a})
    assert token.balanceOf(a) == share_a
    assert token.balanceOf(token_shares) == to_holders - share_a
    assert within_one_wei(token_shares.claimable(b), to_holders // 2)
    assert token_shares.balance() == 0


def test_permit_works_on_a_clone_and_only_on_that_clone(eth_shares, token_shares, holders, accounts):
    from eth_account import Account
    from eth_account.messages import encode_typed_data

    owner = Account.create()
    spender = holders[1]
    _, name, version, chain_id, verifying_contract, _, _ = eth_shares.eip712Domain()
    assert verifying_contract == eth_shares.address
    message = {
        "owner": owner.address,
        "spender": spender.address,
        "value": 123,
        "nonce": eth_shares.nonces(owner.address),
        "deadline": 2**64,
    }
    typed = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": verifying_contract,
        },
        "message": message,
    }
    signed = Account.sign_message(encode_typed_data(full_message=typed), owner.key)
    with reverts_with("ERC2612InvalidSigner"):
        token_shares.permit(
            owner.address, spender, 123, 2**64, signed.v, signed.r, signed.s, {"from": accounts[0]}
        )
    eth_shares.permit(owner.address, spender, 123, 2**64, signed.v, signed.r, signed.s, {"from": accounts[0]})
    assert eth_shares.allowance(owner.address, spender) == 123
    assert eth_shares.nonces(owner.address) == 1
    assert name == eth_shares.EIP712_NAME()
