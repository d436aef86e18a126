"""Provenance: traces name the rows each micro-batch came from, and a verifier refutes a stage
that trained on anything but the data set's rows for that step (a cheating driver is caught)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from offchain.data.dataset import Dataset
from offchain.data.sampler import rows_at, sample_source
from offchain.model import reference
from offchain.model.records import Trace
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.tokens import decode_tokens
from offchain.proofs.provenance import Batching, NotTheData, check_data, check_micro_batch
from offchain.storage.embedded import EmbeddedStore
from offchain.verifier.check import replay_claim
from tests.offchain.verifier.rounds_kit import claim_for, make_signer, throwaway

REPO = Path(__file__).resolve().parents[3]
CHEAT_STEP, CHEAT_MB = 2, 1
DRIVER, STAGES = throwaway("driver"), [throwaway(f"stage{s}") for s in range(3)]
WORKERS = [account.address for account in STAGES]


@pytest.fixture(scope="module")
def spec(tiny_dataset):
    """specs/tiny.json: the shipped corpus prepared with a 512-token BPE (the data set's CIDs)."""
    spec = load_spec(REPO / "specs" / "tiny.json")
    assert spec.manifest_cid == tiny_dataset.cid
    return spec


@pytest.fixture(scope="module")
def honest(spec, tiny_dataset):
    return train_single_process(
        spec, 1, dataset=tiny_dataset, sign=make_signer(DRIVER, STAGES), recipients=WORKERS
    )


def cheat_round(spec, dataset, monkeypatch, cheat):
    """A round whose driver replaces micro-batch CHEAT_MB of step CHEAT_STEP by `cheat(tokens,
    targets, source)`; every stage trains on what it is sent, as an honest worker would."""
    draw = reference.micro_batch

    def driver(spec_, dataset_, round_, step, mb):
        tokens, targets, source = draw(spec_, dataset_, round_, step, mb)
        if (step, mb) == (CHEAT_STEP, CHEAT_MB):
            return cheat(tokens, targets, source)
        return tokens, targets, source

    monkeypatch.setattr(reference, "micro_batch", driver)
    return train_single_process(spec, 1, dataset=dataset)


def test_every_stage_records_the_rows_its_micro_batches_came_from(spec, tiny_dataset, honest):
    for stage, trace in enumerate(honest.traces):
        assert check_data(trace, tiny_dataset, Batching.of(spec), targets=stage == 2) is None
        record = trace.records[1].micro_batches[0]
        assert record.source == sample_source(
            tiny_dataset.manifest, tiny_dataset.cid, spec.seed, 0, 1, 0, 8, 64
        )
        assert Trace.from_bytes(trace.to_bytes()).records == trace.records  # the source survives storage
    first = honest.traces[0].records[0].micro_batches[0]
    rows = rows_at(tiny_dataset, "train", first.source, spec.context)
    tokens = decode_tokens(honest.traces[0].payloads[first.inputs["tokens"]], spec).numpy()
    assert np.array_equal(tokens, rows.tokens)


def shifted(tokens, targets, source):
    """Real data set rows, one id later than drawn, under the drawn source: a subtle lie."""
    return tokens.roll(-1, dims=1), targets.roll(-1, dims=1), source


def foreign(tokens, targets, source):
    """Ids that are not the data set's at all (same shape and vocabulary)."""
    noise = torch.randint(3, 512, tokens.shape, generator=torch.Generator().manual_seed(0))
    return noise, noise.roll(-1, dims=1), source


def other_rows(tokens, targets, source):
    """The driver picks its own rows (honestly named): not the sampler's draw for this step."""
    return tokens, targets, tuple((shard, offset + 1) for shard, offset in source)


@pytest.mark.parametrize(
    ("cheat", "reason"),
    [
        (shifted, "its token ids are not the data set's rows"),
        (foreign, "its token ids are not the data set's rows"),
        (other_rows, "its rows are not the data set's draw for this step"),
    ],
)
def test_a_driver_feeding_other_tokens_is_caught_at_that_step(spec, tiny_dataset, monkeypatch, cheat, reason):
    result = cheat_round(spec, tiny_dataset, monkeypatch, cheat)
    for stage in (0, 2):
        mismatch = check_data(result.traces[stage], tiny_dataset, Batching.of(spec), targets=stage == 2)
        assert mismatch is not None and mismatch.step == CHEAT_STEP, stage
        assert mismatch.reason.startswith(f"micro-batch {CHEAT_MB}: {reason}"), mismatch.reason
        assert mismatch.expected != mismatch.actual
    # the verifier refutes the claim of a stage that trained on it, at that step, with that reason
    parent = train_single_process(spec, 0).states[0]
    claim = claim_for(result.states[0], result.traces[0], WORKERS[0])
    verdict = replay_claim(spec, claim, parent, result.traces[0], signers=None, dataset=tiny_dataset).verdict
    assert (verdict.valid, verdict.step) == (False, CHEAT_STEP)
    assert verdict.reason.startswith(f"micro-batch {CHEAT_MB}: {reason}")


def test_the_last_stages_targets_are_checked_too(spec, tiny_dataset, monkeypatch):
    def wrong_targets(tokens, targets, source):
        return tokens, targets.roll(1, dims=1), source

    result = cheat_round(spec, tiny_dataset, monkeypatch, wrong_targets)
    assert check_data(result.traces[0], tiny_dataset, Batching.of(spec), targets=False) is None
    mismatch = check_data(result.traces[2], tiny_dataset, Batching.of(spec), targets=True)
    assert (mismatch.step, mismatch.reason[:54]) == (
        CHEAT_STEP,
        "micro-batch 1: its targets are not the data set's rows",
    )


def test_an_honest_claim_on_a_prepared_data_set_is_valid(spec, tiny_dataset, honest):
    parent = train_single_process(spec, 0).states[2]
    claim = claim_for(honest.states[2], honest.traces[2], WORKERS[2])
    signers = {"forward": {STAGES[1].address}, "backward": set()}
    verdict = replay_claim(
        spec, claim, parent, honest.traces[2], signers=signers, dataset=tiny_dataset
    ).verdict
    assert (verdict.valid, verdict.steps_checked) == (True, spec.round_steps)
    # no data set given: the shipped one the spec names, prepared privately
    assert replay_claim(spec, claim, parent, honest.traces[2], signers=None).verdict.valid


def test_a_data_set_that_cannot_be_read_leaves_the_claim_undecided(spec, tiny_dataset, honest, tmp_path):
    """Missing shards are the data set's fault, not the worker's: no verdict, so no challenge."""
    store = EmbeddedStore(tmp_path / "manifest-only", fsync=False)
    assert store.put(tiny_dataset.manifest.canonical_json()) == tiny_dataset.cid
    parent = train_single_process(spec, 0).states[0]
    claim = claim_for(honest.states[0], honest.traces[0], WORKERS[0])
    verdict = replay_claim(
        spec, claim, parent, honest.traces[0], signers=None, dataset=Dataset(store, tiny_dataset.cid)
    ).verdict
    assert verdict.valid is None and verdict.reason.startswith("cannot read the data set: block Qm")


def test_the_per_micro_batch_check_a_stage_runs_on_what_a_driver_sends(spec, tiny_dataset):
    """check_micro_batch: the rule both a verifier (check_data) and a stage worker (DataGate) apply."""
    at = (3, 1, 0)  # round, step, micro-batch
    rows = rows_at(
        tiny_dataset,
        "train",
        sample_source(tiny_dataset.manifest, tiny_dataset.cid, spec.seed, *at, 8, 64),
        64,
    )
    check_micro_batch(tiny_dataset, Batching.of(spec), at, rows.source, rows.tokens, rows.targets)
    check_micro_batch(tiny_dataset, Batching.of(spec), at, rows.source, rows.tokens)  # stage 0: no targets
    lies = {
        "its rows are not the data set's draw for this step": (
            (3, 1, 1),
            rows.source,
            rows.tokens,
            rows.targets,  # another micro-batch's rows
        ),
        "its token ids are not the data set's rows (first at row 2, position 5)": (
            at,
            rows.source,
            _changed(rows.tokens, 2, 5),
            None,
        ),
        "its targets are not the data set's rows (first at row 0, position 0)": (
            at,
            rows.source,
            rows.tokens,
            np.roll(rows.targets, 1, axis=1),
        ),
        "its token ids are not the data set's rows": (at, rows.source, rows.tokens[:, :-1], None),
    }
    for reason, (where, source, tokens, targets) in lies.items():
        with pytest.raises(NotTheData) as caught:
            check_micro_batch(tiny_dataset, Batching.of(spec), where, source, tokens, targets)
        assert caught.value.reason == reason
        assert caught.value.expected != caught.value.actual
    with pytest.raises(NotTheData, match="not the data set's draw"):
        check_micro_batch(tiny_dataset, Batching.of(spec), at, None, rows.tokens)  # a source is required


def _changed(ids: np.ndarray, row: int, position: int) -> np.ndarray:
    changed = ids.copy()
    changed[row, position] = (changed[row, position] + 1) % 512
    return changed
