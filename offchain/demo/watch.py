"""What the demo does when one of its daemons dies: tell it in one line and go on whenever the
network can, stop with a message naming what is missing when it cannot.

The network rides out most faults on its own: the driver bans a dead stage replica and trains on
the stage's others; a stage's claims are judged by its other validators (with none left they
finalize unchecked once their challenge window passes, as on any chain); the web app is only a
window. The run cannot go on without the chain (anvil), nor with a stage that has had no live
worker for `grace_s` (time for a restarted one to come back: the driver waits for it meanwhile;
`pm demo --stage-grace`).
Every fault goes into the summary's faults table, with what became of it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from offchain.demo.config import STAGE_GRACE_S
from offchain.demo.fleet import Fleet
from offchain.errors import UserError
from offchain.swarm.local import LocalProcess


@dataclass
class Incarnations:
    """One role's daemon across restarts: every process that played it, the current one last."""

    name: str
    stage: int | None
    kind: str  # "worker", "validator", "gateway" or "web"
    args: list[str]  # its `pm` command line, to start it again
    processes: list[LocalProcess] = field(default_factory=list)

    @property
    def current(self) -> LocalProcess:
        return self.processes[-1]

    @property
    def alive(self) -> bool:
        return self.current.popen.poll() is None

    def logs(self) -> str:
        return "".join(process.text() for process in self.processes)


@dataclass
class Fault:
    """A daemon that exited while the run went on, or a fault `pm demo --faults` injected; `at_s`:
    seconds into the run; `recovered_s`: seconds from the fault until the network had it back."""

    name: str
    kind: str
    stage: int | None
    code: int | None
    at_s: float
    effect: str
    fault: str = "exited"  # what happened: a fault the watch saw, or the name of an injected fault
    restarted: bool = False
    recovered_s: float | None = None

    def document(self) -> dict:
        return {
            "fault": self.fault,
            "name": self.name,
            "kind": self.kind,
            "stage": self.stage,
            "exit_code": self.code,
            "at_s": round(self.at_s, 1),
            "effect": self.effect,
            "restarted": self.restarted,
            "recovered_s": None if self.recovered_s is None else round(self.recovered_s, 1),
        }


class Watch:
    def __init__(self, fleet: Fleet, echo: Callable[[str], None], grace_s: float = STAGE_GRACE_S) -> None:
        self.fleet, self.echo, self.grace_s = fleet, echo, grace_s
        self.started = time.monotonic()
        self.roles: dict[str, Incarnations] = {}
        self.faults: list[Fault] = []
        self._seen: set[int] = set()  # pids whose exit was told
        self._expected: dict[str, str] = {}  # role -> the injected fault its next exit is
        self._stage_down: dict[int, float] = {}
        self._unchecked: set[int] = set()  # stages told to have no live validator

    def add(self, name: str, kind: str, stage: int | None, process: LocalProcess, args: list[str]) -> None:
        """Record `process` (started as `pm <args>`) as the daemon of role `name`."""
        self.roles.setdefault(name, Incarnations(name, stage, kind, args)).processes.append(process)

    def expect(self, name: str, fault: str) -> None:
        """The next exit of `name` is the injected `fault` (told and tabled under that name)."""
        self._expected[name] = fault

    def of_kind(self, kind: str, stage: int | None = None) -> list[Incarnations]:
        return [r for r in self.roles.values() if r.kind == kind and (stage is None or r.stage == stage)]

    def stage_alive(self, stage: int) -> bool:
        return any(role.alive for role in self.of_kind("worker", stage))

    def check(self) -> None:
        """Tell each new fault once; raise when the run cannot go on."""
        anvil = self.fleet.anvil
        if anvil is not None and anvil.process.poll() is not None:
            raise UserError(
                f"anvil exited with code {anvil.process.returncode}: the chain is gone, the run cannot go on "
                f"(log: {self.fleet.log_dir / 'anvil.log'})"
            )
        for role in self.roles.values():
            process = role.current
            if process.popen.poll() is not None and process.popen.pid not in self._seen:
                self._seen.add(process.popen.pid)
                self._died(role, process)
        now = time.monotonic()
        for stage in sorted({role.stage for role in self.of_kind("worker")}):
            if self.stage_alive(stage):
                self._stage_down.pop(stage, None)
                continue
            since = self._stage_down.setdefault(stage, now)
            if now - since > self.grace_s:
                names = ", ".join(role.name for role in self.of_kind("worker", stage))
                raise UserError(
                    f"stage {stage} has had no live worker for {self.grace_s:.0f}s ({names} exited): "
                    f"the run cannot go on (logs: {self.fleet.log_dir})"
                )

    def _died(self, role: Incarnations, process: LocalProcess) -> None:
        at_s, code = time.monotonic() - self.started, process.popen.returncode
        injected = self._expected.pop(role.name, None)
        effect = self._effect(role) + ("; pm demo --faults restarts it" if injected else "")
        fault = Fault(role.name, role.kind, role.stage, code, at_s, effect, injected or "exited")
        self.faults.append(fault)
        cause = f" ({injected})" if injected else ""
        self.echo(
            f"[yellow]{role.name} exited with code {code}{cause}[/yellow]: {effect} (log: {process.log})"
        )

    def _effect(self, role: Incarnations) -> str:
        """What the network does without `role`, in a few words (the other roles are checked live)."""
        stage = role.stage
        if role.kind == "worker":
            others = [r.name for r in self.of_kind("worker", stage) if r.alive]
            if others:
                return f"stage {stage} goes on with {', '.join(others)}"
            return (
                f"stage {stage} has no live worker: the round waits, and the run stops unless one is "
                f"back within {self.grace_s:.0f}s"
            )
        if role.kind == "validator":
            others = [r.name for r in self.of_kind("validator", stage) if r.alive]
            if others:
                return f"stage {stage}'s claims are judged by {', '.join(others)}"
            return f"stage {stage} has no live validator: its claims finalize unchecked after their window"
        if role.kind == "gateway":
            return "no completion can be served until it is back"
        return "the network goes on without it"

    def record(self, fault: str, name: str, effect: str) -> Fault:
        """An injected fault that is no process's exit (the chain's RPC endpoint cut)."""
        entry = Fault(name, "rpc", None, None, time.monotonic() - self.started, effect, fault)
        self.faults.append(entry)
        self.echo(f"[yellow]{fault}[/yellow]: {effect}")
        return entry

    def ever_died(self, name: str) -> bool:
        return any(fault.name == name for fault in self.faults)

    def live_validators(self, stage: int) -> list[Incarnations]:
        return [role for role in self.of_kind("validator", stage) if role.alive]

    def restarted(self, name: str, process: LocalProcess) -> None:
        """`process` now plays `name` again: its last fault is marked restarted."""
        self.roles[name].processes.append(process)
        for fault in reversed(self.faults):
            if fault.name == name:
                fault.restarted = True
                break

    def recovered(self, name: str) -> None:
        """The restarted `name` is serving again: its last fault gets its recovery time."""
        for fault in reversed(self.faults):
            if fault.name == name and fault.recovered_s is None:
                fault.recovered_s = time.monotonic() - self.started - fault.at_s
                break
