"""A real swarm on a prepared data set: `pm driver run` draws every micro-batch from the manifest
(sending where its rows start), and three `pm worker run` processes train bitwise like the
single-process reference on the same data set."""

import pytest

from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from tests.offchain.swarm.conftest import Swarm, write_spec

pytestmark = pytest.mark.slow


def test_driver_trains_the_swarm_on_the_manifest_rows(tmp_path, tiny_dataset):
    spec_path = write_spec(tmp_path)
    swarm = Swarm(tmp_path, spec_path)
    try:
        first = swarm.worker("stage0", 0)
        bootstrap = first.maddr()
        for stage in (1, 2):
            swarm.worker(f"stage{stage}", stage, [bootstrap]).maddr()
        # the driver's store starts empty: the shipped data set is prepared into it on demand
        driver = swarm.driver("driver", 1, [bootstrap], "--store", str(tmp_path / "driver-store"))
        summary = swarm.summary(driver)
    finally:
        swarm.close()
    reference = train_single_process(load_spec(spec_path), 1, dataset=tiny_dataset)
    assert [loss for round_ in summary["rounds"] for loss in round_["losses"]] == reference.losses
    assert summary["final_digests"] == reference.state_digests
