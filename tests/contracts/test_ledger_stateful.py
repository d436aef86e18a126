"""Stateful: random stakes, unbonds, withdrawals, joins, claims, challenges, votes, resolutions and
finalizations, mirrored in a Python model of the ledger. A transaction that reverts must leave
the model's state; one that succeeds must have exactly the modelled effect. Invariants: the
ledger's ETH equals all stake plus all unbonding (= deposits - withdrawals), shares minted equal
the finalized work units times the rate, and no address is a member of two stages of a model."""

import random
from dataclasses import dataclass

import pytest
import stateful
from brownie import ModelShares, chain
from brownie.exceptions import VirtualMachineError
from conftest import ETHER, TEST_LEDGER, claim_input
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule

# hypothesis 6.27 spends its first ~11 examples on one-step runs; the rest run the full step count.
SETTINGS = {"max_examples": 16, "stateful_step_count": 25}
RATE = 3 * ETHER
BOND = TEST_LEDGER.claim_bond
PENDING, CHALLENGED, UPHELD, FINALIZED, REJECTED = 1, 2, 3, 4, 5

ACTIONS = ("submit", "sleep", "toggle_membership", "stake", "request_unstake", "withdraw")


@dataclass
class Account:
    staked: int = 5 * ETHER
    locked: int = 0
    unbonding: int = 0


@dataclass
class ModelClaim:
    claim_id: int
    stage: int
    round: int
    units: int
    deadline: int
    status: int = PENDING
    challenger: object = None
    vote_deadline: int = 0
    valid: int = 0
    invalid: int = 0


class LedgerMachine(stateful.ChainStateMachine):
    """Subclassed per test with: ledger, registry, model_id, shares, workers, validators, treasury."""

    def __init__(self):
        super().__init__()
        everyone = [*self.workers, *self.validators]
        self.accounts = {a: Account() for a in everyone}
        self.accounts[self.treasury] = Account(staked=0)
        self.stage = {w: None for w in self.workers}
        self.claims = {}
        self.minted = 0
        self.checkpoint = {0: ("", 0), 1: ("", 0)}
        self.deposited = ETHER * 5 * len(everyone)
        self.withdrawn = 0

    @initialize(seed=st.integers(min_value=0, max_value=2**32))
    def join_stages(self, seed):
        """Every worker joins a stage; the run's actions come from a PRNG seeded by hypothesis."""
        self.rng = random.Random(seed)
        for worker, stage in zip(self.workers, (0, 0, 1), strict=True):
            self.ledger.join(self.model_id, stage, b"peer", b"\x01" * 32, {"from": worker})
            self.stage[worker] = stage

    @rule()
    def step(self):
        """One random action, then one step of an open claim. The choices come from the run's
        PRNG rather than from one hypothesis rule per action: hypothesis' swarm testing and its
        bias towards simple draws left the claim actions out of most runs. Shrinking still works
        on the number of steps, which keeps a prefix of the same action sequence."""
        rng, everyone = self.rng, [*self.workers, *self.validators]
        amount = rng.randint(1, 5 * ETHER)
        match rng.choice(ACTIONS):
            case "stake":
                self.stake(rng.choice(everyone), amount)
            case "request_unstake":  # at most 1 ETH, so bonds stay affordable most of the time
                self.request_unstake(rng.choice(everyone), amount % ETHER + 1)
            case "withdraw":
                self.withdraw(rng.choice(everyone))
            case "sleep":
                chain.sleep(rng.randint(1, 150))
            case "toggle_membership":
                self.toggle_membership(rng.choice(self.workers), stage=rng.randint(0, 1))
            case "submit":
                self.submit(rng.randrange(6), units=rng.randint(1, 1_000))
        self.settle(rng.randrange(6), rng.randrange(3), path=rng.randrange(4))

    def settle(self, i, j, path):
        """Move an open claim one step along `path`: a pending claim is challenged (odd paths) or
        finalized after its window; a challenged one is voted valid (0), invalid (1), split (2)
        or not at all (3), then resolved; an upheld one is finalized."""
        open_claims = self.with_status(PENDING, CHALLENGED, UPHELD)
        if not open_claims:
            return
        worker, claim = open_claims[i % len(open_claims)]
        if claim.status == PENDING and path % 2:
            self.challenge(self.validators[j], claim)
        elif claim.status == PENDING:
            chain.sleep(TEST_LEDGER.challenge_window + 1)
            self.finalize(worker, claim)
        elif claim.status == CHALLENGED:
            voters = [v for v in self.validators if v != claim.challenger]
            # Vote only while the window is surely open (the next block may be a few seconds later).
            if path < 3 and chain.time() + 5 < claim.vote_deadline:
                if path == 2:
                    self.vote(voters[0], claim, True)
                    self.vote(voters[1], claim, False)
                else:
                    for voter in voters:
                        self.vote(voter, claim, path == 0)
            if path >= 2 or claim.valid + claim.invalid == 0:
                chain.sleep(TEST_LEDGER.vote_window + 1)
            self.resolve(worker, claim)
        else:
            self.finalize(worker, claim)

    def with_status(self, *statuses):
        return [(w, c) for w, c in self.claims.items() if c.status in statuses]

    def send(self, fn, *args, sender):
        """Send a transaction; None if it reverted (then nothing in the model changes)."""
        try:
            return fn(*args, {"from": sender})
        except VirtualMachineError:
            return None

    def stake(self, account, amount):
        self.ledger.stake({"from": account, "value": amount})
        self.accounts[account].staked += amount
        self.deposited += amount

    def request_unstake(self, account, amount):
        if self.send(self.ledger.requestUnstake, amount, sender=account):
            self.accounts[account].staked -= amount
            self.accounts[account].unbonding += amount

    def withdraw(self, account):
        if self.send(self.ledger.withdraw, sender=account):
            self.withdrawn += self.accounts[account].unbonding
            self.accounts[account].unbonding = 0

    def toggle_membership(self, worker, stage):
        if self.stage[worker] is not None:
            if self.send(self.ledger.leave, self.model_id, sender=worker):
                self.stage[worker] = None
        elif self.send(self.ledger.join, self.model_id, stage, b"peer", b"\x01" * 32, sender=worker):
            self.stage[worker] = stage

    def submit(self, w, units):
        members = [worker for worker, stage in self.stage.items() if stage is not None]
        if not members:
            return
        worker = members[w % len(members)]
        stage = self.stage[worker]
        previous = self.claims.get(worker)
        parent, parent_round = self.checkpoint[stage]
        round_ = max(previous.round if previous else 0, parent_round) + 1
        inp = claim_input(
            self.model_id,
            stage,
            round_,
            parent=parent,
            cid=f"Qm{worker.address[2:10]}r{round_}",
            work_units=units,
        )
        tx = self.send(self.ledger.submitClaim, inp, sender=worker)
        if tx is None:
            assert (previous and previous.status in (PENDING, CHALLENGED, UPHELD)) or (
                self.accounts[worker].staked - self.accounts[worker].locked < BOND
            )
            return
        self.claims[worker] = ModelClaim(
            tx.events["ClaimSubmitted"]["claimId"],
            stage,
            round_,
            units,
            tx.timestamp + TEST_LEDGER.challenge_window,
        )
        self.accounts[worker].locked += BOND

    def challenge(self, validator, claim):
        tx = self.send(self.ledger.challenge, claim.claim_id, 1, "QmEvidence", sender=validator)
        if tx:
            assert claim.status == PENDING and tx.timestamp <= claim.deadline
            claim.status, claim.challenger = CHALLENGED, validator
            claim.vote_deadline = tx.timestamp + TEST_LEDGER.vote_window
            self.accounts[validator].locked += BOND
        else:  # the window closed, or the validator's free stake cannot cover the bond
            account = self.accounts[validator]
            assert chain.time() > claim.deadline or account.staked - account.locked < BOND

    def vote(self, validator, claim, valid):
        tx = self.send(self.ledger.vote, claim.claim_id, valid, sender=validator)
        assert tx, "a validator other than the parties votes within the window"
        if valid:
            claim.valid += 1
        else:
            claim.invalid += 1

    def resolve(self, worker, claim):
        tx = self.send(self.ledger.resolve, claim.claim_id, sender=worker)
        assert tx, "resolve after a quorum or after the vote window"
        quorum, outcome = TEST_LEDGER.quorum, tx.events["ClaimResolved"]["outcome"]
        burn = BOND * TEST_LEDGER.burn_bps // 10_000
        if claim.valid >= quorum and claim.valid > claim.invalid:
            assert outcome == UPHELD
            self.slash(claim.challenger, worker, burn)
        elif claim.invalid >= quorum and claim.invalid > claim.valid:
            assert outcome == REJECTED and tx.events["ClaimResolved"]["slashed"]
            self.slash(worker, claim.challenger, burn)
            self.accounts[claim.challenger].locked -= BOND
        else:
            assert outcome == REJECTED and not tx.events["ClaimResolved"]["slashed"]
            assert tx.timestamp > claim.vote_deadline
            self.accounts[worker].locked -= BOND
            self.accounts[claim.challenger].locked -= BOND
        claim.status = outcome

    def slash(self, loser, winner, burn):
        self.accounts[loser].staked -= BOND
        self.accounts[loser].locked -= BOND
        self.accounts[winner].staked += BOND - burn
        self.accounts[self.treasury].staked += burn

    def finalize(self, worker, claim):
        tx = self.send(self.ledger.finalize, claim.claim_id, sender=worker)
        assert tx, "an upheld claim, or a pending one after its window, finalizes"
        assert tx.events["ClaimFinalized"]["sharesMinted"] == claim.units * RATE
        claim.status = FINALIZED
        self.accounts[worker].locked -= BOND
        self.minted += claim.units * RATE
        if claim.round > self.checkpoint[claim.stage][1]:
            self.checkpoint[claim.stage] = (tx.events["CheckpointAccepted"]["cid"], claim.round)

    @invariant()
    def eth_and_shares_match(self):
        held = sum(a.staked + a.unbonding for a in self.accounts.values())
        assert self.ledger.balance() == held == self.deposited - self.withdrawn
        assert self.shares.totalSupply() == self.minted

    def teardown(self):
        """The full comparison (every account, checkpoints, member lists) once per run: a
        divergence persists, since model and chain apply the same operations."""
        self.ledger_matches_the_model()
        self.no_address_holds_two_stages()

    def ledger_matches_the_model(self):
        for account, expected in self.accounts.items():
            staked, locked, _, _, unbonding, _ = self.ledger.stakeOf(account)
            assert (staked, locked, unbonding) == (expected.staked, expected.locked, expected.unbonding)
        held = sum(a.staked + a.unbonding for a in self.accounts.values())
        assert self.ledger.balance() == held == self.deposited - self.withdrawn
        assert self.shares.totalSupply() == self.minted
        for stage, (cid, round_) in self.checkpoint.items():
            assert tuple(self.registry.checkpointOf(self.model_id, stage))[::2] == (cid, round_)

    def no_address_holds_two_stages(self):
        lists = [set(self.ledger.membersOf(self.model_id, s)) for s in (0, 1)]
        assert not lists[0] & lists[1]
        for worker, stage in self.stage.items():
            member, held = self.ledger.stageOf(self.model_id, worker)
            assert member == (stage is not None)
            assert not member or held == stage
            assert [worker in members for members in lists] == [stage == 0, stage == 1]


@pytest.mark.slow
def test_ledger_matches_its_model(protocol, model, staked, workers, validators, treasury):
    context = {
        "ledger": protocol.ledger,
        "registry": protocol.registry,
        "model_id": model,
        "shares": ModelShares.at(protocol.registry.getModel(model)["shares"]),
        "workers": list(workers),
        "validators": list(validators),
        "treasury": treasury,
    }
    stateful.run(type("Machine", (LedgerMachine,), context), **SETTINGS)
