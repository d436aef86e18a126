"""`pm status`: one model's stages, members, finalized rounds, claims by state, shares and revenue.

Claims are read from the WorkLedger's events (the ledger reuses storage across rounds, so an old
claim's state lives in its events): a claim is pending until a ClaimFinalized or ClaimRejected
names it, and challenged once a ClaimChallenged does.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from offchain.chain.protocol import Protocol


def _event_logs(protocol: Protocol, name: str, **filters: Any) -> list[Any]:
    event = getattr(protocol.ledger.events, name)()
    return protocol.client.rpc(
        f"get_logs {name}",
        lambda: event.get_logs(from_block=protocol.first_block(), argument_filters=filters or None),
    )


def claims_of(protocol: Protocol, model_id: int) -> list[dict[str, Any]]:
    """Every claim submitted for the model, oldest first, with its state."""
    submitted = _event_logs(protocol, "ClaimSubmitted", modelId=model_id)
    ids = {log["args"]["claimId"] for log in submitted}
    finalized = {
        log["args"]["claimId"]: log["args"]["sharesMinted"] for log in _event_logs(protocol, "ClaimFinalized")
    }
    rejected = {log["args"]["claimId"] for log in _event_logs(protocol, "ClaimRejected")} & ids
    challenged = {log["args"]["claimId"] for log in _event_logs(protocol, "ClaimChallenged")} & ids
    claims = []
    for log in submitted:
        args = log["args"]
        claim_id = args["claimId"]
        state = "finalized" if claim_id in finalized else "rejected" if claim_id in rejected else "pending"
        claims.append(
            {
                "claim_id": str(claim_id),
                "stage": args["stage"],
                "round": args["round"],
                "worker": args["worker"],
                "work_units": args["workUnits"],
                "checkpoint_cid": args["checkpointCID"],
                "checkpoint_digest": "0x" + args["checkpointDigest"].hex(),
                "trace_cid": args["traceCID"],
                "state": state,
                "challenged": claim_id in challenged,
                "shares_minted": str(finalized.get(claim_id, 0)),
            }
        )
    return claims


def model_status(protocol: Protocol, model_id: int) -> dict[str, Any]:
    model = protocol.model(model_id)
    shares = protocol.shares(model)
    stages = []
    for stage in range(model.num_stages):
        cid, digest, round_ = protocol.registry.functions.checkpointOf(model_id, stage).call()
        members = protocol.ledger.functions.membersOf(model_id, stage).call() if protocol.ledger else []
        stages.append(
            {
                "stage": stage,
                "members": members,
                "round": round_,
                "checkpoint_cid": cid,
                "digest": "0x" + digest.hex(),
            }
        )
    claims = claims_of(protocol, model_id) if protocol.ledger else []
    states = Counter(claim["state"] for claim in claims)
    return {
        "model": model.to_json(),
        "stages": stages,
        "claims": {
            "pending": states["pending"],
            "finalized": states["finalized"],
            "rejected": states["rejected"],
            "challenged": sum(claim["challenged"] for claim in claims),
            "list": claims,
        },
        "shares": {"supply": str(shares.functions.totalSupply().call())},
        "revenue": {
            "total_wei": str(shares.functions.totalRevenue().call()),
            "claimed_wei": str(shares.functions.totalClaimed().call()),
            "held_wei": str(shares.functions.heldRevenue().call()),
        },
    }
