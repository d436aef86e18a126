"""The protocol's accounting, checked on a run's summary document (itself read back from the chain):
what must hold after any fault, since a crash may delay work but never lose or double it.

- no round claimed twice: no worker has two live claims (pending or finalized) covering one round;
- no round lost: every trained round of every stage is covered by a finalized claim;
- shares = finalized work units x rate: for every worker and for the supply;
- revenue paid = holders + fees: every payment split to the wei;
- claimed + claimable = holders' part: short by at most 1 wei per holder (rounding down per claim).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

LIVE = ("pending", "finalized")


@dataclass(frozen=True)
class Invariant:
    name: str
    holds: bool
    detail: str

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "holds": self.holds, "detail": self.detail}


def _rounds(claim: dict[str, Any]) -> range:
    return range(claim["first_round"], claim["last_round"] + 1)


def no_round_claimed_twice(summary: dict[str, Any]) -> Invariant:
    counts = Counter(
        (claim["worker"], r)
        for claim in summary["claims"]["list"]
        if claim["state"] in LIVE
        for r in _rounds(claim)
    )
    twice = sorted((worker[:10], r) for (worker, r), n in counts.items() if n > 1)
    detail = f"{len(counts)} (worker, round) pairs claimed" if not twice else f"claimed twice: {twice}"
    return Invariant("no round claimed twice", not twice, detail)


def no_round_lost(summary: dict[str, Any]) -> Invariant:
    stages = {worker["stage"] for worker in summary["workers"]}
    trained = {entry["round"] for entry in summary["rounds"]}
    finalized = {
        (claim["stage"], r)
        for claim in summary["claims"]["list"]
        if claim["state"] == "finalized"
        for r in _rounds(claim)
    }
    lost = sorted((stage, r) for stage in stages for r in trained if (stage, r) not in finalized)
    detail = (
        f"{len(trained)} round(s) x {len(stages)} stage(s) finalized"
        if not lost
        else f"(stage, round) lost: {lost}"
    )
    return Invariant("no round lost", not lost, detail)


def shares_match_work(summary: dict[str, Any]) -> Invariant:
    rate = int(summary["shares_per_work_unit"])
    wrong = [
        worker["name"]
        for worker in summary["workers"]
        if int(worker["shares"]) != worker["finalized_work_units"] * rate
    ]
    units = sum(worker["finalized_work_units"] for worker in summary["workers"])
    detail = f"{units} work units x {rate} per unit" if not wrong else f"shares differ for {', '.join(wrong)}"
    return Invariant("shares = finalized work units x rate", not wrong, detail)


def revenue_split(summary: dict[str, Any]) -> Invariant:
    revenue = summary["revenue"]
    paid = int(revenue["paid_wei"])
    parts = sum(int(revenue[key]) for key in ("to_holders_wei", "to_operator_wei", "to_protocol_wei"))
    return Invariant(
        "revenue paid = holders + fees", paid == parts, f"{paid} wei paid, {parts} wei to holders and fees"
    )


def holders_paid(summary: dict[str, Any]) -> Invariant:
    revenue = summary["revenue"]
    holders = sum(1 for worker in summary["workers"] if int(worker["shares"]) > 0)
    owed = int(revenue["to_holders_wei"])
    accounted = int(revenue["claimed_wei"]) + int(revenue["claimable_wei"])
    gap = owed - accounted
    return Invariant(
        "claimed + claimable = holders' part (1 wei per holder)",
        0 <= gap <= holders,
        f"{owed} wei to holders, {accounted} claimed or claimable ({gap} wei rounding, {holders} holder(s))",
    )


CHECKS = (no_round_claimed_twice, no_round_lost, shares_match_work, revenue_split, holders_paid)


def check(summary: dict[str, Any]) -> list[Invariant]:
    return [invariant(summary) for invariant in CHECKS]
