"""Gas of the protocol's hot paths, measured on a fresh anvil: writes bench/results/gas.json.

    python bench/gas.py                 # launches anvil on a free port through brownie
    python bench/gas.py --network ID    # any brownie network id instead

Every figure is `gasUsed` of one transaction (21,000 base included) in steady state: the
contracts and slots the operation touches already exist, as they do after the first payment or
claim of a model. Payments and claims are repeated with 1, 10 and 100 holders to show that
their cost does not depend on the number of holders.
"""

import argparse
import contextlib
import io
import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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

        self.contracts_one_token(registry, router)
        self.contracts_one_deposit()

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
        """WorkLedger: the system wired as scripts/deploy.py wires it, with a 1-hour window."""
        from brownie import accounts, chain

        sender = {"from": self.deployer}
        registry = self.p.ModelRegistry.deploy(self.deployer, sender)
        router = self.p.RevenueRouter.deploy(self.deployer, registry, self.treasury, 500, 1000, sender)
        # IWorkLedger.Parameters: challengeWindow, claimBond, maxWorkUnitsPerClaim, quorum, burnBps,
        # voteWindow, unbondingPeriod, minWorkerStake, minValidatorStake
        params = (3600, ETHER // 10, 10_000, 1, 1_000, 3600, 3600, ETHER // 2, ETHER // 2)
        ledger = self.p.WorkLedger.deploy(self.deployer, registry, self.treasury, params, sender)
        implementation = self.p.ModelShares.deploy(router, ledger, sender)
        registry.wire(implementation, ledger, sender)
        _, model_id, _ = self.create_model(registry)
        first, worker, validator, voter = accounts[5], accounts[6], accounts[7], accounts[8]
        key = b"\x01" * 32

        ledger.stake({"from": first, "value": ETHER})
        self.add("stake (first)", ledger.stake({"from": worker, "value": ETHER}))
        self.add("stake (top-up)", ledger.stake({"from": worker, "value": ETHER}))
        for account in (validator, voter):
            ledger.stake({"from": account, "value": ETHER})
            ledger.registerValidator({"from": account})
        ledger.join(model_id, 0, b"12D3KooWFirstPeerIdBytes", key, {"from": first})
        tx = ledger.join(model_id, 0, b"12D3KooWSecondPeerIdBytes", key, {"from": worker})
        self.add("join (a stage with members)", tx, target=100_000)

        def claim(round_, parent):
            cid = f"QmBenchCheckpointRound{round_:03d}xxxxxxxxxxxxxxxxxxxxxx"
            digest = self.web3.keccak(text=f"state-{round_}")
            root = self.web3.keccak(text=f"trace-{round_}")
            trace = f"QmBenchTraceRound{round_:03d}xxxxxxxxxxxxxxxxxxxxxxxxxx"
            inp = (model_id, 0, round_, parent, cid, digest, root, trace, 100)
            tx = ledger.submitClaim(inp, {"from": worker})
            return tx, tx.events["ClaimSubmitted"]["claimId"], cid

        tx, claim_id, cid = claim(1, "")
        self.add("submitClaim (a lane's first)", tx, note="new slots")
        chain.sleep(3601)
        tx = ledger.finalize(claim_id, {"from": worker})
        self.add("finalize (first: new holder, first checkpoint)", tx, note="new slots")
        tx, claim_id, cid = claim(2, cid)
        self.add("submitClaim (next round, same lane)", tx, target=150_000)
        chain.sleep(3601)
        self.add("finalize (next round)", ledger.finalize(claim_id, {"from": worker}), target=120_000)

        _, claim_id, cid = claim(3, cid)
        self.add("challenge", ledger.challenge(claim_id, 17, "QmBenchEvidence", {"from": validator}))
        self.add("vote", ledger.vote(claim_id, True, {"from": voter}))
        self.add("resolve (upheld, challenger slashed)", ledger.resolve(claim_id, {"from": worker}))


def table(rows: list[Row]) -> str:
    lines = [f"{'operation':<44} {'holders':>7} {'gas':>9} {'target':>9}  ok"]
    for row in rows:
        target = f"{row.target:,}" if row.target else "-"
        ok = {True: "yes", False: "NO", None: ""}[row.within_target]
        holders = row.holders if row.holders is not None else "-"
        lines.append(f"{row.operation:<44} {holders:>7} {row.gas:>9,} {target:>9}  {ok}")
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
        }
    finally:
        network.disconnect()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    print(table(bench.rows))
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
