"""`pm demo --faults`: faults injected at chosen moments of the run, each restarted and timed until
the network has it back; the summary lists them and checks the protocol's invariants after them.

- a stage replica (`REPLICA`) killed with SIGKILL mid-round: at round 1's first step;
- a worker (`BETWEEN_PUBLISH_AND_CLAIM`) killed between publish and claim: crash point
  `after-store` (offchain/crash.py) at round 2's end, so its round 2 must be claimed exactly once;
- a verifier (`REPLAYING`) killed mid-replay: crash point `mid-replay`, its first replay;
- the chain's RPC endpoint unreachable for every daemon: the demo's proxy to anvil cut for
  `RPC_OUTAGE_S` at round 3's first step;
- the gateway killed mid-request: crash point `mid-request`, the first completion (the customer's
  `pm infer` retries its paid ticket and is served once).

A crashed daemon is started again after `RESTART_DELAY_S` with the same command line (its state
folder: a worker resumes from its journal and syncs from its peer or the last checkpoint, a
verifier resumes its journaled replay, the gateway keeps its served-request record); it counts as
recovered once it serves again. The RPC outage counts as recovered once a claim reaches the chain
after it. Every death the plan did not cause is told and tabled as any run does (watch.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from offchain.crash import CRASH_ENV
from offchain.demo.fleet import Fleet
from offchain.demo.rpc_proxy import RpcProxy
from offchain.demo.watch import Fault, Watch
from offchain.swarm.local import MADDR

RESTART_DELAY_S = 2.0
RPC_OUTAGE_S = 10.0
MIN_ROUNDS = 3
REPLICA = "worker-s1-1"
BETWEEN_PUBLISH_AND_CLAIM = "worker-s0-1"
REPLAYING = "verifier-s2-0"
READY = {
    "worker": MADDR,
    "validator": re.compile(r"validates model \d+ stage \d+|as a validator of model"),
    "gateway": re.compile(r"listening on http://"),
}
CRASH_POINTS = {  # role -> (crash point, fault name)
    BETWEEN_PUBLISH_AND_CLAIM: ("after-store#2", "kill between publish and claim (round 2)"),
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
    done: set[str] = field(default_factory=set)
    outage: Fault | None = None
    cut_at_block: int = 0

    def arm(self, name: str) -> dict[str, str] | None:
        """The environment that makes role `name` crash at its planned point (None: no crash point)."""
        if name not in CRASH_POINTS:
            return None
        point, fault = CRASH_POINTS[name]
        self.watch.expect(name, fault)
        return {CRASH_ENV: point}

    def on_step(self, round_: int, step: int) -> None:
        """Called for every training step the driver reports."""
        if round_ >= 1 and "replica" not in self.done and REPLICA in self.watch.roles:
            self.done.add("replica")
            self.watch.expect(REPLICA, "kill -9 mid-round (round 1)")
            self.watch.roles[REPLICA].current.kill9()
        if round_ >= 3 and "rpc" not in self.done:
            self.done.add("rpc")
            self.cut_at_block = self.block()
            self.proxy.cut(RPC_OUTAGE_S)
            effect = f"every daemon's chain RPC unreachable for {RPC_OUTAGE_S:.0f}s (round {round_})"
            self.outage = self.watch.record(
                f"RPC endpoint cut for {RPC_OUTAGE_S:.0f}s", "rpc endpoint", effect
            )

    def tick(self) -> None:
        """Restart what an injected fault took down, and time each recovery."""
        now_s = time.monotonic() - self.watch.started
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
