"""Stateful: random stakes, unbonds, withdrawals, joins, leaves, validator registrations, claims
(chained, multi-round, some malformed), challenges of both kinds, votes, resolutions, vote
settlements, finalize runs and time warps (some landing exactly on a deadline) across 2 models x
3 stages and six accounts that take any role, mirrored in tests/contracts/ledger_model.py.

Every transaction is predicted by the model: a predicted revert must be exactly the custom error
the model names, a predicted success must succeed with the modelled effect. Invariants after every
step: the ledger's ETH equals all stake plus all unbonding (= deposits - withdrawals); every
account's locked stake equals the bonds of its open claims, unresolved challenges and unsettled
votes; each model's share supply equals its finalized work units x its rate (so a voided or
rejected claim never mints); checkpoints only move forward and match the model; finalize runs are
lane prefixes (no claim finalizes before an earlier one of its lane); no address ever takes two
stages of a model over the whole run; every dispute's tally (voters, stake on each side) matches.
"""

import copy
import random
from dataclasses import replace

import pytest
import stateful
from brownie import ModelShares, chain, web3
from brownie.exceptions import VirtualMachineError
from conftest import ETHER, TEST_LEDGER, ZERO32, cid32, create_model, next_block_at
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule
from ledger_model import OPEN, LedgerModel, Revert

from offchain.chain.protocol import ClaimStatus

# hypothesis 6.27 spends its first ~11 examples on one-step runs and draws how many steps the
# others take: each step plays several actions, so even a one-step run plays the claim game.
SETTINGS = {"max_examples": 14, "stateful_step_count": 8}
ACTIONS_PER_STEP = 8
STAGES = 3
RATES = (3 * ETHER, ETHER)
QUORUM = 1
MAX_PENDING = 4
STAKE = 6 * ETHER
# Seats taken before the snapshot, so that every run starts with a claim game to play:
# (model index, person index, stage, role). A worker may also validate its own stage.
SEATS = [
    (0, 0, 0, "worker"),
    (0, 1, 0, "worker"),
    (0, 0, 0, "validator"),
    (0, 2, 0, "validator"),
    (0, 3, 0, "validator"),
    (0, 4, 1, "worker"),
    (0, 5, 1, "validator"),
    (1, 5, 0, "worker"),
    (1, 2, 0, "worker"),
    (1, 3, 0, "validator"),
    (1, 4, 0, "validator"),
    (1, 1, 0, "validator"),
    (1, 0, 1, "worker"),
]
KEY = b"\x01" * 32
EVIDENCE = "0x" + "ee" * 32
WARPS = (1, 3, 9, 21, 60, TEST_LEDGER.challenge_window + 1, 150)
ACTIONS = {
    "submit": 8,
    "challenge": 5,
    "vote": 6,
    "resolve": 3,
    "finalize": 3,
    "settle_vote": 2,
    "warp": 4,
    "warp_to_edge": 3,
    "join": 2,
    "register_validator": 2,
    "leave": 1,
    "leave_validator": 1,
    "stake": 1,
    "request_unstake": 1,
    "withdraw": 1,
}


def error_name(error: VirtualMachineError) -> str:
    return (error.revert_msg or "").split(":")[0]


class LedgerMachine(stateful.ChainStateMachine):
    """Subclassed per test with: ledger, registry, models (id -> shares contract), people, treasury,
    and `initial`, the model of the chain state every run starts from."""

    def __init__(self):
        super().__init__()
        self.model = copy.deepcopy(self.initial)
        self.by_address = {p.address: p for p in self.people}
        self.seen_rounds = dict.fromkeys(self.model.checkpoints, 0)
        self.cids = 0
        # Every stage each address took in each model (as worker or validator), from the chain's
        # successes: the one-stage rule holds over the whole run, not only at each step.
        self.stages_taken = {key: {seat.stage} for key, seat in self.model.seats.items()}

    @initialize(seed=st.integers(min_value=0, max_value=2**32))
    def seed(self, seed):
        """The run's actions come from a PRNG seeded by hypothesis: hypothesis' own choice of rules
        left the claim game out of most runs; shrinking still cuts the number of steps."""
        self.rng = random.Random(seed)

    @rule()
    def step(self):
        for action in self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()), k=ACTIONS_PER_STEP):
            getattr(self, action)()

    # ------------------------------------------------------------------ plumbing
    def act(self, predict, fn, *args, sender, value=0):
        """Mine `fn(*args)` one second later; `predict()` applies the model or raises the Revert it
        expects. Returns (tx, prediction), or (None, None) after the predicted revert."""
        self.model.now += 1
        next_block_at(self.model.now)
        try:
            prediction, expected = predict(), None
        except Revert as revert:
            prediction, expected = None, revert.name
        try:
            tx = fn(*args, {"from": sender, "value": value})
        except VirtualMachineError as error:
            assert expected is not None, f"{fn._name} reverted unexpectedly: {error.revert_msg}"
            assert error_name(error) == expected, f"{fn._name}: expected {expected}, got {error.revert_msg}"
            return None, None
        assert expected is None, f"{fn._name} succeeded where the model expected {expected}"
        assert tx.timestamp == self.model.now
        return tx, prediction

    def person(self):
        return self.rng.choice(self.people)

    def pick_model(self):
        return self.rng.choice(list(self.models))

    def pick(self, likely, others):
        """Most often an item of `likely`, else one of `others`; with no `likely` item, most often
        None (the action is skipped: a run of the same refusal teaches nothing)."""
        if not likely and self.rng.random() < 0.7:
            return None
        pool = likely if likely and self.rng.random() < 0.85 else others
        return self.rng.choice(pool) if pool else None

    def pick_claim(self, wanted):
        """A random claim, most often one for which `wanted(claim)` holds."""
        claims = list(self.model.claims.values())
        return self.pick([c for c in claims if wanted(c)], claims)

    def pick_voter(self, claim, exclude=()):
        """Most often a validator of the claim's stage not in `exclude`, else anyone."""
        validators = [v for v in self.model.validators_of(claim.model, claim.stage) if v not in exclude]
        if validators and self.rng.random() < 0.85:
            return self.by_address[self.rng.choice(validators)]
        return self.person()

    # ------------------------------------------------------------------ stake
    def stake(self):
        who, amount = self.person(), self.rng.randint(0, 2 * ETHER)
        self.act(lambda: self.model.stake(who.address, amount), self.ledger.stake, sender=who, value=amount)

    def request_unstake(self):
        who, amount = self.person(), self.rng.randint(0, 2 * ETHER)
        self.act(
            lambda: self.model.request_unstake(who.address, amount),
            self.ledger.requestUnstake,
            amount,
            sender=who,
        )

    def withdraw(self):
        who = self.person()
        self.act(lambda: self.model.withdraw(who.address), self.ledger.withdraw, sender=who)

    # ------------------------------------------------------------------ seats
    def held_stage(self, who, m):
        """The stage `who` holds in model m (as worker or validator) most of the time, else any."""
        seat = self.model.seat(m, who.address)
        if (seat.member or seat.validator) and self.rng.random() < 0.7:
            return seat.stage
        return self.rng.randrange(STAGES + 1)

    def join(self):
        who, m = self.person(), self.pick_model()
        stage = self.held_stage(who, m)
        tx, _ = self.act(
            lambda: self.model.join(who.address, m, stage),
            self.ledger.join,
            m,
            stage,
            b"peer",
            KEY,
            sender=who,
        )
        if tx:
            self.stages_taken.setdefault((m, who.address), set()).add(stage)

    def leave(self):
        who, m = self.person(), self.pick_model()
        self.act(lambda: self.model.leave(who.address, m), self.ledger.leave, m, sender=who)

    def register_validator(self):
        who, m = self.person(), self.pick_model()
        stage = self.held_stage(who, m)
        predict = lambda: self.model.register_validator(who.address, m, stage)  # noqa: E731
        tx, _ = self.act(predict, self.ledger.registerValidator, m, stage, sender=who)
        if tx:
            self.stages_taken.setdefault((m, who.address), set()).add(stage)

    def leave_validator(self):
        who, m = self.person(), self.pick_model()
        self.act(
            lambda: self.model.leave_validator(who.address, m), self.ledger.leaveValidator, m, sender=who
        )

    # ------------------------------------------------------------------ claims
    def submit(self):
        """A claim on the lane's tip (or the stage's checkpoint), of 1-3 rounds; one in six malformed."""
        rng = self.rng
        members = [(m, w) for (m, w), seat in self.model.seats.items() if seat.member]
        if members and rng.random() < 0.9:
            m, address = rng.choice(members)
            who, stage = self.by_address[address], self.model.seat(m, address).stage
        else:
            who, m, stage = self.person(), self.pick_model(), rng.randrange(STAGES)
        parent, parent_round = self.model.parent_of(m, who.address, stage)
        rounds = rng.randint(1, 3)
        first, units = parent_round + 1, rng.randint(rounds, rounds + 4)
        match rng.randrange(12):
            case 0:
                parent = cid32(f"not-the-parent-{rng.random()}")
            case 1:
                first += 1
            case 2:
                units = rounds - 1
            case _:
                pass
        self.cids += 1
        cid = cid32(f"checkpoint-{self.cids}")
        last = first + rounds - 1
        inp = (
            m,
            stage,
            first,
            last,
            parent,
            cid,
            cid32(f"digest-{cid}"),
            cid32(f"root-{cid}"),
            EVIDENCE,
            units,
        )
        predict = lambda: self.model.submit(who.address, m, stage, first, last, parent, cid, units)  # noqa: E731
        tx, claim = self.act(predict, self.ledger.submitClaim, inp, sender=who)
        if tx:
            event = tx.events["ClaimSubmitted"]
            assert event["claimId"] == claim.claim_id
            assert event["previousClaimId"] == (claim.claim_id - 1 if claim.chained else 0)

    def challenge(self):
        now = self.model.now + 1
        claim = self.pick_claim(lambda c: self.model.status(c) == ClaimStatus.PENDING and now <= c.deadline)
        if claim is None:
            return
        who = self.pick_voter(claim, exclude=(claim.worker,))
        if self.rng.random() < 0.25:
            predict = lambda: self.model.challenge(who.address, claim, None)  # noqa: E731
            self.act(predict, self.ledger.challengeUnavailable, claim.claim_id, sender=who)
            return
        if self.rng.random() < 0.2:
            round_ = self.rng.choice((claim.first - 1, claim.last + 1))
        else:
            round_ = self.rng.randint(claim.first, claim.last)
        predict = lambda: self.model.challenge(who.address, claim, round_)  # noqa: E731
        self.act(predict, self.ledger.challenge, claim.claim_id, round_, 3, EVIDENCE, sender=who)

    def vote(self):
        now = self.model.now + 1
        claim = self.pick_claim(
            lambda c: self.model.status(c) == ClaimStatus.CHALLENGED and now <= c.dispute.vote_deadline
        )
        if claim is None or claim.dispute is None:
            return
        who = self.pick_voter(claim, exclude=(claim.worker, claim.dispute.challenger, *claim.dispute.votes))
        valid = self.rng.random() < 0.5
        predict = lambda: self.model.vote(who.address, claim, valid)  # noqa: E731
        self.act(predict, self.ledger.vote, claim.claim_id, valid, sender=who)

    def resolve(self):
        claim = self.pick_claim(lambda c: c.dispute is not None and c.dispute.outcome == ClaimStatus.NONE)
        if claim is None:
            return
        predict = lambda: self.model.resolve(claim)  # noqa: E731
        tx, outcome = self.act(predict, self.ledger.resolve, claim.claim_id, sender=self.person())
        if tx:
            assert tx.events["ClaimResolved"]["outcome"] == outcome

    def settle_vote(self):
        def ended(claim):
            dispute = claim.dispute
            over = dispute.outcome != ClaimStatus.NONE or self.model.status(claim) == ClaimStatus.VOIDED
            return over and any(not vote.settled for vote in dispute.votes.values())

        claim = self.pick(
            [c for c in self.model.claims.values() if c.dispute and ended(c)],
            [c for c in self.model.claims.values() if c.dispute and c.dispute.votes],
        )
        if claim is None:
            return
        unsettled = [self.by_address[v] for v, vote in claim.dispute.votes.items() if not vote.settled]
        who = self.rng.choice(unsettled) if unsettled and self.rng.random() < 0.9 else self.person()
        predict = lambda: self.model.settle_vote(who.address, claim)  # noqa: E731
        tx, slashed = self.act(predict, self.ledger.settleVote, claim.claim_id, sender=who)
        if tx:
            assert tx.events["VoteSettled"]["slashed"] == slashed

    def finalize(self):
        claim = self.pick_claim(lambda c: self.model.status(c) in OPEN)
        if claim is None:
            return
        tx, run = self.act(
            lambda: self.model.finalize(claim), self.ledger.finalize, claim.claim_id, sender=self.person()
        )
        if tx:
            # A run is the lane's prefix up to the claim: nothing finalizes before an earlier claim.
            assert [e["claimId"] for e in tx.events["ClaimFinalized"]] == [c.claim_id for c in run]
            rate = self.model.models[claim.model][1]
            assert tx.events["ClaimsFinalized"]["sharesMinted"] == sum(c.units for c in run) * rate
            if "CheckpointAccepted" in tx.events:  # checkpoints only move forward
                key = (claim.model, claim.stage)
                assert tx.events["CheckpointAccepted"]["round"] > self.seen_rounds[key]
                self.seen_rounds[key] = tx.events["CheckpointAccepted"]["round"]

    # ------------------------------------------------------------------ time
    def warp(self):
        self.model.now += self.rng.choice(WARPS)

    def warp_to_edge(self):
        """Put the next transaction exactly on a deadline, or on the second after it."""
        deadlines = [c.deadline for c in self.model.claims.values() if self.model.status(c) in OPEN]
        deadlines += [c.dispute.vote_deadline for c in self.model.claims.values() if c.dispute]
        deadlines += [c.submitted + TEST_LEDGER.availability_grace for c in self.model.claims.values()]
        future = [d for d in deadlines if d > self.model.now + 1]
        if future:
            self.model.now = self.rng.choice(future) - 1 + self.rng.randrange(2)

    # ------------------------------------------------------------------ invariants
    @invariant()
    def ledger_matches_the_model(self):
        model = self.model
        held = sum(a.staked + a.unbonding for a in model.accounts.values())
        assert self.ledger.balance() == held == model.deposited - model.withdrawn
        for person in [*self.people, self.treasury]:
            staked, locked, memberships, unbonding, _ = self.ledger.stakeOf(person)
            expected = model.account(person.address)
            assert (staked, locked, unbonding) == (expected.staked, expected.locked, expected.unbonding)
            assert locked == model.expected_locked(person.address)
            assert memberships == expected.memberships
        for m, shares in self.models.items():
            assert shares.totalSupply() == model.minted[m]
        assert all(len(stages) == 1 for stages in self.stages_taken.values()), self.stages_taken

    def teardown(self):
        """Checkpoints, statuses, seats and lanes once per run: a divergence persists, since model
        and chain apply the same operations."""
        for (m, stage), (cid, round_) in self.model.checkpoints.items():
            assert tuple(self.registry.checkpointOf(m, stage))[::2] == (cid, round_)
        for claim_id, claim in self.model.claims.items():
            if self.model.live(claim):
                onchain = self.ledger.getClaim(claim_id)
                assert onchain["status"] == self.model.status(claim)
                dispute = claim.dispute
                if dispute is not None:  # the tally: distinct voters and the stake on each side
                    tally = (onchain["voters"], onchain["weightValid"], onchain["weightInvalid"])
                    assert tally == (dispute.voters, dispute.valid, dispute.invalid)
        for (m, who), seat in self.model.seats.items():
            member, stage = self.ledger.stageOf(m, who)
            assert member == seat.member and (not member or stage == seat.stage)
            registered, stage, eligible_at = self.ledger.validatorOf(m, who)
            assert registered == seat.validator and (
                not registered or (stage, eligible_at) == (seat.stage, seat.eligible_at)
            )
            lane = self.model.lanes.get(seat.lane)
            if lane:
                assert self.ledger.laneOf(m, who)["openCount"] == lane.open_count


@pytest.mark.slow
def test_ledger_matches_its_model(protocol, accounts, treasury):
    ledger, registry = protocol.ledger, protocol.registry
    models = {}
    for rate in RATES:
        model_id = create_model(registry, accounts[1], accounts[2], num_stages=STAGES, rate=rate)
        models[model_id] = ModelShares.at(registry.getModel(model_id)["shares"])
    ledger.setParameter(b"quorum".ljust(32, b"\0"), QUORUM, {"from": accounts[0]})
    ledger.setParameter(b"maxPendingClaims".ljust(32, b"\0"), MAX_PENDING, {"from": accounts[0]})
    params = replace(TEST_LEDGER, quorum=QUORUM, max_pending_claims=MAX_PENDING)
    rates = {m: (STAGES, rate) for m, rate in zip(models, RATES, strict=True)}
    initial = LedgerModel(params, rates, treasury.address, ZERO32)
    people = list(accounts[4:10])
    for person in people:
        ledger.stake({"from": person, "value": STAKE})
        initial.stake(person.address, STAKE)
    model_ids = list(models)
    for model_index, person_index, stage, role in SEATS:
        person, model_id = people[person_index], model_ids[model_index]
        if role == "worker":
            tx = ledger.join(model_id, stage, b"peer", KEY, {"from": person})
            initial.now = tx.timestamp
            initial.join(person.address, model_id, stage)
        else:
            tx = ledger.registerValidator(model_id, stage, {"from": person})
            initial.now = tx.timestamp
            initial.register_validator(person.address, model_id, stage)
    chain.sleep(TEST_LEDGER.validator_delay)
    chain.mine()
    initial.now = web3.eth.get_block("latest")["timestamp"]
    context = {
        "ledger": ledger,
        "registry": registry,
        "models": models,
        "people": people,
        "treasury": treasury,
        "initial": initial,
    }
    stateful.run(type("Machine", (LedgerMachine,), context), **SETTINGS)
