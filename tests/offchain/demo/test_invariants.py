"""The invariants `pm demo` checks after faults, on summary documents: each holds on a sound run
and names what is wrong on a run that lost, doubled or mis-split something."""

from __future__ import annotations

import copy

from offchain.demo.invariants import check

A, B = "0xaaaaaaaaaaaaaaaaaaaa", "0xbbbbbbbbbbbbbbbbbbbb"


def claim(worker: str, stage: int, first: int, last: int, state: str = "finalized") -> dict:
    return {"worker": worker, "stage": stage, "first_round": first, "last_round": last, "state": state}


SOUND = {
    "shares_per_work_unit": "10",
    "rounds": [{"round": 1}, {"round": 2}],
    "workers": [
        {"name": "worker-s0-0", "stage": 0, "shares": "40", "finalized_work_units": 4},
        {"name": "worker-s1-0", "stage": 1, "shares": "20", "finalized_work_units": 2},
    ],
    "claims": {
        "list": [claim(A, 0, 1, 2), claim(B, 1, 1, 1), claim(B, 1, 2, 2), claim(B, 1, 2, 2, "voided")]
    },
    "revenue": {
        "paid_wei": "1000",
        "to_holders_wei": "900",
        "to_operator_wei": "60",
        "to_protocol_wei": "40",
        "claimed_wei": "700",
        "claimable_wei": "199",
    },
}


def broken(summary: dict) -> dict[str, str]:
    return {invariant.name: invariant.detail for invariant in check(summary) if not invariant.holds}


def test_a_sound_run_holds_every_invariant():
    assert broken(SOUND) == {}
    assert len(check(SOUND)) == 5


def test_a_doubled_claim_a_lost_round_and_wrong_accounts_are_named():
    bad = copy.deepcopy(SOUND)
    bad["claims"]["list"][3]["state"] = "pending"  # round 2 of B claimed twice
    bad["claims"]["list"][0]["last_round"] = 1  # stage 0 round 2 never finalized
    bad["workers"][1]["shares"] = "21"
    bad["revenue"]["to_protocol_wei"] = "39"
    bad["revenue"]["claimable_wei"] = "197"  # 3 wei missing for 2 holders
    assert broken(bad) == {
        "no round claimed twice": "claimed twice: [('0xbbbbbbbb', 2)]",
        "no round lost": "(stage, round) lost: [(0, 2)]",
        "shares = finalized work units x rate": "shares differ for worker-s1-0",
        "revenue paid = holders + fees": "1000 wei paid, 999 wei to holders and fees",
        "claimed + claimable = holders' part (1 wei per holder)": (
            "900 wei to holders, 897 claimed or claimable (3 wei rounding, 2 holder(s))"
        ),
    }
