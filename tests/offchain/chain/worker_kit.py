"""On-chain swarms for the worker tests: a model created on anvil, `pm worker run --model` and
`pm driver run --model` processes on loopback, and reads of what they did on-chain."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from chain_testkit import REPO, advance_time, anvil_account

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.storage.embedded import EmbeddedStore
from offchain.swarm.local import LocalProcess, spawn_pm

ETHER = 10**18
SPEC = REPO / "specs" / "tiny.json"


CREATOR = anvil_account(1)  # creates the model and drives its rounds


def worker_account(stage: int):
    return anvil_account(2 + stage)


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
    def create(cls, rpc_url: str, deployments: Path, tmp: Path) -> ChainSwarm:
        protocol = Protocol.load(ChainClient(rpc_url, CREATOR), deployments)
        created = create_model(
            protocol,
            EmbeddedStore(tmp / "store"),
            SPEC,
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
        args = ["worker", "run", "--model", str(self.model_id), "--stage", str(stage)]
        args += ["--state-dir", str(self.state_dir(stage)), *self.chain_args(rpc_url), *extra]
        for peer in peers:
            args += ["--initial-peers", peer]
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

    def summary(self, proc: LocalProcess, timeout: float = 240.0) -> dict:
        code = proc.popen.wait(timeout=timeout)
        assert code == 0, f"{proc.name} exited with {code}:\n{proc.text()[-3000:]}"
        return json.loads((self.tmp / f"{proc.name}.json").read_text())

    def pass_challenge_window(self) -> None:
        client = self.protocol.client
        advance_time(client, self.protocol.ledger.functions.parameters().call()[0] + 1)

    def claim_events(self, stage: int) -> list:
        """Every ClaimSubmitted event of the stage's worker in this model, oldest first."""
        return self.protocol.ledger.events.ClaimSubmitted().get_logs(
            argument_filters={"modelId": self.model_id, "worker": worker_account(stage).address},
            from_block=self.protocol.first_block(),
        )

    def claims(self, stage: int) -> list[dict]:
        return [dict(event["args"]) for event in self.claim_events(stage)]

    def claim_gas(self, stage: int) -> list[tuple[int, int]]:
        """(submitClaim gas, finalize gas) of each of the stage's finalized claims, from the receipts."""
        ledger, eth = self.protocol.ledger, self.protocol.client.w3.eth
        costs = []
        for event in self.claim_events(stage):
            (finalized,) = ledger.events.ClaimFinalized().get_logs(
                argument_filters={"claimId": event["args"]["claimId"]}, from_block=event["blockNumber"]
            )
            submit = eth.get_transaction_receipt(event["transactionHash"])["gasUsed"]
            costs.append((submit, eth.get_transaction_receipt(finalized["transactionHash"])["gasUsed"]))
        return costs

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
