"""`pm demo --faults`: faults injected at chosen moments of the run, each restarted and timed until
the network has it back; the summary lists them and checks the protocol's invariants after them.

- a stage replica (`REPLICA`) killed with SIGKILL mid-round: at round 1's first step;
- the only worker of a stage (`SOLE_WORKER`: the demo gives stage 0 a single worker, config.py)
  killed between publish and claim: crash point `after-store` (offchain/crash.py) once its round 2
  checkpoint is stored and journaled, before any claim of it. Its stage has no live worker until the
  restart: the driver pauses training (a round under way is aborted on every stage and redone), the
  watch waits for it (`--stage-grace`, which must outlast `RESTART_DELAY_S`); the restarted worker
  resumes from its state folder, claims round 2 from its journal exactly once and trains round 3;
- a verifier (`REPLAYING`) killed mid-replay: crash point `mid-replay`, its first replay;
- the chain's RPC endpoint unreachable for every daemon: the demo's proxy to anvil cut for
  `RPC_OUTAGE_S` at round 3's first step;
- the gateway killed mid-request: crash point `mid-request`, the first completion (the customer's
  `pm infer` retries its paid ticket and is served once).

bench/soak.py uses the random mode instead (`every_s`): every `every_s` seconds one fault drawn
from the kinds that need no crash point (a stage replica killed while its stage has another live
worker, the swarm's entries included: daemons join through any live one, and a restarted worker
keeps its address; a verifier killed; the RPC endpoint cut; the gateway killed), at whatever moment
the run is at, while rounds are trained.

A crashed daemon is started again after `RESTART_DELAY_S` with the same command line (its state
folder: a worker resumes from its journal and syncs from its peer or the last checkpoint, a
verifier resumes its journaled replay, the gateway keeps its served-request record); it counts as
recovered once it serves again. The RPC outage counts as recovered once a claim reaches the chain
after it. Every death the plan did not cause is told and tabled as any run does (watch.py).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from offchain.crash import CRASH_ENV
from offchain.demo.config import SOLE_WORKER_STAGE
from offchain.demo.fleet import Fleet
from offchain.demo.rpc_proxy import RpcProxy
from offchain.demo.watch import Fault, Watch
from offchain.swarm.local import MADDR

RESTART_DELAY_S = 2.0
MIN_STAGE_GRACE_S = RESTART_DELAY_S + 3.0  # the sole worker's stage is left without one until its restart
RPC_OUTAGE_S = 10.0
MIN_ROUNDS = 3
REPLICA = "worker-s2-1"  # stage 0 has one worker, --cheater adds its liar to stage 1
SOLE_WORKER = f"worker-s{SOLE_WORKER_STAGE}-0"
REPLAYING = "verifier-s2-0"
READY = {
    "worker": MADDR,
    "validator": re.compile(r"validates model \d+ stage \d+|as a validator of model"),
    "gateway": re.compile(r"listening on http://"),
}
CRASH_POINTS = {  # role -> (crash point, fault name)
    SOLE_WORKER: (
        "after-store#2",
        f"kill the only worker of stage {SOLE_WORKER_STAGE} between publish and claim (round 2)",
    ),
    REPLAYING: ("mid-replay", "kill mid-replay"),
    "gateway": ("mid-request", "kill mid-request"),
}


@dataclass
class Injector:
    fleet: Fleet
    watch: Watch
    proxy: RpcProxy
    claims: Callable[[], list[dict]]  # the model's claims as last read from the chain
    block: Callable[[], int]  # the chain's latest block number (the demo's own, direct RPC)
    every_s: float | None = None  # random mode (bench/soak.py): one fault this often
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    done: set[str] = field(default_factory=set)
    outage: Fault | None = None
    cut_at_block: int = 0
    training: bool = False  # random faults are drawn only while rounds are trained (run.py sets it)
    last_drawn_s: float = 0.0

    def arm(self, name: str) -> dict[str, str] | None:
        """The environment that makes role `name` crash at its planned point (None: no crash point)."""
        if self.every_s is not None or name not in CRASH_POINTS:
            return None
        point, fault = CRASH_POINTS[name]
        self.watch.expect(name, fault)
        return {CRASH_ENV: point}

    def on_step(self, round_: int, step: int) -> None:
        """Called for every training step the driver reports."""
        if self.every_s is not None:
            return
        if round_ >= 1 and "replica" not in self.done and REPLICA in self.watch.roles:
            self.done.add("replica")
            self.watch.expect(REPLICA, "kill -9 mid-round (round 1)")
            self.watch.roles[REPLICA].current.kill9()
        if round_ >= 3 and "rpc" not in self.done:
            self.done.add("rpc")
            self._cut(f"round {round_}")

    def _cut(self, when: str) -> None:
        self.cut_at_block = self.block()
        self.proxy.cut(RPC_OUTAGE_S)
        effect = f"every daemon's chain RPC unreachable for {RPC_OUTAGE_S:.0f}s ({when})"
        self.outage = self.watch.record(f"RPC endpoint cut for {RPC_OUTAGE_S:.0f}s", "rpc endpoint", effect)

    def _draw(self, now_s: float) -> None:
        """Random mode: one fault among those that can be played right now."""
        if not self.training or now_s - self.last_drawn_s < self.every_s:
            return
        self.last_drawn_s = now_s
        watch = self.watch
        pending = {
            fault.name for fault in watch.faults if fault.fault != "exited" and fault.recovered_s is None
        }
        choices: list[tuple[str, str]] = []
        for role in watch.roles.values():
            if role.name in pending or not role.alive:
                continue
            spare = role.kind == "worker" and sum(r.alive for r in watch.of_kind("worker", role.stage)) > 1
            if spare or role.kind in ("validator", "gateway"):
                choices.append((f"kill -9 ({role.kind})", role.name))
        if "rpc endpoint" not in pending:
            choices.append(("rpc", "rpc endpoint"))
        fault, name = self.rng.choice(choices)
        if name == "rpc endpoint":
            self._cut(f"at {now_s:.0f}s")
            return
        watch.expect(name, fault)
        watch.roles[name].current.kill9()

    def tick(self) -> None:
        """Restart what an injected fault took down, and time each recovery."""
        now_s = time.monotonic() - self.watch.started
        if self.every_s is not None:
            self._draw(now_s)
        for fault in self.watch.faults:
            if fault.fault == "exited" or fault.kind == "rpc":
                continue
            role = self.watch.roles[fault.name]
            if not fault.restarted and now_s - fault.at_s >= RESTART_DELAY_S:
                name = f"{role.name}.{len(role.processes)}"  # a log of its own per process
                self.watch.restarted(role.name, self.fleet.start(name, role.args))
            elif (
                fault.restarted and fault.recovered_s is None and READY[role.kind].search(role.current.text())
            ):
                self.watch.recovered(role.name)
        self._time_outage()

    def _time_outage(self) -> None:
        """Recovered once a claim lands after the cut: no daemon reached the chain while it lasted."""
        if self.outage is None or self.outage.recovered_s is not None:
            return
        if any(claim["block"] > self.cut_at_block for claim in self.claims()):
            self.watch.recovered(self.outage.name)
