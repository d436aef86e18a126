"""What a demo run achieved, read back from the chain and the claims' manifests (not from what the demo
believes it did).

`collect` builds the summary.json document (with the faults the run rode out and the invariants
checked after them); `render` prints it as tables; `write_outputs` puts
summary.json, loss.png and every checkpoint and trace named in the summary under --out.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from offchain.chain.protocol import Protocol
from offchain.chain.status import STATES, claim_counts, claims_of
from offchain.demo.config import Cast
from offchain.demo.invariants import check
from offchain.demo.network import RoundResult
from offchain.proofs.rounds import fetch_manifest
from offchain.storage.store import Store

ETHER = 10**18


def _logs(protocol: Protocol, contract: Any, name: str, **filters: Any) -> list[dict[str, Any]]:
    event = getattr(contract.events, name)()
    found = event.get_logs(from_block=protocol.first_block(), argument_filters=filters or None)
    return [dict(log["args"]) for log in found]


def covered(claims: list[dict[str, Any]], state: str) -> list[int]:
    """Every round covered by the claims in `state`, sorted."""
    return sorted(
        r
        for claim in claims
        if claim["state"] == state
        for r in range(claim["first_round"], claim["last_round"] + 1)
    )


def collect(
    protocol: Protocol,
    store: Store,
    model_id: int,
    cast: Cast,
    rounds: list[RoundResult],
    completions: list[dict[str, Any]],
    claimed: dict[str, int],
    trained_by: int,
    faults: list[dict[str, Any]],
) -> dict[str, Any]:
    """The summary document; `trained_by` is the block at which training ended, `faults` what the
    run rode out (deaths it saw, faults it injected)."""
    model = protocol.model(model_id)
    shares = protocol.shares(model)
    supply = shares.functions.totalSupply().call()
    claims = claims_of(protocol, model_id)
    slashed: dict[str, int] = defaultdict(int)
    slashes: dict[str, int] = defaultdict(int)
    for event in _logs(protocol, protocol.ledger, "Slashed"):
        slashed[event["account"]] += event["amount"]
        slashes[event["account"]] += 1
    cascades = [
        {
            "worker": event["worker"],
            "rejected_claim_id": str(event["rejectedClaimId"]),
            "voided_claims": event["voidedClaims"],
            "bonds_released_wei": str(event["bondsReleased"]),
        }
        for event in _logs(protocol, protocol.ledger, "LaneVoided", modelId=model_id)
    ]
    runs = _logs(protocol, protocol.ledger, "ClaimsFinalized", modelId=model_id)
    paid = _logs(protocol, protocol.router, "InferencePaid", modelId=model_id)
    revenue_claimed = defaultdict(int)
    for event in _logs(protocol, shares, "RevenueClaimed"):
        revenue_claimed[event["holder"]] += event["amount"]

    workers = []
    for role in cast.workers:
        mine = [claim for claim in claims if claim["worker"] == role.address]
        balance = shares.functions.balanceOf(role.address).call()
        workers.append(
            {
                "name": role.name,
                "address": role.address,
                "stage": role.stage,
                "cheat": role.cheat,
                "claims": len(mine),
                "rounds": covered(mine, "finalized"),
                "rejected_rounds": covered(mine, "rejected"),
                "voided_rounds": covered(mine, "voided"),
                "voided_claims": sum(claim["state"] == "voided" for claim in mine),
                "finalized_work_units": sum(c["work_units"] for c in mine if c["state"] == "finalized"),
                "shares": str(balance),
                "percent_of_supply": 100 * balance / supply if supply else 0.0,
                "revenue_claimed_wei": str(revenue_claimed[role.address]),
                "claimable_wei": str(shares.functions.claimable(role.address).call()),
                "revenue_received_wei": str(claimed.get(role.address, 0)),
                "slashed_wei": str(slashed[role.address]),
                "slashes": slashes[role.address],
            }
        )

    by_round: dict[int, dict[str, int]] = defaultdict(
        lambda: {"claimed": 0, "claimed_while_training": 0, **dict.fromkeys(STATES[1:], 0), "challenged": 0}
    )
    for claim in claims:
        for round_ in range(claim["first_round"], claim["last_round"] + 1):
            counts = by_round[round_]
            counts["claimed"] += 1
            counts["claimed_while_training"] += claim["block"] <= trained_by
            counts["challenged"] += claim["challenged"]
            if claim["state"] != "pending":
                counts[claim["state"]] += 1
    checkpoints = []
    for claim in claims:
        if claim["state"] != "finalized":
            continue
        manifest = fetch_manifest(store, claim["manifest_cid"], bytes.fromhex(claim["rounds_root"][2:]))
        checkpoints += [
            {
                "stage": claim["stage"],
                "round": record.round,
                "worker": claim["worker"],
                "claim_id": claim["claim_id"],
                "manifest_cid": claim["manifest_cid"],
                "cid": record.checkpoint_cid,
                "digest": "0x" + record.checkpoint_digest.hex(),
                "trace_cid": record.trace_cid,
            }
            for record in manifest.rounds
        ]
    deployment = protocol.deployment
    summary = {
        "chain_id": deployment["chainId"],
        "model_id": model_id,
        "spec_cid": model.spec_cid,
        "shares_per_work_unit": str(model.shares_per_work_unit),
        "contracts": {name: entry["address"] for name, entry in deployment["contracts"].items()},
        "share_token": model.shares,
        "rounds": [
            {
                "round": result.round,
                "loss": result.loss,
                "losses": result.losses,
                "tokens": result.tokens,
                "tokens_per_second": result.tokens_per_second,
                "wire_bytes": result.wire_bytes,
                "bytes_per_token": result.bytes_per_token,
                "claims": by_round[result.round],
            }
            for result in rounds
        ],
        "workers": workers,
        "claims": {**claim_counts(claims), "list": claims},
        "cascades": cascades,
        "finalize_runs": {"transactions": len(runs), "claims": sum(run["claims"] for run in runs)},
        "revenue": {
            "paid_wei": str(sum(event["amount"] for event in paid)),
            "to_holders_wei": str(sum(event["toHolders"] for event in paid)),
            "to_operator_wei": str(sum(event["toOperator"] for event in paid)),
            "to_protocol_wei": str(sum(event["toProtocol"] for event in paid)),
            "claimed_wei": str(shares.functions.totalClaimed().call()),
            "claimable_wei": str(sum(int(worker["claimable_wei"]) for worker in workers)),
            "payments": len(paid),
        },
        "slashed_wei": str(sum(slashed.values())),
        "slashes": sum(slashes.values()),
        "checkpoints": checkpoints,
        "completions": completions,
        "faults": faults,
    }
    summary["invariants"] = [invariant.document() for invariant in check(summary)]
    return summary


def _eth(wei: int | str) -> str:
    return f"{int(wei) / ETHER:.6f}"


def render(summary: dict[str, Any], console: Console) -> None:
    workers = Table(title="workers")
    for column in (
        "worker",
        "stage",
        "rounds",
        "shares",
        "% supply",
        "revenue claimed (ETH)",
        "slashed (ETH)",
        "voided claims",
    ):
        workers.add_column(column, justify="left" if column == "worker" else "right")
    for worker in summary["workers"]:
        name = f"{worker['name']} {worker['address'][:10]}" + (
            " [red](cheater)[/red]" if worker["cheat"] else ""
        )
        workers.add_row(
            name,
            str(worker["stage"]),
            str(len(worker["rounds"])),
            f"{int(worker['shares']) / ETHER:g}",
            f"{worker['percent_of_supply']:.1f}",
            _eth(worker["revenue_claimed_wei"]),
            _eth(worker["slashed_wei"]) + (f" ({worker['slashes']}x)" if worker["slashes"] else ""),
            str(worker["voided_claims"]),
        )
    rounds = Table(title="rounds (claims covering each round)")
    for column in (
        "round",
        "loss",
        "tokens",
        "tokens/s",
        "wire MB",
        "claimed while training",
        "finalized",
        "rejected",
        "voided",
    ):
        rounds.add_column(column, justify="right")
    for entry in summary["rounds"]:
        counts = entry["claims"]
        rounds.add_row(
            str(entry["round"]),
            f"{entry['loss']:.4f}",
            str(entry["tokens"]),
            f"{entry['tokens_per_second']:.0f}",
            f"{entry['wire_bytes'] / 1e6:.2f}",
            f"{counts['claimed_while_training']} of {counts['claimed']}",
            str(counts["finalized"]),
            str(counts["rejected"]),
            str(counts["voided"]),
        )
    revenue, claims = summary["revenue"], summary["claims"]
    totals = Table(title="totals", show_header=False)
    totals.add_column(justify="left")
    totals.add_column(justify="right")
    fees = int(revenue["to_operator_wei"]) + int(revenue["to_protocol_wei"])
    rows = [
        ("revenue paid", _eth(revenue["paid_wei"]) + " ETH"),
        ("  to holders", _eth(revenue["to_holders_wei"]) + " ETH"),
        ("  fees (operator + protocol)", _eth(fees) + " ETH"),
        ("claimed by holders", _eth(revenue["claimed_wei"]) + " ETH"),
        ("slashed", f"{_eth(summary['slashed_wei'])} ETH in {summary['slashes']} slash(es)"),
        (
            "claims finalized / rejected / voided / challenged",
            f"{claims['finalized']} / {claims['rejected']} / {claims['voided']} / {claims['challenged']}",
        ),
    ]
    runs = summary["finalize_runs"]
    rows.append(("  finalized in runs", f"{runs['claims']} claims in {runs['transactions']} transaction(s)"))
    rows += [
        (
            f"  rejection of claim {cascade['rejected_claim_id']}",
            f"voided {cascade['voided_claims']} later claim(s), "
            f"released {_eth(cascade['bonds_released_wei'])} ETH of bonds",
        )
        for cascade in summary["cascades"]
    ]
    for label, value in rows:
        totals.add_row(label, value)
    for table in (workers, rounds, totals):
        console.print(table)
    if summary["faults"]:
        console.print(faults_table(summary["faults"]))
    console.print(invariants_table(summary["invariants"]))


def faults_table(faults: list[dict[str, Any]]) -> Table:
    table = Table(title="faults (the network rode them out)")
    for column in ("fault", "who", "at", "effect", "recovered"):
        table.add_column(column, justify="right" if column == "at" else "left")
    for fault in faults:
        recovered = (
            f"back after {fault['recovered_s']:.1f}s"
            if fault["recovered_s"] is not None
            else ("restarted" if fault["restarted"] else "not restarted")
        )
        table.add_row(fault["fault"], fault["name"], f"{fault['at_s']:.0f}s", fault["effect"], recovered)
    return table


def invariants_table(invariants: list[dict[str, Any]]) -> Table:
    table = Table(title="invariants (read back from the chain)")
    for column in ("invariant", "holds", "detail"):
        table.add_column(column)
    for invariant in invariants:
        mark = "[green]yes[/green]" if invariant["holds"] else "[red]NO[/red]"
        table.add_row(invariant["name"], mark, invariant["detail"])
    return table


def plot_loss(rounds: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    step = 0
    for entry in rounds:
        steps = list(range(step, step + len(entry["losses"])))
        axes.plot(steps, entry["losses"], marker="o", label=f"round {entry['round']}")
        step += len(entry["losses"])
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("training loss (cross-entropy)")
    axes.set_title("pm demo: loss per step, every stage on a different worker")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def cids_of(summary: dict[str, Any]) -> list[str]:
    """Every content id the summary names: the spec, each finalized claim's manifest, every round's
    checkpoint and trace."""
    cids = [summary["spec_cid"]]
    for checkpoint in summary["checkpoints"]:
        cids += [checkpoint["manifest_cid"], checkpoint["cid"], checkpoint["trace_cid"]]
    return list(dict.fromkeys(cids))


def copy_to_folder(ipfs_api: str, store_dir: Path, cids: list[str]) -> None:
    """With a Kubo daemon, copy each named DAG into the embedded store under --out (via CAR)."""
    from offchain.storage.store import open_store

    source, target = open_store(ipfs_api, store_dir), open_store(None, store_dir)
    for cid in cids:
        buffer = io.BytesIO()
        source.export_car(cid, buffer)
        buffer.seek(0)
        target.import_car(buffer)


def write_outputs(summary: dict[str, Any], out: Path, ipfs_api: str | None) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_loss(summary["rounds"], out / "loss.png")
    if ipfs_api:
        copy_to_folder(ipfs_api, out / "store", cids_of(summary))
