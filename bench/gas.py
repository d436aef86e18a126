"""Gas of the protocol's hot paths, measured on a fresh anvil: writes bench/results/gas.json.

    python bench/gas.py                 # launches anvil on a free port through brownie
    python bench/gas.py --network ID    # any brownie network id instead

Every figure is `gasUsed` of one transaction receipt (21,000 base included) in steady state: the
contracts and slots the operation touches already exist, as they do after the first payment of a
model or once a worker's lane has cycled through its ring of claim slots. Payments and claims are
repeated with 1, 10 and 100 holders to show that their cost does not depend on the number of
holders. The ledger section also prints what one worker spends per day at 5-minute rounds with
1 and 12 rounds per claim, and what 1000 such workers would take of an L1's daily gas.
"""

import argparse
import contextlib
import io
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from offchain.demo.anvil import free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gas.json"
ZERO = "0x" + "00" * 20
SPEC_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
ETHER = 10**18
HOLDER_COUNTS = (1, 10, 100)


@dataclass
class Row:
    operation: str
    gas: int
    target: int | None = None
    holders: int | None = None
    note: str = ""

    @property
    def within_target(self) -> bool | None:
        return None if self.target is None else self.gas <= self.target


def connect(network_id: str | None):
    """Load the brownie project and connect; without a network id, launch anvil on a free port."""
    from brownie import network, project
    from brownie._config import CONFIG

    loaded = project.load(ROOT, name="ProtocolModelsBench")
    if network_id is None:
        network_id = "development"
        CONFIG.networks[network_id]["cmd_settings"]["port"] = free_port()
    network.connect(network_id)
    return loaded


class Bench:
    def __init__(self, p):
        from brownie import accounts, web3

        self.p, self.web3 = p, web3
        self.deployer, self.creator, self.operator, self.treasury, self.payer = accounts[:5]
        self.minter = accounts[9]
        self.rows: list[Row] = []
        self.requests = 0

    def add(self, operation, tx, target=None, holders=None, note=""):
        self.rows.append(Row(operation, tx.gas_used, target, holders, note))

    def system(self, router_account=None):
        """Registry + router + share implementation wired to an EOA minter (the ledger's role here)."""
        sender = {"from": self.deployer}
        registry = self.p.ModelRegistry.deploy(self.deployer, sender)
        router = self.p.RevenueRouter.deploy(self.deployer, registry, self.treasury, 500, 1000, sender)
        implementation = self.p.ModelShares.deploy(router_account or router, self.minter, sender)
        registry.wire(implementation, self.minter, sender)
        return registry, router

    def create_model(self, registry, asset=ZERO):
        tx = registry.createModel(SPEC_CID, 4, ETHER, asset, self.operator, {"from": self.creator})
        model_id = tx.events["ModelCreated"]["modelId"]
        return tx, model_id, self.p.ModelShares.at(tx.events["ModelCreated"]["shares"])

    def pay(self, router, model_id, amount=ETHER, token=None):
        self.requests += 1
        rid = self.web3.keccak(text=f"bench-{self.requests}")
        value = 0 if token else amount
        if token:
            token.mint(self.payer, amount, {"from": self.payer})
            token.approve(router, amount, {"from": self.payer})
        return router.payForInference(model_id, rid, amount, {"from": self.payer, "value": value})

    def holders(self, count):
        """Fresh local accounts (random keys, never printed); gas price 0 lets them transact unfunded."""
        from brownie import accounts

        return [accounts.add(os.urandom(32).hex()) for _ in range(count)]

    def contracts_one(self):
        registry, router = self.system()
        self.create_model(registry)  # the first model also pays for the modelCount slot
        tx, _, _ = self.create_model(registry)
        self.add("createModel (EIP-1167 clone + immutable args)", tx, target=250_000)

        for count in HOLDER_COUNTS:
            _, model_id, shares = self.create_model(registry)
            holders = self.holders(count)
            for holder in holders:
                shares.mint(holder, ETHER, {"from": self.minter})
            self.pay(router, model_id)  # warms the model's fee slot
            self.add("payForInference (ETH)", self.pay(router, model_id), target=80_000, holders=count)
            first = shares.claim({"from": holders[0]})
            self.add("claim (the model's first)", first, holders=count, note="totalClaimed + correction new")
            if count > 1:
                holder_first = shares.claim({"from": holders[1]})
                note = "correction 0 -> nonzero"
                self.add("claim (a holder's first)", holder_first, holders=count, note=note)
            self.pay(router, model_id)
            self.add("claim (repeat, ETH)", shares.claim({"from": holders[0]}), target=50_000, holders=count)
            if count == HOLDER_COUNTS[-1]:
                self.transfers(shares, holders)

        self.spill(registry, router)
        self.contracts_one_token(registry, router)
        self.contracts_one_deposit()

    def spill(self, registry, router):
        """The occasional payment whose fee accruals pass 64 bits (18.4 ETH) and move to the
        model's spill slot: 400 ETH pays 20 ETH protocol and 40 ETH operator fees, both spill."""
        _, model_id, shares = self.create_model(registry)
        shares.mint(self.holders(1)[0], ETHER, {"from": self.minter})
        self.pay(router, model_id, amount=400 * ETHER)  # the spill slot is written once
        tx = self.pay(router, model_id, amount=400 * ETHER)
        note = "every 18.4 ETH of a fee"
        self.add("payForInference (ETH, both fee accruals spill)", tx, holders=1, note=note)

    def transfers(self, shares, holders):
        """Steady state is both holders having claimed or traded once (their correction slots set)."""
        sender, receiver, untouched = holders[0], holders[1], holders[2]
        tx = shares.transfer(receiver, ETHER // 4, {"from": sender})
        self.add("share transfer (to an existing holder)", tx, target=65_000, holders=len(holders))
        tx = shares.transfer(untouched, ETHER // 4, {"from": sender})
        note = "correction 0 -> nonzero"
        self.add("share transfer (holder never claimed)", tx, holders=len(holders), note=note)
        tx = shares.transfer(self.holders(1)[0], ETHER // 4, {"from": sender})
        self.add("share transfer (to a new holder)", tx, holders=len(holders), note="balance+correction new")

    def contracts_one_token(self, registry, router):
        token = self.p.MockERC20.deploy("Revenue", "REV", {"from": self.deployer})
        _, model_id, shares = self.create_model(registry, asset=token.address)
        holder = self.holders(1)[0]
        shares.mint(holder, ETHER, {"from": self.minter})
        self.pay(router, model_id, token=token)
        shares.claim({"from": holder})
        self.add("payForInference (ERC-20)", self.pay(router, model_id, token=token), holders=1)
        self.add("claim (repeat, ERC-20)", shares.claim({"from": holder}), holders=1)

    def contracts_one_deposit(self):
        # depositRevenue alone: a system whose router is an account, calling it directly.
        depositor = self.payer
        registry, _ = self.system(router_account=depositor)
        shares = self.create_model(registry)[2]
        shares.mint(self.holders(1)[0], ETHER, {"from": self.minter})
        shares.depositRevenue(ETHER, {"from": depositor, "value": ETHER})
        tx = shares.depositRevenue(ETHER, {"from": depositor, "value": ETHER})
        self.add("depositRevenue (ETH, called directly)", tx, holders=1)

    def contracts_two(self):
        """WorkLedger, wired as scripts/deploy.py wires it, with a 1-hour window."""
        from brownie import accounts, chain

        sender = {"from": self.deployer}
        registry = self.p.ModelRegistry.deploy(self.deployer, sender)
        router = self.p.RevenueRouter.deploy(self.deployer, registry, self.treasury, 500, 1000, sender)
        ledger = self.p.WorkLedger.deploy(self.deployer, registry, self.treasury, LEDGER_PARAMETERS, sender)
        implementation = self.p.ModelShares.deploy(router, ledger, sender)
        registry.wire(implementation, ledger, sender)
        _, model_id, _ = self.create_model(registry)
        self.registry, self.ledger, self.model_id, self.chain = registry, ledger, model_id, chain
        first, worker, validator, voter = accounts[5], accounts[6], accounts[7], accounts[8]
        key = b"\x01" * 32

        ledger.stake({"from": first, "value": 100 * ETHER})
        self.add("stake (first)", ledger.stake({"from": worker, "value": 50 * ETHER}))
        self.add("stake (top-up)", ledger.stake({"from": worker, "value": 50 * ETHER}))
        ledger.join(model_id, 0, b"12D3KooWFirstPeerIdBytes", key, {"from": first})
        tx = ledger.join(model_id, 0, b"12D3KooWSecondPeerIdBytes", key, {"from": worker})
        self.add("join (a stage with members)", tx, target=100_000)
        for account in (validator, voter):
            ledger.stake({"from": account, "value": 10 * ETHER})
        ledger.registerValidator(model_id, 0, {"from": validator})
        tx = ledger.registerValidator(model_id, 0, {"from": voter})
        self.add("registerValidator (a stage with validators)", tx, target=80_000)

        lane = Lane(self, worker)
        self.add("submitClaim (a lane's first)", lane.submit(1), note="new slots")
        lane.cycle(RING)  # every slot of the ring written once: the steady state
        on_checkpoint = lane.submit(1)  # an empty lane: the parent is the stage's finalized checkpoint
        submit_k1 = lane.submit(1)  # chained on the lane's tip, as claims are while others are pending
        lane.submit_many(8, 1)
        run_k1 = lane.finalize_all()
        lane.submit(12)
        submit_k12 = lane.submit(12)
        lane.submit_many(8, 12)
        run_k12 = lane.finalize_all()
        self.add("submitClaim (warm lane, on the stage checkpoint, K=1)", on_checkpoint)
        self.add("submitClaim (warm lane, on its tip, K=1)", submit_k1, target=90_000)
        self.add("finalize (run of 10 due claims, K=1)", run_k1, target=300_000)
        self.add("submitClaim (warm lane, on its tip, K=12)", submit_k12)
        self.add("finalize (run of 10 due claims, K=12)", run_k12)
        per_claim = {
            1: submit_k1.gas_used + run_k1.gas_used / 10,
            12: submit_k12.gas_used + run_k12.gas_used / 10,
        }
        self.rows.append(Row("submit + finalize per claimed round (K=12)", round(per_claim[12] / 12), 15_000))
        self.worker_day = worker_day(per_claim)

        claim_id = lane.submit(1).events["ClaimSubmitted"]["claimId"]
        self.add("challenge", ledger.challenge(claim_id, lane.round, 17, b"\xee" * 32, {"from": validator}))
        self.add("vote", ledger.vote(claim_id, True, {"from": voter}))
        tx = ledger.resolve(claim_id, {"from": worker})
        self.add("resolve (upheld, challenger slashed; every validator voted)", tx)
        self.add("settleVote", ledger.settleVote(claim_id, {"from": voter}))
        lane.finalize_all()
        self.rejections(accounts, validator, voter, key)

    def rejections(self, accounts, validator, voter, key):
        """Rejecting a lane's head with 60 later open claims against rejecting it alone."""
        ledger = self.ledger
        ledger.setParameter(b"maxPendingClaims".ljust(32, b"\0"), 64, {"from": self.deployer})
        gas = {}
        for later, account in ((0, accounts[4]), (0, accounts[9]), (60, accounts[3])):
            ledger.stake({"from": account, "value": 10 * ETHER})
            ledger.join(self.model_id, 0, b"12D3KooWCheater", key, {"from": account})
            lane = Lane(self, account)
            head = lane.submit(1).events["ClaimSubmitted"]["claimId"]
            ledger.challenge(head, lane.round, 0, b"\xee" * 32, {"from": validator})
            lane.submit_many(later, 1)
            ledger.vote(head, False, {"from": voter})
            gas[later] = ledger.resolve(head, {"from": validator})  # the first of 0 warms the treasury's slot
        self.add("resolve (rejected, no later open claim)", gas[0])
        self.add("resolve (rejected, 60 later open claims voided)", gas[60], target=gas[0].gas_used + 5_000)


RING = 64
# IWorkLedger.Parameters: challengeWindow, claimBond, maxWorkUnitsPerClaim, quorum, burnBps,
# voteWindow, unbondingPeriod, minWorkerStake, minValidatorStake, maxPendingClaims,
# availabilityGrace, validatorDelay, voteBond, loserVoteSlashBps, noQuorumSlashBps
LEDGER_PARAMETERS = (
    3600,
    ETHER // 10,
    10_000,
    1,
    1_000,
    3600,
    3600,
    ETHER // 2,
    ETHER // 2,
    64,
    600,
    0,
    ETHER // 100,
    5_000,
    1_000,
)
ROUNDS_PER_DAY = 24 * 60 // 5
L1_BLOCKS_PER_DAY = 7_200
L1_GAS_LIMITS = (30_000_000, 45_000_000)
WORKERS = 1_000


class Lane:
    """One worker's lane: claims chained on its tip (first on the stage's finalized checkpoint),
    K rounds each, finalized in runs."""

    def __init__(self, bench: Bench, worker) -> None:
        self.bench, self.worker, self.claims = bench, worker, []
        self.parent, _, self.round = bench.registry.checkpointOf(bench.model_id, 0)

    def submit(self, rounds: int):
        web3, first = self.bench.web3, self.round + 1
        self.round += rounds
        cid = web3.keccak(text=f"{self.worker.address}-checkpoint-{self.round}")
        digest, root = web3.keccak(text=f"state-{cid.hex()}"), web3.keccak(text=f"rounds-{cid.hex()}")
        manifest = web3.keccak(text=f"manifest-{cid.hex()}")
        inp = (
            self.bench.model_id,
            0,
            first,
            self.round,
            self.parent,
            cid,
            digest,
            root,
            manifest,
            rounds * 4,
        )
        tx = self.bench.ledger.submitClaim(inp, {"from": self.worker})
        self.parent = cid
        self.claims.append(tx.events["ClaimSubmitted"]["claimId"])
        return tx

    def submit_many(self, count: int, rounds: int) -> None:
        for _ in range(count):
            self.submit(rounds)

    def finalize_all(self):
        """Finalize every open claim of the lane in one run (after the window)."""
        self.bench.chain.sleep(3601)
        return self.bench.ledger.finalize(self.claims[-1], {"from": self.worker})

    def cycle(self, claims: int) -> None:
        """Submit `claims` more claims, finalized in runs of 10."""
        for done in range(claims):
            self.submit(1)
            if done % 10 == 9:
                self.finalize_all()
        self.finalize_all()


def worker_day(gas_per_claim: dict[int, float]) -> dict:
    """Gas per worker-day at 5-minute rounds (claims finalized in runs of 10), and the share of an
    L1's daily gas that 1000 such workers would take."""
    days = {}
    for rounds, gas in gas_per_claim.items():
        per_day = ROUNDS_PER_DAY / rounds * gas
        share = {
            f"{limit // 1_000_000}M": WORKERS * per_day / (L1_BLOCKS_PER_DAY * limit)
            for limit in L1_GAS_LIMITS
        }
        days[f"K={rounds}"] = {
            "gas_per_claim": round(gas),
            "gas_per_worker_day": round(per_day),
            "l1_share_1000_workers": share,
        }
    return days


def table(rows: list[Row]) -> str:
    lines = [f"{'operation':<44} {'holders':>7} {'gas':>9} {'target':>9}  ok"]
    for row in rows:
        target = f"{row.target:,}" if row.target else "-"
        ok = {True: "yes", False: "NO", None: ""}[row.within_target]
        holders = row.holders if row.holders is not None else "-"
        lines.append(f"{row.operation:<44} {holders:>7} {row.gas:>9,} {target:>9}  {ok}")
    return "\n".join(lines)


def day_table(days: dict) -> str:
    header = f"{'per worker, 5-minute rounds':<30} {'gas/claim':>10} {'gas/day':>12}"
    lines = ["", f"{header}  1000 workers of L1 daily gas"]
    for name, day in days.items():
        share = " / ".join(f"{v:.1%} at {k}" for k, v in day["l1_share_1000_workers"].items())
        lines.append(f"{name:<30} {day['gas_per_claim']:>10,} {day['gas_per_worker_day']:>12,}  {share}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", help="brownie network id (default: anvil on a free port)")
    args = parser.parse_args(argv)
    p = connect(args.network)
    from brownie import chain, network

    try:
        bench = Bench(p)
        with contextlib.redirect_stdout(io.StringIO()):  # brownie prints every transaction
            bench.contracts_one()
            bench.contracts_two()
        compiler = p.ModelRegistry._build["compiler"]
        document = {
            "network": network.show_active(),
            "chainId": chain.id,
            "solc": compiler["version"],
            "optimizer": compiler["optimizer"],
            "rows": [asdict(row) | {"withinTarget": row.within_target} for row in bench.rows],
            "worker_day_5min_rounds": bench.worker_day,
        }
    finally:
        network.disconnect()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(table(bench.rows))
    print(day_table(bench.worker_day))
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
