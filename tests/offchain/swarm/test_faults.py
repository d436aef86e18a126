"""kill -9 during training: a replicated stage carries on and the killed worker rejoins from its
peer's state; a stage's only worker dies, the driver pauses, the worker restarts from its last
round state, and the result is still bitwise the single-process reference (no step twice)."""

from __future__ import annotations

import re

import pytest

from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec

pytestmark = pytest.mark.slow


def _committed_digest(log: str, round_: int) -> str:
    return re.search(rf"committed round {round_}, digest (\w+)", log).group(1)


def test_killed_replica_is_replaced_then_rejoins_from_its_peer(swarm_factory):
    swarm = swarm_factory(round_steps=6)
    first = swarm.worker("stage0", 0)
    boot = first.maddr()
    stage1a = swarm.worker("stage1a", 1, [boot])
    stage1b = swarm.worker("stage1b", 1, [boot])
    for worker in (stage1a, stage1b, swarm.worker("stage2", 2, [boot])):
        worker.maddr()

    driver = swarm.driver("driver1", 2, [boot])
    driver.wait_for(r"round 0 step 1 loss")
    stage1b.kill9()
    summary = swarm.summary(driver)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["bans"] >= 1, "the killed replica must be detected and banned"
    assert summary["aborted_rounds"] == 0, "losing one of two replicas must not abort the round"
    assert [r["replicas"] for r in summary["rounds"]] == [[1, 2, 1], [1, 1, 1]]

    restarted = swarm.worker("stage1b-restart", 1, [boot], state_dir="stage1b")
    restarted.wait_for(r"synced round 2 state (\w+) from replica")
    restarted.maddr()
    summary = swarm.summary(swarm.driver("driver2", 1, [boot]))
    assert summary["rounds"][0]["round"] == 2
    assert summary["rounds"][0]["replicas"] == [1, 2, 1], "the restarted worker must train again"
    digest = summary["final_digests"][1]
    assert _committed_digest(stage1a.text(), 3) == digest[:16]
    assert _committed_digest(restarted.text(), 3) == digest[:16]
    assert "committed round 3" in restarted.text() and "(2 replicas)" in restarted.text()


def test_only_worker_of_a_stage_dies_training_pauses_and_resumes_without_double_steps(swarm_factory):
    swarm = swarm_factory(round_steps=8)
    first = swarm.worker("stage0", 0)
    boot = first.maddr()
    stage1 = swarm.worker("stage1", 1, [boot])
    for worker in (stage1, swarm.worker("stage2", 2, [boot])):
        worker.maddr()

    rounds = 3
    driver = swarm.driver("driver", rounds, [boot])
    driver.wait_for(r"round 1 step 1 loss")
    stage1.kill9()
    driver.wait_for(r"training paused: no live worker for stage\(s\) 1")
    restarted = swarm.worker("stage1-restart", 1, [boot], state_dir="stage1")
    restarted.wait_for(r"resuming stage 1 from its round 1 state on disk")
    summary = swarm.summary(driver)

    assert summary["aborted_rounds"] == 1 and summary["pauses"] >= 1
    reference = train_single_process(load_spec(swarm.spec), rounds)
    losses = [loss for round_ in summary["rounds"] for loss in round_["losses"]]
    assert losses == reference.losses
    assert summary["final_digests"] == reference.state_digests
