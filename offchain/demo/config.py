"""What one `pm demo` run does (its options) and who plays which role (one funded key each)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from offchain.demo.anvil import anvil_account
from offchain.paths import REPO

DEMO_SPEC = REPO / "specs" / "tiny.json"
PROMPTS = ("The model ", "def train(", "Protocol Models are ")
# The cheater publishes a checkpoint whose digest is not the state it trained (offchain/worker/cheats.py);
# it joins stage 1 beside that stage's honest workers, so training itself stays honest.
CHEAT_MODE = "fake-digest"
CHEATER_STAGE = 1
# With the planned faults (`pm demo --faults`) this stage has a single worker, the one killed between
# publish and claim: stage 0, since stage 2 keeps a replica to kill mid-round and --cheater adds its
# liar to stage 1.
SOLE_WORKER_STAGE = 0
# How long a stage may have no live worker before the run stops: time for a restarted one to come
# back (the driver waits for it meanwhile). Slow or flaky hardware may need longer.
STAGE_GRACE_S = 60.0


@dataclass(frozen=True)
class DemoConfig:
    rounds: int = 3
    workers_per_stage: int = 1
    cheater: bool = False
    faults: bool = False  # inject faults (offchain/demo/faults.py) and table them
    fault_every_s: float | None = None  # with faults: random ones this often (bench/soak.py)
    train_minutes: float | None = None  # stop training after this long (at most `rounds` rounds)
    stage_grace_s: float = STAGE_GRACE_S  # a stage with no live worker this long stops the run (watch.py)
    ipfs_api: str | None = None
    out: Path = Path(".pm/demo")
    spec: Path = DEMO_SPEC
    completions: int = len(PROMPTS)
    max_tokens: int = 24
    # A few rounds of a tiny character model: greedy decoding repeats its likeliest character, so
    # completions are sampled.
    temperature: float = 0.8
    top_k: int = 20

    @property
    def cheat_round(self) -> int:
        """The one round the cheater lies about: round 2, so that the lie cannot be rejected before
        round 1's claim is settled, while the cheater's later rounds are claimed on top of it (and
        voided with it); round 1 in a one-round demo."""
        return min(2, self.rounds)

    def workers(self, stage: int) -> int:
        """Honest workers of `stage`: `workers_per_stage`, but one on SOLE_WORKER_STAGE under the
        planned faults, so that killing that worker leaves its stage with none (the random faults of
        bench/soak.py kill only a worker whose stage has another)."""
        planned = self.faults and self.fault_every_s is None
        return 1 if planned and stage == SOLE_WORKER_STAGE else self.workers_per_stage

    def validators(self, stage: int) -> int:
        """Validators of `stage` (each registered for that stage only). A dispute is decided by the
        stage's validators other than the challenger, so the cheater's stage needs a second one to
        vote the cheat down and slash it."""
        return 2 if self.cheater and stage == CHEATER_STAGE else 1


@dataclass(frozen=True)
class Role:
    """One participant: its name in logs and the summary, its key, its stage if it is a worker or a
    validator."""

    name: str
    account: LocalAccount
    stage: int | None = None
    cheat: str | None = None

    @property
    def address(self) -> str:
        return self.account.address


@dataclass(frozen=True)
class Cast:
    """Every participant of a run, each with its own anvil account (anvil funds them all)."""

    deployer: Role
    creator: Role
    customer: Role
    verifiers: tuple[Role, ...]
    workers: tuple[Role, ...]

    @classmethod
    def for_config(cls, config: DemoConfig, num_stages: int) -> Cast:
        accounts = iter(range(10_000))

        def role(name: str, stage: int | None = None, cheat: str | None = None) -> Role:
            return Role(name, anvil_account(next(accounts)), stage, cheat)

        deployer, creator, customer = role("deployer"), role("creator"), role("customer")
        verifiers = tuple(
            role(f"verifier-s{stage}-{i}", stage)
            for stage in range(num_stages)
            for i in range(config.validators(stage))
        )
        workers = [
            role(f"worker-s{stage}-{replica}", stage)
            for stage in range(num_stages)
            for replica in range(config.workers(stage))
        ]
        if config.cheater:
            workers.append(role(f"cheater-s{CHEATER_STAGE}", CHEATER_STAGE, CHEAT_MODE))
        return cls(deployer, creator, customer, verifiers, tuple(workers))

    @property
    def size(self) -> int:
        return 3 + len(self.verifiers) + len(self.workers)
