"""The phases of a demo run, each driving the real `pm` command a participant would type.

`DemoNetwork` holds what the phases share (the chain, the model, the swarm's entry address) and
the `Fleet` that owns every process. Each phase is one method, called in order by run.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.markup import escape

from offchain.chain.client import ChainClient
from offchain.chain.protocol import Protocol
from offchain.chain.structs import call_struct
from offchain.data.shipped import SHIPPED
from offchain.demo.anvil import free_port, start_anvil
from offchain.demo.config import PROMPTS, Cast, DemoConfig, Role
from offchain.demo.deploy import Deployment, deploy_protocol
from offchain.demo.faults import Injector
from offchain.demo.fleet import Fleet
from offchain.demo.rpc_proxy import RpcProxy
from offchain.demo.settle import Settler
from offchain.demo.watch import Watch
from offchain.errors import UserError
from offchain.model.spec import load_spec
from offchain.swarm.local import LocalProcess

STEP_LINE = re.compile(r"round (\d+) step (\d+) loss ([0-9.]+)")
CHALLENGE_WINDOW_S = 600
START_TIMEOUT_S = 180.0


@dataclass
class RoundResult:
    """One trained round as the driver reported it (`pm driver run --json`)."""

    round: int
    losses: list[float]
    tokens: int
    tokens_per_second: float
    bytes_per_token: list[dict[str, float]]  # per stage boundary: forward, backward

    @property
    def loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    @property
    def wire_bytes(self) -> int:
        """Bytes that crossed the stage boundaries in this round, both directions."""
        return round(sum(b["forward"] + b["backward"] for b in self.bytes_per_token) * self.tokens)


@dataclass
class DemoNetwork:
    config: DemoConfig
    cast: Cast
    fleet: Fleet
    watch: Watch
    echo: Callable[[str], None]
    deployment: Deployment | None = None
    protocol: Protocol | None = None  # read-only handle (no key): the demo itself never transacts
    model_id: int | None = None
    entries: list[str] = field(default_factory=list)  # each stage's first worker: everyone's --initial-peers
    workers: dict[str, LocalProcess] = field(default_factory=dict)
    gateway_url: str | None = None
    settler: Settler | None = None
    rpc_proxy: RpcProxy | None = None  # --faults: the daemons' way to anvil, cut for a while
    injector: Injector | None = None  # --faults: the faults injected and restarted

    # -- paths and shared arguments ------------------------------------------------------------

    @property
    def out(self) -> Path:
        return self.config.out

    @property
    def store_dir(self) -> Path:
        return self.out / "store"

    @property
    def rpc_url(self) -> str:
        return self.fleet.anvil.url

    def chain_args(self) -> list[str]:
        return ["--rpc-url", self.rpc_url, "--deployments", str(self.out / "deployments")]

    def daemon_chain_args(self) -> list[str]:
        """With --faults the daemons reach anvil through the proxy the injector cuts."""
        rpc_url = self.rpc_proxy.url if self.rpc_proxy else self.rpc_url
        return ["--rpc-url", rpc_url, "--deployments", str(self.out / "deployments")]

    def store_args(self) -> list[str]:
        ipfs = ["--ipfs-api", self.config.ipfs_api] if self.config.ipfs_api else []
        return ["--store", str(self.store_dir), *ipfs]

    def key_file(self, role: Role) -> Path:
        """The role's key in a 0600 file (never on a command line, never in a log)."""
        path = self.out / "keys" / f"{role.name}.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600)
            path.write_text(role.account.key.hex())
        return path

    def tick(self) -> None:
        """Called while waiting on anything: deaths are told (the run stops if it cannot go on),
        claims may settle."""
        self.watch.check()
        if self.injector is not None:
            self.injector.tick()
        if self.settler is not None:
            self.settler.tick()

    def wait_until(self, what: str, done: Callable[[], bool], timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                raise UserError(
                    f"timed out after {timeout_s:.0f}s waiting for {what} (logs: {self.fleet.log_dir})"
                )
            self.tick()
            time.sleep(0.3)

    # -- phases -------------------------------------------------------------------------------

    @property
    def num_stages(self) -> int:
        return len({role.stage for role in self.cast.workers})

    def check_storage(self) -> None:
        """With --ipfs-api, the Kubo daemon must answer before anything starts: workers never claim a
        round validators cannot fetch, so with the daemon down no round could ever be claimed."""
        if not self.config.ipfs_api:
            return
        from offchain.storage.errors import StorageError
        from offchain.storage.kubo import KuboStore

        try:
            kubo = KuboStore(self.config.ipfs_api, retries=1)
            with contextlib.closing(kubo):
                version = kubo.version()
        except StorageError as error:
            raise UserError(
                f"--ipfs-api: {error}. Start the daemon (`ipfs daemon`) or leave --ipfs-api out to use "
                "the embedded store"
            ) from None
        self.echo(f"Kubo {version} at {self.config.ipfs_api}: checkpoints, traces and manifests go there")

    def start_chain(self) -> None:
        """anvil on a free port with one funded account per participant and a block every second:
        daemons read the time from the latest block, so the chain's clock must move on its own, as
        a real chain's does (an instant-mining anvil stops its clock between transactions)."""
        log = self.fleet.log_dir / "anvil.log"
        self.fleet.adopt_anvil(start_anvil("--accounts", str(self.cast.size), "--block-time", "1", log=log))
        self.echo(f"anvil at {self.rpc_url} (chain id 31337, 1 s blocks), {self.cast.size} funded accounts")
        if self.config.faults:
            self.rpc_proxy = RpcProxy(self.fleet.anvil.port).start()
            self.injector = Injector(
                self.fleet,
                self.watch,
                self.rpc_proxy,
                claims=lambda: self.settler.claims,
                block=lambda: self.protocol.client.w3.eth.block_number,
                every_s=self.config.fault_every_s,
            )
            self.echo(f"faults: the daemons reach the chain through a proxy at {self.rpc_proxy.url}")

    def _daemon(self, name: str, kind: str, stage: int | None, args: list[str]) -> LocalProcess:
        """Start a role's daemon, watched (and, with --faults, armed with its planned crash)."""
        env = self.injector.arm(name) if self.injector else None
        process = self.fleet.start(name, args, env)
        self.watch.add(name, kind, stage, process, args)
        return process

    def deploy(self) -> None:
        """scripts/deploy.py on brownie's live-network path, the deployer's key in PRIVATE_KEY."""
        self.echo("$ brownie networks add ... && brownie run scripts/deploy.py --network ...")
        self.deployment = deploy_protocol(self.rpc_url, self.out / "deployments", self.cast.deployer.account)
        self.protocol = Protocol(ChainClient(self.rpc_url), self.deployment.document)
        for name, entry in self.deployment.document["contracts"].items():
            self.echo(f"  {name:<26} {entry['address']}")
        self._lengthen_challenge_window()

    def _lengthen_challenge_window(self) -> None:
        """A challenge window longer than training, set by the ledger's owner: claims stay open while
        rounds are trained, as on a testnet where the window (a day) spans hundreds of rounds, so a
        lane holds several open claims and a refuted one voids those chained on it. It costs no wall
        time: the settle phase moves the chain's clock past it once every claim is judged."""
        owner = ChainClient(self.rpc_url, self.cast.deployer.account)
        ledger = owner.contract("WorkLedger", self.protocol.ledger.address)
        if call_struct(owner, ledger.functions.parameters())["challengeWindow"] >= CHALLENGE_WINDOW_S:
            return
        owner.transact(ledger.functions.setParameter(b"challengeWindow".ljust(32, b"\0"), CHALLENGE_WINDOW_S))
        self.echo(f"  challenge window set to {CHALLENGE_WINDOW_S} s by the ledger's owner (setParameter)")

    def prepare_data(self) -> None:
        """The spec's training data, prepared from the shipped corpus as a creator prepares their own
        (echoed, so it can be replayed by hand) into the store everyone reads: `pm model create`
        then checks the spec against it, the driver draws batches from it, validators check them."""
        manifest_cid = load_spec(self.config.spec).manifest_cid
        shipped = SHIPPED.get(manifest_cid)
        if shipped is None:  # a spec of one's own: its data set must already be in the store
            self.echo(f"data set {manifest_cid}: not a shipped one, read from the store")
            return
        args = shipped.command(self.out / "data", self.store_dir)
        if self.config.ipfs_api:
            args += ["--ipfs-api", self.config.ipfs_api]
        prepared = json.loads(self.fleet.run("data-prepare", args))
        if prepared["manifest_cid"] != manifest_cid:
            raise UserError(
                f"pm data prepare made data set {prepared['manifest_cid']}, the spec names {manifest_cid}"
            )
        self.echo(
            f"data set {manifest_cid}: {prepared['vocab_size']}-token BPE, {prepared['train_tokens']} train "
            f"and {prepared['validation_tokens']} validation tokens"
        )

    def create_model(self) -> None:
        args = ["model", "create", "--spec", str(self.config.spec), "--json"]
        args += ["--key-file", str(self.key_file(self.cast.creator)), *self.chain_args(), *self.store_args()]
        created = json.loads(self.fleet.run("model-create", args))
        self.model_id = created["model_id"]
        self.echo(f"model {self.model_id}: {created['num_stages']} stages, spec {created['spec_cid']}")
        for role in ("driver", "gateway"):  # the creator drives the rounds and, as operator, runs the gateway
            args = ["model", role, "--model", str(self.model_id), self.cast.creator.address]
            self.fleet.run(
                f"model-{role}",
                [*args, "--key-file", str(self.key_file(self.cast.creator)), *self.chain_args()],
            )

    def peer_args(self) -> list[str]:
        """--initial-peers for a daemon: every stage's first worker, so that it joins while any of them
        lives (the node then knows the whole swarm, and a dead entry changes nothing)."""
        return [arg for peer in self.entries for arg in ("--initial-peers", peer)]

    def _start_worker(self, role: Role, peers: list[str]) -> LocalProcess:
        """A worker on a port of its own for the whole run: restarted, it keeps its address (its
        identity is in its state folder), so the --initial-peers naming it stay good."""
        args = ["worker", "run", "--model", str(self.model_id), "--stage", str(role.stage)]
        args += ["--key-file", str(self.key_file(role)), "--state-dir", str(self.out / "state" / role.name)]
        args += ["--host-maddrs", f"/ip4/127.0.0.1/tcp/{free_port()}"]
        args += [*self.daemon_chain_args(), *self.store_args()]
        for peer in peers:
            args += ["--initial-peers", peer]
        if role.cheat:
            args += ["--cheat", role.cheat, "--cheat-round", str(self.config.cheat_round)]
        process = self._daemon(role.name, "worker", role.stage, args)
        self.workers[role.name] = process
        return process

    def _members(self) -> set[str]:
        ledger = self.protocol.ledger
        stages = {role.stage for role in self.cast.workers}
        return {
            member for stage in stages for member in ledger.functions.membersOf(self.model_id, stage).call()
        }

    def start_workers(self) -> None:
        """Stage 0's first worker founds the swarm; the first of every other stage joins through it
        (each is its stage's first member and creates the stage key); then the replicas and the
        cheater, who get their stage's key from a member over P2P, join through all of those. The
        founder, if restarted, rejoins through the other stages' first workers."""
        firsts: dict[int, Role] = {}
        for role in self.cast.workers:
            if role.cheat is None:
                firsts.setdefault(role.stage, role)
        founder = firsts.pop(0)
        rest = [role for role in self.cast.workers if role is not founder and role not in firsts.values()]
        self.entries = [self._start_worker(founder, []).maddr(START_TIMEOUT_S)]
        joined = {founder.address}
        for batch in (list(firsts.values()), rest):
            peers = list(self.entries)
            for role in batch:
                self._start_worker(role, peers)
            for role in batch:
                maddr = self.workers[role.name].maddr(START_TIMEOUT_S)
                if role in firsts.values():
                    self.entries.append(maddr)
            joined |= {role.address for role in batch}
            self.wait_until("the workers to stake and join", lambda wanted=joined: wanted <= self._members())
        self.watch.roles[founder.name].args += self.peer_args()[2:]  # its restart joins, founds no new swarm
        self.echo(f"{len(self.cast.workers)} stage workers serving, swarm entries {' '.join(self.entries)}")

    def start_verifiers(self) -> None:
        """One validator per stage (two on the cheater's stage), each registered for its stage only."""
        for role in self.cast.verifiers:
            args = ["verifier", "run", "--model", str(self.model_id), "--stage", str(role.stage)]
            args += [*self.peer_args(), "--probability", "1"]
            args += [
                "--key-file",
                str(self.key_file(role)),
                "--state-dir",
                str(self.out / "state" / role.name),
            ]
            args += [*self.daemon_chain_args(), *self.store_args()]
            self._daemon(role.name, "validator", role.stage, args)
        ledger = self.protocol.ledger
        wanted = {(role.address, role.stage) for role in self.cast.verifiers}

        def registered() -> bool:
            logs = ledger.events.ValidatorRegistered().get_logs(
                from_block=0, argument_filters={"modelId": self.model_id}
            )
            return wanted <= {(log["args"]["account"], log["args"]["stage"]) for log in logs}

        self.wait_until("the validators to register", registered)
        names = {role.address: role.name for role in (*self.cast.workers, *self.cast.verifiers)}
        self.settler = Settler(self.protocol, self.model_id, self.fleet.anvil, self.watch, names, self.echo)

    def start_gateway(self) -> None:
        port, web_port = free_port(), free_port()
        args = ["gateway", "run", "--model", str(self.model_id), "--port", str(port)]
        args += [*self.peer_args(), "--state-dir", str(self.out / "state" / "gateway")]
        args += ["--key-file", str(self.key_file(self.cast.creator))]
        args += ["--allow-origin", f"http://127.0.0.1:{web_port}"]  # the web app's playground
        args += [*self.daemon_chain_args(), *self.store_args()]
        self._daemon("gateway", "gateway", None, args)
        self.gateway_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.gateway_url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        self.wait_until("the gateway to answer /healthz", healthy)
        self.start_web(web_port)

    def start_web(self, port: int) -> None:
        """`pm web serve` on the demo's chain and gateway, open while the demo runs."""
        args = ["web", "serve", "--port", str(port), *self.daemon_chain_args(), "--gateway", self.gateway_url]
        self._daemon("web", "web", None, args).wait_for("listening on http://", START_TIMEOUT_S)
        self.echo(f"web app at http://127.0.0.1:{port}/ (holders claim, customers pay, model dashboards)")

    def train_round(self, on_step: Callable[[int, int, float], None]) -> RoundResult:
        """One `pm driver run --rounds 1`; its step lines feed `on_step` while it runs."""
        args = ["driver", "run", "--model", str(self.model_id), "--rounds", "1", "--json"]
        args += [*self.peer_args(), "--key-file", str(self.key_file(self.cast.creator))]
        process, stdout = self.fleet.launch("driver", [*args, *self.chain_args(), *self.store_args()])
        seen = 0

        def follow() -> None:
            nonlocal seen
            for match in list(STEP_LINE.finditer(process.text()))[seen:]:
                on_step(int(match[1]), int(match[2]), float(match[3]))
                if self.injector is not None:
                    self.injector.on_step(int(match[1]), int(match[2]))
                seen += 1
            self.tick()

        report = json.loads(self.fleet.result(process, stdout, 600, follow))
        follow()
        (trained,) = report["rounds"]
        return RoundResult(
            round=trained["round"],
            losses=trained["losses"],
            tokens=report["tokens"],
            tokens_per_second=report["tokens_per_second"],
            bytes_per_token=report["boundary_bytes_per_token"],
        )

    def settle(self, rounds: list[int], timeout_s: float = CHALLENGE_WINDOW_S) -> None:
        """Until every round of every stage is covered by a finalized honest claim (no round lost),
        every honest worker that never died has every trained round finalized, the cheater has a
        rejected claim, and no claim is open (one that died claims what it trained while it ran).
        The timeout is a whole challenge window of (1-s block) chain time: a replica whose partner
        lied about the last round stays undecided until its validators stop waiting for the group
        (two thirds of the window), and the settler moves time only past claims every live
        validator of their stage judged."""
        honest = [role for role in self.cast.workers if role.cheat is None]
        stage_of = {role.address: role.stage for role in honest}
        steady = {role.address for role in honest if not self.watch.ever_died(role.name)}
        cheaters = {role.address for role in self.cast.workers if role.cheat}
        wanted = {(address, round_) for address in steady for round_ in rounds}
        stages = {(role.stage, round_) for role in honest for round_ in rounds}
        self.settler.settling = True

        def settled() -> bool:
            claims = self.settler.claims
            finalized = {
                (c["worker"], r)
                for c in claims
                if c["state"] == "finalized"
                for r in range(c["first_round"], c["last_round"] + 1)
            }
            covered = {(stage_of[worker], r) for worker, r in finalized if worker in stage_of}
            caught = {c["worker"] for c in claims if c["state"] == "rejected"}
            open_ = [c for c in claims if c["state"] == "pending"]
            return wanted <= finalized and stages <= covered and cheaters <= caught and not open_

        try:
            self.wait_until("every claim to settle", settled, timeout_s)
        except UserError as error:
            raise UserError(f"{error}; {self.settler.describe()}") from None

    def infer(self) -> list[dict]:
        completions = []
        for index, prompt in enumerate(PROMPTS[: self.config.completions]):
            args = ["infer", "--model", str(self.model_id), "--prompt", prompt, "--json"]
            args += ["--max-tokens", str(self.config.max_tokens), "--gateway", self.gateway_url]
            args += ["--temperature", str(self.config.temperature), "--top-k", str(self.config.top_k)]
            args += ["--key-file", str(self.key_file(self.cast.customer)), *self.chain_args()]
            reply = json.loads(self.fleet.run(f"infer-{index}", args, tick=self.tick))
            completion = {
                "prompt": prompt,
                "text": reply["text"],
                "request_id": reply["requestId"],
                "tx": reply["tx"],
                "amount_wei": reply["amount_wei"],
                "round": reply["round"],
            }
            completions.append(completion)
            self.echo(
                f"  {escape(repr(prompt))} -> [bold]{escape(repr(reply['text']))}[/bold]"
                f"  [dim](weights of round {reply['round']}, paid {reply['amount_wei']} wei)"
            )
        return completions

    def claim_revenue(self) -> dict[str, int]:
        """`pm claim` by every worker; returns address -> wei received."""
        received = {}
        for role in self.cast.workers:
            args = ["claim", "--model", str(self.model_id), "--json", "--key-file", str(self.key_file(role))]
            reply = json.loads(
                self.fleet.run(f"claim-{role.name}", [*args, *self.chain_args()], tick=self.tick)
            )
            received[role.address] = sum(int(record["amount_wei"]) for record in reply["claims"])
        return received
