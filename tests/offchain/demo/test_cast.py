"""Who plays in a `pm demo` run: with the planned faults stage 0 has a single worker (the one killed
between publish and claim), the other stages keep a replica to kill; the soak's random faults and a
run without faults keep `--workers-per-stage` on every stage."""

from __future__ import annotations

from collections import Counter

from offchain.demo.config import SOLE_WORKER_STAGE, Cast, DemoConfig
from offchain.demo.faults import CRASH_POINTS, REPLICA, SOLE_WORKER


def workers_by_stage(config: DemoConfig) -> dict[int, int]:
    return dict(Counter(role.stage for role in Cast.for_config(config, 3).workers))


def test_the_planned_faults_leave_stage_0_a_single_worker_and_kill_it():
    cast = Cast.for_config(DemoConfig(workers_per_stage=2, faults=True), 3)
    assert [role.name for role in cast.workers if role.stage == SOLE_WORKER_STAGE] == [SOLE_WORKER]
    assert SOLE_WORKER in CRASH_POINTS and "only worker" in CRASH_POINTS[SOLE_WORKER][1]
    assert REPLICA in {role.name for role in cast.workers}
    assert workers_by_stage(DemoConfig(workers_per_stage=2, faults=True)) == {0: 1, 1: 2, 2: 2}
    assert workers_by_stage(DemoConfig(workers_per_stage=2, faults=True, cheater=True)) == {0: 1, 1: 3, 2: 2}


def test_random_faults_and_runs_without_faults_keep_every_stage_replicated():
    assert workers_by_stage(DemoConfig(workers_per_stage=2, faults=True, fault_every_s=20)) == {
        0: 2,
        1: 2,
        2: 2,
    }
    assert workers_by_stage(DemoConfig(workers_per_stage=2)) == {0: 2, 1: 2, 2: 2}
    assert workers_by_stage(DemoConfig()) == {0: 1, 1: 1, 2: 1}
