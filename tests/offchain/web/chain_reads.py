"""What the dashboard shows, read with web3.py (the page's numbers are compared with these).

Stages, members, finalized rounds, claims by state, supply and revenue totals come from
offchain.chain.status (the reader `pm status` uses, kept in step with the WorkLedger's events);
payments, fees and holders from the router's and the share token's events and views."""

from __future__ import annotations

from typing import Any

from offchain.chain.protocol import Protocol
from offchain.chain.status import model_status

ZERO = "0x0000000000000000000000000000000000000000"


def dashboard_facts(protocol: Protocol, model_id: int) -> dict[str, Any]:
    status = model_status(protocol, model_id)
    shares = protocol.shares(protocol.model(model_id))
    first = protocol.first_block()
    payments = protocol.router.events.InferencePaid().get_logs(
        from_block=first, argument_filters={"modelId": model_id}
    )
    received = {log["args"]["to"] for log in shares.events.Transfer().get_logs(from_block=first)} - {ZERO}
    holders = {address: shares.functions.balanceOf(address).call() for address in received}
    owed_protocol, owed_operator = protocol.router.functions.feesOwed(model_id).call()

    def total(field: str) -> int:
        return sum(log["args"][field] for log in payments)

    return {
        "stages": {s["stage"]: (s["round"], sorted(s["members"])) for s in status["stages"]},
        "claims": {key: status["claims"][key] for key in ("pending", "finalized", "rejected", "challenged")},
        "supply": int(status["shares"]["supply"]),
        "holders": {address: balance for address, balance in holders.items() if balance},
        "money": {
            "payments": len(payments),
            "paid": total("amount"),
            "to-holders": total("toHolders"),
            "to-operator": total("toOperator"),
            "to-protocol": total("toProtocol"),
            "total-revenue": int(status["revenue"]["total_wei"]),
            "claimed": int(status["revenue"]["claimed_wei"]),
            "held": int(status["revenue"]["held_wei"]),
            "owed-operator": owed_operator,
            "owed-protocol": owed_protocol,
        },
    }
