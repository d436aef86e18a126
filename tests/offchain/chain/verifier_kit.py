"""A model on a test chain for verifier tests: its stage keys served by its members over hivemind,
real rounds of its spec trained and claimed, `pm verifier run` processes, and waits on chain state."""

from __future__ import annotations

import time
from pathlib import Path

from chain_testkit import anvil_account, join_stage
from eth_account import Account
from eth_utils import keccak

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import ClaimStatus, Protocol
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.trainer import StageTrainer
from offchain.proofs.rounds import PublishedRound, publish_round
from offchain.proofs.signing import sign_message
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.local import LocalProcess, spawn_pm
from offchain.worker.cheats import apply_cheat

ETHER = 10**18
DRIVER = anvil_account(9)
WORKERS = [anvil_account(2 + stage) for stage in range(3)]
VALIDATORS = [anvil_account(6), anvil_account(7)]
TIMING = {"challengeWindow": 120, "voteWindow": 120, "quorum": 1}
"""Windows long enough that a loaded machine's real time does not close them; tests skip ahead."""


class Network:
    """A model on the test chain, its stage keys served by its members, and helpers to claim rounds."""

    def __init__(
        self, url: str, deployments: Path, spec_path: Path, tmp_path: Path, timing: dict | None = None
    ) -> None:
        self.url, self.deployments, self.tmp = url, deployments, tmp_path
        self.reader = ChainClient(url, anvil_account(1))
        self.protocol = Protocol.load(self.reader, deployments)
        self.store_dir = tmp_path / "store"
        self.store = EmbeddedStore(self.store_dir)
        self.spec = load_spec(spec_path)
        created = create_model(
            self.protocol,
            self.store,
            spec_path,
            shares_per_work_unit=ETHER,
            revenue_asset="eth",
            operator=None,
        )
        self.model_id = created.model.model_id
        self.workers = [ChainClient(url, account) for account in WORKERS]
        self.ledgers = [join_stage(self.protocol, w, self.model_id, s) for s, w in enumerate(self.workers)]
        self.keys = [StageKey.generate(self.model_id, stage) for stage in range(3)]
        self.ledger = self.protocol.ledger
        admin = ChainClient(url, anvil_account(0))
        admin_ledger = admin.contract("WorkLedger", self.ledger.address)
        for name, value in {**TIMING, **(timing or {})}.items():  # the deployment chose testnet timing
            admin.transact(admin_ledger.functions.setParameter(name.encode().ljust(32, b"\0"), value))
        self.bond = self.ledger.functions.parameters().call()[1]

    def sign(self, header, payload):
        if header.direction == "forward":
            account = DRIVER if header.stage == 0 else WORKERS[header.stage - 1]
        else:
            account = WORKERS[header.stage + 1]
        return sign_message(account.key, header, payload), account.address

    def train(self, round_: int, states: list[bytes]):
        return train_single_process(
            self.spec, 1, first_round=round_, states=states, model_id=self.model_id, sign=self.sign
        )

    def claim(self, stage: int, parent: bytes, state: bytes, trace, *, cheat: str | None = None) -> int:
        """Publish (after the cheat, if any) and submitClaim as the stage's worker; returns the claim id."""
        if cheat is not None:
            state, trace = apply_cheat(cheat, self.spec, parent, state, trace)
        cid, _, _ = self.protocol.registry.functions.checkpointOf(self.model_id, stage).call()
        published = publish_round(self.store, self.keys[stage], state, trace, parent_cid=cid)
        return self.submit(self.workers[stage], published)

    def submit(self, worker: ChainClient, published: PublishedRound) -> int:
        """submitClaim as `worker` (a member of the published round's stage); returns the claim id."""
        ledger = worker.contract("WorkLedger", self.ledger.address)
        receipt = worker.transact(ledger.functions.submitClaim(published.claim_input()))
        (event,) = ledger.events.ClaimSubmitted().process_receipt(receipt)
        return event["args"]["claimId"]

    def member(self, name: str, model_id: int, stage: int) -> ChainClient:
        """A fresh funded account, staked and joined to `stage` of `model_id`."""
        account = Account.from_key(keccak(text=f"pm-verifier-kit-{name}"))
        self.reader.w3.provider.make_request("anvil_setBalance", [account.address, hex(100 * ETHER)])
        client = ChainClient(self.url, account)
        join_stage(self.protocol, client, model_id, stage)
        return client

    def status(self, claim_id: int) -> ClaimStatus:
        return ClaimStatus(self.ledger.functions.getClaim(claim_id).call()[3])

    def events(self, name: str, claim_id: int | None = None) -> list:
        filters = {} if claim_id is None else {"claimId": claim_id}
        found = getattr(self.ledger.events, name)().get_logs(from_block=0, argument_filters=filters)
        return [event["args"] for event in found]

    def verifier(self, name: str, validator, *extra: str, every_model: bool = False) -> LocalProcess:
        key_file = self.tmp / f"{name}.key"
        key_file.write_text(validator.key.hex())
        model = [] if every_model else ["--model", str(self.model_id)]
        args = [
            "verifier", "run", *model, "--initial-peers", self.maddr,
            "--state-dir", str(self.tmp / f"state-{validator.address}"), "--rpc-url", self.url,
            "--key-file", str(key_file), "--deployments", str(self.deployments),
            "--store", str(self.store_dir), *extra,
        ]  # fmt: skip
        return spawn_pm(name, args, self.tmp)

    def wait(self, what, timeout: float = 90.0, processes: tuple[LocalProcess, ...] = ()) -> None:
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
