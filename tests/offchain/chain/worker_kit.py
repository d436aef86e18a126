"""On-chain swarms for the worker tests: a model created on anvil, `pm worker run --model` and
`pm driver run --model` processes on loopback, the ledger's parameters set by its owner, and reads of
what the workers did on-chain."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from chain_testkit import REPO, advance_time, anvil_account

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.chain.status import cid_of
from offchain.chain.structs import call_struct
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.local import LocalProcess, chain_worker_args, spawn_pm

ETHER = 10**18
DAY = 86_400
SPEC = REPO / "specs" / "tiny.json"
OWNER = anvil_account(0)  # deploys the protocol, so it owns the ledger's parameters
CREATOR = anvil_account(1)  # creates the model and drives its rounds


def wait_until(what: str, condition, timeout: float = 60.0) -> None:
    """Poll `condition` (a chain read) until it holds: a sent transaction lands in the next block."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.5)


def worker_account(stage: int):
    return anvil_account(2 + stage)


def lean_spec(tmp: Path, round_steps: int = 2, micro_batches: int = 1) -> Path:
    """The tiny spec with shorter rounds: what the claim tests need is many rounds, not long ones."""
    spec = json.loads(SPEC.read_text())
    spec.update(name="tiny-lean", round_steps=round_steps, micro_batches=micro_batches)
    path = tmp / "lean.json"
    path.write_text(json.dumps(spec))
    return path


@dataclass
class ChainSwarm:
    """A model on the test chain and the processes training it; `close()` stops every process."""

    rpc_url: str
    deployments: Path
    tmp: Path
    protocol: Protocol
    model_id: int
    procs: list[LocalProcess] = field(default_factory=list)

    @classmethod
    def create(cls, rpc_url: str, deployments: Path, tmp: Path, spec: Path = SPEC) -> ChainSwarm:
        protocol = Protocol.load(ChainClient(rpc_url, CREATOR), deployments)
        created = create_model(
            protocol,
            EmbeddedStore(tmp / "store"),
            spec,
            shares_per_work_unit=ETHER,
            revenue_asset="eth",
            operator=None,
        )
        model_id = created.model.model_id
        protocol.client.transact(protocol.registry.functions.setDriver(model_id, CREATOR.address, True))
        return cls(rpc_url, deployments, tmp, protocol, model_id)

    def chain_args(self, rpc_url: str | None = None) -> list[str]:
        return [
            "--rpc-url",
            rpc_url or self.rpc_url,
            "--deployments",
            str(self.deployments),
            "--store",
            str(self.tmp / "store"),
        ]

    def spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None, stdout: Path | None = None
    ):
        proc = spawn_pm(name, args, self.tmp, stdout, env)
        self.procs.append(proc)
        return proc

    def worker(
        self,
        name: str,
        stage: int,
        peers: list[str] = (),
        *,
        rpc_url: str | None = None,
        crash_at: str | None = None,
        extra: list[str] = (),
    ) -> LocalProcess:
        args = chain_worker_args(self.model_id, stage, self.state_dir(stage), self.chain_args(rpc_url), peers)
        args += extra
        env = {"PM_PRIVATE_KEY": worker_account(stage).key.hex()}
        if crash_at:
            env["PM_TEST_CRASH_AT"] = crash_at
        return self.spawn(name, args, env)

    def state_dir(self, stage: int) -> Path:
        return self.tmp / f"worker{stage}"

    def driver(self, name: str, rounds: int, peers: list[str]) -> LocalProcess:
        args = ["driver", "run", "--model", str(self.model_id), "--rounds", str(rounds), "--json"]
        args += self.chain_args()
        for peer in peers:
            args += ["--initial-peers", peer]
        env = {"PM_PRIVATE_KEY": CREATOR.key.hex()}
        return self.spawn(name, args, env, stdout=self.tmp / f"{name}.json")

    def summary(self, proc: LocalProcess, timeout: float = 300.0) -> dict:
        code = proc.popen.wait(timeout=timeout)
        assert code == 0, f"{proc.name} exited with {code}:\n{proc.text()[-3000:]}"
        return json.loads((self.tmp / f"{proc.name}.json").read_text())

    # ---- the ledger ---------------------------------------------------------------------------

    def parameters(self) -> dict:
        return call_struct(self.protocol.client, self.protocol.ledger.functions.parameters())

    def set_parameters(self, **values: int) -> None:
        """setParameter by the ledger's owner, e.g. challengeWindow=DAY."""
        owner = ChainClient(self.rpc_url, OWNER)
        ledger = owner.contract("WorkLedger", self.protocol.ledger.address)
        for name, value in values.items():
            owner.transact(ledger.functions.setParameter(name.encode().ljust(32, b"\0"), value))

    def pass_challenge_window(self) -> None:
        advance_time(self.protocol.client, self.parameters()["challengeWindow"] + 1)

    def claim_events(self, stage: int) -> list:
        """Every ClaimSubmitted event of the stage's worker in this model, oldest first."""
        return self.protocol.ledger.events.ClaimSubmitted().get_logs(
            argument_filters={"modelId": self.model_id, "worker": worker_account(stage).address},
            from_block=self.protocol.first_block(),
        )

    def claims(self, stage: int) -> list[dict]:
        """The stage worker's claims as submitted, CIDs as text."""
        claims = []
        for event in self.claim_events(stage):
            claim = dict(event["args"])
            for key in ("parentCID", "checkpointCID", "manifestCID"):
                claim[key] = cid_of(claim[key])
            claim["block"] = event["blockNumber"]
            claims.append(claim)
        return claims

    def rounds_claimed(self, stage: int) -> list[int]:
        """Every round the stage's worker claimed, in claim order (a round twice would show twice)."""
        return [r for c in self.claims(stage) for r in range(c["firstRound"], c["lastRound"] + 1)]

    def events(self, name: str, **filters) -> list[dict]:
        event = getattr(self.protocol.ledger.events, name)()
        found = event.get_logs(argument_filters=filters or None, from_block=self.protocol.first_block())
        return [dict(log["args"]) for log in found]

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
