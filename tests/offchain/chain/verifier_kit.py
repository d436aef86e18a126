"""A model on a test chain for verifier tests: its stage keys served by its members over hivemind,
real rounds of its spec trained, published and claimed (one claim may cover several rounds, chained
on the lane's previous claim), `pm verifier run --stage` processes, and waits on chain state."""

from __future__ import annotations

import time
from pathlib import Path

from chain_testkit import anvil_account, join_stage
from eth_account import Account
from eth_utils import keccak

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import ClaimStatus, Protocol
from offchain.chain.status import cid_of
from offchain.chain.structs import call_struct
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.trainer import StageTrainer
from offchain.proofs.manifest import ClaimManifest
from offchain.proofs.rounds import PublishedRound, claim_input, publish_manifest, publish_round
from offchain.proofs.signing import sign_message
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.local import LocalProcess, spawn_pm
from offchain.worker.cheats import apply_cheat

ETHER = 10**18
DRIVER = anvil_account(9)
WORKERS = [anvil_account(2 + stage) for stage in range(3)]
VALIDATORS = [anvil_account(6), anvil_account(7)]
TIMING = {
    "challengeWindow": 900,
    "availabilityGrace": 600,
    "voteWindow": 600,
    "quorum": 1,
    "validatorDelay": 0,
}
"""Windows long enough that a loaded machine's real time never closes them; tests skip ahead."""


class Network:
    """A model on the test chain, its stage keys served by its members, and helpers to claim rounds."""

    def __init__(self, url: str, deployments: Path, spec_path: Path, tmp_path: Path) -> None:
        self.url, self.deployments, self.tmp = url, deployments, tmp_path
        self.reader = ChainClient(url, anvil_account(1))
        self.protocol = Protocol.load(self.reader, deployments)
        self.store_dir = tmp_path / "store"
        self.store = EmbeddedStore(self.store_dir)
        self.spec = load_spec(spec_path)
        self.model_id = self.create_model(spec_path)
        self.workers = [ChainClient(url, account) for account in WORKERS]
        for stage, worker in enumerate(self.workers):
            join_stage(self.protocol, worker, self.model_id, stage)
        self.keys = [StageKey.generate(self.model_id, stage) for stage in range(3)]
        self.ledger = self.protocol.ledger
        admin = ChainClient(url, anvil_account(0))
        admin_ledger = admin.contract("WorkLedger", self.ledger.address)
        for name, value in TIMING.items():  # the deployment chose public-testnet timing
            admin.transact(admin_ledger.functions.setParameter(name.encode().ljust(32, b"\0"), value))
        self.params = call_struct(self.reader, self.ledger.functions.parameters())

    def create_model(self, spec_path: Path) -> int:
        created = create_model(
            self.protocol,
            self.store,
            spec_path,
            shares_per_work_unit=ETHER,
            revenue_asset="eth",
            operator=None,
        )
        return created.model.model_id

    def sign(self, header, payload):
        if header.direction == "forward":
            account = DRIVER if header.stage == 0 else WORKERS[header.stage - 1]
        else:
            account = WORKERS[header.stage + 1]
        return sign_message(account.key, header, payload), account.address

    def train(self, round_: int, states: list[bytes], workers: dict[int, str] | None = None):
        """One round of every stage; each stage's messages are addressed to its worker in WORKERS,
        or to `workers[stage]` (another member of that stage, training its own round)."""
        recipients = [
            workers.get(stage, a.address) if workers else a.address for stage, a in enumerate(WORKERS)
        ]
        return train_single_process(
            self.spec,
            1,
            first_round=round_,
            states=states,
            model_id=self.model_id,
            sign=self.sign,
            deployment=(self.reader.chain_id, self.ledger.address.lower()),
            recipients=recipients,
        )

    def publish(
        self, stage: int, parent: bytes, state: bytes, trace, *, cheat: str | None = None
    ) -> PublishedRound:
        """Store a round's checkpoint and trace under the stage key (after the cheat, if any)."""
        if cheat is not None:
            state, trace = apply_cheat(cheat, self.spec, parent, state, trace)
        return publish_round(self.store, self.keys[stage], state, trace)

    def claim(
        self, worker: ChainClient, rounds: list[PublishedRound], *, model_id: int | None = None, edit=None
    ) -> int:
        """One claim of `rounds` by `worker` for the stage it joined, chained on its lane's tip (its newest
        open claim, else the stage's finalized checkpoint); the manifest is stored first (its bytes
        passed through `edit`, as a liar would). Returns the claim id."""
        model_id = self.model_id if model_id is None else model_id
        ledger = worker.contract("WorkLedger", self.ledger.address)
        lane = call_struct(worker, ledger.functions.laneOf(model_id, worker.address))
        _, stage = ledger.functions.stageOf(model_id, worker.address).call()
        first = lane["tipRound"] + 1
        records = tuple(published.record(first + i) for i, published in enumerate(rounds))
        manifest = ClaimManifest(model_id, stage, cid_of(lane["tipCheckpointCID"]), records)
        manifest_cid = (
            self.store.put(edit(manifest.canonical_bytes()))
            if edit
            else publish_manifest(self.store, manifest)
        )
        receipt = worker.transact(ledger.functions.submitClaim(claim_input(manifest, manifest_cid)))
        (event,) = ledger.events.ClaimSubmitted().process_receipt(receipt)
        return event["args"]["claimId"]

    def copy_claim(self, copier: ChainClient, claim_id: int) -> int:
        """Audit F6: `copier` submits the ClaimInput of claim `claim_id` as its ClaimSubmitted event
        states it (another member's work, claimed as its own). Returns the copy's claim id."""
        (submitted,) = self.events("ClaimSubmitted", claim_id)
        fields = ("modelId", "stage", "firstRound", "lastRound", "parentCID", "checkpointCID")
        fields += ("checkpointDigest", "roundsRoot", "manifestCID", "workUnits")
        ledger = copier.contract("WorkLedger", self.ledger.address)
        receipt = copier.transact(ledger.functions.submitClaim(tuple(submitted[name] for name in fields)))
        (event,) = ledger.events.ClaimSubmitted().process_receipt(receipt)
        return event["args"]["claimId"]

    def account(self, name: str) -> ChainClient:
        """A fresh funded account."""
        account = Account.from_key(keccak(text=f"pm-verifier-kit-{name}"))
        self.reader.w3.provider.make_request("anvil_setBalance", [account.address, hex(100 * ETHER)])
        return ChainClient(self.url, account)

    def member(self, name: str, model_id: int, stage: int) -> ChainClient:
        """A fresh funded account, staked and joined to `stage` of `model_id`."""
        client = self.account(name)
        join_stage(self.protocol, client, model_id, stage)
        return client

    def validator(self, client: ChainClient, stage: int):
        """Stake what a validator needs (minimum, a challenge bond, a vote bond) and register `client` as
        a validator of `stage` of the model, as `pm verifier run` would; returns its handle on the
        ledger (a test that challenges or votes by hand)."""
        ledger = client.contract("WorkLedger", self.ledger.address)
        params = self.params
        stake = params["minValidatorStake"] + params["claimBond"] + params["voteBond"]
        client.transact(ledger.functions.stake(), value=stake)
        client.transact(ledger.functions.registerValidator(self.model_id, stage))
        return ledger

    def claim_of(self, claim_id: int) -> dict:
        return call_struct(self.reader, self.ledger.functions.getClaim(claim_id))

    def status(self, claim_id: int) -> ClaimStatus:
        return ClaimStatus(self.claim_of(claim_id)["status"])

    def events(self, name: str, claim_id: int | None = None) -> list:
        filters = {} if claim_id is None else {"claimId": claim_id}
        found = getattr(self.ledger.events, name)().get_logs(from_block=0, argument_filters=filters)
        return [event["args"] for event in found]

    def staked(self, account) -> int:
        return call_struct(self.reader, self.ledger.functions.stakeOf(account.address))["staked"]

    def verifier(
        self,
        name: str,
        validator,
        stage: int,
        *extra: str,
        model_id: int | None = None,
        env: dict[str, str] | None = None,
    ) -> LocalProcess:
        """`pm verifier run` as `validator` for one stage; it stakes and registers itself. `env`:
        added to its environment (a crash hook, offchain/crash.py)."""
        key_file = self.tmp / f"{name}.key"
        key_file.write_text(validator.key.hex())
        model = str(self.model_id if model_id is None else model_id)
        args = [
            "verifier", "run", "--model", model, "--stage", str(stage), "--initial-peers", self.maddr,
            "--state-dir", str(self.tmp / f"state-{model}-{validator.address}"), "--rpc-url", self.url,
            "--key-file", str(key_file), "--deployments", str(self.deployments),
            "--store", str(self.store_dir), *extra,
        ]  # fmt: skip
        return spawn_pm(name, args, self.tmp, env=env)

    def wait(self, what, timeout: float = 120.0, processes: tuple[LocalProcess, ...] = ()) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            for process in processes:
                if process.popen.poll() is not None:
                    raise AssertionError(f"{process.name} exited:\n{process.text()[-3000:]}")
            if time.monotonic() > deadline:
                logs = "\n".join(p.text()[-2500:] for p in processes)
                raise AssertionError(f"timed out waiting for {what.__doc__ or what}\n{logs}")
            time.sleep(0.1)


def seed_states(spec) -> list[bytes]:
    return [StageTrainer(spec, stage).state_bytes() for stage in range(spec.num_stages)]
