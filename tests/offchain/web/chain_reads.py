"""What the dashboard shows, read with web3.py: the page's numbers are compared with these.

The one Python reader of the WorkLedger's events for the web tests (v2: claims over round ranges,
claimId = laneId << 64 | seq, LaneVoided voids the later open claims of a rejected claim's lane),
and the router's and share token's events and views for money and holders."""

from __future__ import annotations

from typing import Any

from offchain.chain.protocol import Protocol

ZERO = "0x0000000000000000000000000000000000000000"


def _logs(contract: Any, name: str, first_block: int, **filters: Any) -> list[Any]:
    return getattr(contract.events, name)().get_logs(from_block=first_block, argument_filters=filters or None)


def claim_states(protocol: Protocol, model_id: int) -> dict[str, int]:
    ledger, first = protocol.ledger, protocol.first_block()
    finalized = {log["args"]["claimId"] for log in _logs(ledger, "ClaimFinalized", first)}
    rejected = {log["args"]["claimId"] for log in _logs(ledger, "ClaimRejected", first)}
    challenged = {log["args"]["claimId"] for log in _logs(ledger, "ClaimChallenged", first)}
    voids = [
        (log["args"]["rejectedClaimId"], (log["blockNumber"], log["logIndex"]))
        for log in _logs(ledger, "LaneVoided", first, modelId=model_id)
    ]
    counts = dict.fromkeys(("pending", "finalized", "rejected", "voided", "challenged"), 0)
    for log in _logs(ledger, "ClaimSubmitted", first, modelId=model_id):
        claim_id, at = log["args"]["claimId"], (log["blockNumber"], log["logIndex"])
        voided = any(r >> 64 == claim_id >> 64 and r < claim_id and at < when for r, when in voids)
        state = (
            "finalized" if claim_id in finalized
            else "rejected" if claim_id in rejected
            else "voided" if voided
            else "pending"
        )  # fmt: skip
        counts[state] += 1
        counts["challenged"] += claim_id in challenged
    return counts


def dashboard_facts(protocol: Protocol, model_id: int) -> dict[str, Any]:
    model = protocol.model(model_id)
    shares, router, first = protocol.shares(model), protocol.router, protocol.first_block()
    stages = {}
    for stage in range(model.num_stages):
        _, _, round_ = protocol.registry.functions.checkpointOf(model_id, stage).call()
        members = protocol.ledger.functions.membersOf(model_id, stage).call()
        validators = protocol.ledger.functions.validatorsOf(model_id, stage).call()
        stages[stage] = {"round": round_, "members": sorted(members), "validators": sorted(validators)}
    payments = [log["args"] for log in _logs(router, "InferencePaid", first, modelId=model_id)]
    received = {log["args"]["to"] for log in _logs(shares, "Transfer", first)} - {ZERO}
    holders = {address: shares.functions.balanceOf(address).call() for address in received}
    owed_protocol, owed_operator = router.functions.feesOwed(model_id).call()
    return {
        "stages": stages,
        "claims": claim_states(protocol, model_id),
        "supply": shares.functions.totalSupply().call(),
        "holders": {address: balance for address, balance in holders.items() if balance},
        "payments": len(payments),
        "money": {
            "paid": sum(p["amount"] for p in payments),
            "to-holders": sum(p["toHolders"] for p in payments),
            "to-operator": sum(p["toOperator"] for p in payments),
            "to-protocol": sum(p["toProtocol"] for p in payments),
            "total-revenue": shares.functions.totalRevenue().call(),
            "claimed": shares.functions.totalClaimed().call(),
            "held": shares.functions.heldRevenue().call(),
            "owed-operator": owed_operator,
            "owed-protocol": owed_protocol,
        },
    }
