"""Run hypothesis rule-based state machines against the chain, every example from one snapshot.

brownie 1.22's mypyc-compiled `state_machine` rejects the machine class it builds itself
("_BrownieStateMachine object expected"), so machines here subclass hypothesis'
RuleBasedStateMachine directly and call `revert_chain()` first thing in `__init__`, which is
what brownie's wrapper does.
"""

from typing import Any

import hypothesis
from brownie import chain
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test


class ChainStateMachine(RuleBasedStateMachine):
    """A state machine whose every example starts from the chain state at `run` time."""

    def __init__(self) -> None:
        chain.revert()
        super().__init__()


# Every step is a transaction on anvil, and a run of 20+ steps with uint256 draws can overrun
# hypothesis' example buffer now and then: those overruns are discarded and regenerated, so the
# health checks that would abort the whole test for them (seen in CI) are not about correctness.
SUPPRESSED = [hypothesis.HealthCheck.data_too_large, hypothesis.HealthCheck.too_slow]


def run(machine: type[ChainStateMachine], **settings: Any) -> None:
    """Snapshot the chain, then run `machine` as a hypothesis test with `settings`."""
    chain.snapshot()
    run_state_machine_as_test(
        machine, settings=hypothesis.settings(deadline=None, suppress_health_check=SUPPRESSED, **settings)
    )
