"""The cheat modes (a test tool): each yields a claim that is consistent where a liar can make it
so (state digest = last record, trace self-consistent) and that a replay from the true parent
refutes at the step the mode names."""

import hashlib
from pathlib import Path

import pytest

from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.proofs.replay import replay_round
from offchain.worker.cheats import CHEATS, _perturbed, apply_cheat

SPEC = load_spec(Path(__file__).resolve().parents[3] / "specs" / "tiny.json")


@pytest.fixture(scope="module")
def rounds():
    first = train_single_process(SPEC, 1)
    second = train_single_process(SPEC, 1, first_round=1, states=first.states)
    return first.states, second


@pytest.mark.parametrize("stage", [0, 2])
@pytest.mark.parametrize(
    ("mode", "step", "reason"),
    [
        ("skip-steps", SPEC.round_steps // 2, "state after the step"),
        ("fake-digest", SPEC.round_steps - 1, "state after the step"),
        ("wrong-parent", 0, "parent state"),
    ],
)
def test_cheat_is_refuted_at_its_step(rounds, stage, mode, step, reason):
    parents, honest = rounds
    state, trace = honest.states[stage], honest.traces[stage]
    before = trace.to_bytes()
    cheat_state, cheat_trace = apply_cheat(mode, SPEC, parents[stage], state, trace)
    assert trace.to_bytes() == before  # the honest trace is left alone
    assert cheat_state != state
    assert len(cheat_trace.records) == len(trace.records)  # claims the whole round's work
    assert cheat_trace.records[-1].state_after == hashlib.sha256(cheat_state).hexdigest()
    assert replay_round(SPEC, stage, parents[stage], trace, require_signatures=False).ok
    report = replay_round(SPEC, stage, parents[stage], cheat_trace, require_signatures=False)
    assert (report.first_divergent_step, report.reason) == (step, reason)


def test_wrong_parent_trace_is_consistent_from_its_own_start(rounds):
    parents, honest = rounds
    _, trace = apply_cheat("wrong-parent", SPEC, parents[1], honest.states[1], honest.traces[1])
    assert replay_round(SPEC, 1, _perturbed(SPEC, 1, parents[1]), trace, require_signatures=False).ok


def test_unknown_mode_is_refused(rounds):
    parents, honest = rounds
    with pytest.raises(ValueError, match="unknown cheat"):
        apply_cheat("lie", SPEC, parents[0], honest.states[0], honest.traces[0])
    assert set(CHEATS) == {"skip-steps", "fake-digest", "wrong-parent"}
