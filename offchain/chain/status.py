"""`pm status`: one model's stages (members, validators, finalized round and checkpoint), its claims by
state, shares and revenue.

Claims are read from the WorkLedger's events, so every claim ever made shows, not only the open
ones the ledger still stores: a claim is pending until a ClaimFinalized or ClaimRejected names it,
challenged once a ClaimChallenged does, and voided when a LaneVoided of its lane follows its
submission and names an earlier claim (a rejection voids every later open claim of the lane, and
no later claim of a lane can settle before an earlier one, so every such claim was still open).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from offchain.chain.protocol import Protocol
from offchain.storage.cids import bytes32_to_cid

ZERO32 = bytes(32)
STATES = ("pending", "finalized", "rejected", "voided")


def cid_of(value: bytes) -> str | None:
    """The CIDv0 text of an on-chain bytes32 CID digest (None for zero: no CID)."""
    value = bytes(value)
    return bytes32_to_cid(value) if value != ZERO32 else None


def lane_of(claim_id: int) -> int:
    """claimId = laneId << 64 | seq."""
    return claim_id >> 64


def _event_logs(protocol: Protocol, name: str, **filters: Any) -> list[Any]:
    event = getattr(protocol.ledger.events, name)()
    return protocol.client.rpc(
        f"get_logs {name}",
        lambda: event.get_logs(from_block=protocol.first_block(), argument_filters=filters or None),
    )


def _position(log: Any) -> tuple[int, int]:
    return log["blockNumber"], log["logIndex"]


def claims_of(protocol: Protocol, model_id: int) -> list[dict[str, Any]]:
    """Every claim submitted for the model, oldest first, with its state."""
    submitted = _event_logs(protocol, "ClaimSubmitted", modelId=model_id)
    finalized = {
        log["args"]["claimId"]: log["args"]["sharesMinted"] for log in _event_logs(protocol, "ClaimFinalized")
    }
    rejected = {log["args"]["claimId"] for log in _event_logs(protocol, "ClaimRejected")}
    challenged = {log["args"]["claimId"] for log in _event_logs(protocol, "ClaimChallenged")}
    voids = [
        (log["args"]["rejectedClaimId"], _position(log))
        for log in _event_logs(protocol, "LaneVoided", modelId=model_id)
    ]
    claims = []
    for log in submitted:
        args = log["args"]
        claim_id = args["claimId"]
        voided = any(
            lane_of(rejected_id) == lane_of(claim_id) and rejected_id < claim_id and _position(log) < at
            for rejected_id, at in voids
        )
        state = (
            "finalized"
            if claim_id in finalized
            else "rejected"
            if claim_id in rejected
            else "voided"
            if voided
            else "pending"
        )
        claims.append(
            {
                "claim_id": str(claim_id),
                "previous_claim_id": str(args["previousClaimId"]),
                "stage": args["stage"],
                "first_round": args["firstRound"],
                "last_round": args["lastRound"],
                "worker": args["worker"],
                "work_units": args["workUnits"],
                "parent_cid": cid_of(args["parentCID"]),
                "checkpoint_cid": cid_of(args["checkpointCID"]),
                "checkpoint_digest": "0x" + bytes(args["checkpointDigest"]).hex(),
                "rounds_root": "0x" + bytes(args["roundsRoot"]).hex(),
                "manifest_cid": cid_of(args["manifestCID"]),
                "state": state,
                "challenged": claim_id in challenged,
                "shares_minted": str(finalized.get(claim_id, 0)),
                "block": log["blockNumber"],
            }
        )
    return claims


def claim_counts(claims: list[dict[str, Any]]) -> dict[str, int]:
    """Claims (and the rounds they cover) per state, and how many were challenged."""
    states = Counter(claim["state"] for claim in claims)
    rounds = Counter()
    for claim in claims:
        rounds[claim["state"]] += claim["last_round"] - claim["first_round"] + 1
    counts = {state: states[state] for state in STATES}
    counts.update({f"{state}_rounds": rounds[state] for state in STATES})
    counts["challenged"] = sum(claim["challenged"] for claim in claims)
    return counts


def model_status(protocol: Protocol, model_id: int) -> dict[str, Any]:
    model = protocol.model(model_id)
    shares = protocol.shares(model)
    ledger = protocol.ledger
    stages = []
    for stage in range(model.num_stages):
        cid, digest, round_ = protocol.registry.functions.checkpointOf(model_id, stage).call()
        stages.append(
            {
                "stage": stage,
                "members": ledger.functions.membersOf(model_id, stage).call() if ledger else [],
                "validators": ledger.functions.validatorsOf(model_id, stage).call() if ledger else [],
                "round": round_,
                "checkpoint_cid": cid_of(cid),
                "digest": "0x" + bytes(digest).hex(),
            }
        )
    claims = claims_of(protocol, model_id) if ledger else []
    return {
        "model": model.to_json(),
        "stages": stages,
        "claims": {**claim_counts(claims), "list": claims},
        "shares": {"supply": str(shares.functions.totalSupply().call())},
        "revenue": {
            "total_wei": str(shares.functions.totalRevenue().call()),
            "claimed_wei": str(shares.functions.totalClaimed().call()),
            "held_wei": str(shares.functions.heldRevenue().call()),
        },
    }
