"""Compute profiles: applied in one place, hashed into every trace, refused where they cannot
run, and bitwise under replay for fp32 and bf16 on the CPU."""

import pytest
import torch

from offchain.errors import UserError
from offchain.model.profile import ComputeProfile, apply_profile, can_run
from offchain.model.reference import train_single_process
from offchain.model.spec import parse_spec
from offchain.model.trainer import StageTrainer
from offchain.proofs.replay import replay_round


def test_digest_covers_every_field():
    base = ComputeProfile()
    changes = {
        "device": "cuda",
        "dtype": "bf16",
        "threads": 2,
        "attention": "flash",
        "cublas_workspace": ":16:8",
    }
    digests = {base.model_copy(update={key: value}).digest() for key, value in changes.items()}
    assert len(digests | {base.digest()}) == len(changes) + 1


def test_apply_profile_sets_every_switch():
    apply_profile(ComputeProfile(threads=2, attention="flash"))
    assert torch.get_num_threads() == 2
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert not torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    assert torch.backends.cuda.flash_sdp_enabled() and not torch.backends.cuda.math_sdp_enabled()
    apply_profile(ComputeProfile())
    assert torch.get_num_threads() == 1
    assert torch.backends.cuda.math_sdp_enabled() and not torch.backends.cuda.flash_sdp_enabled()


def test_a_profile_this_machine_cannot_run_is_refused_in_one_line(tiny_data):
    assert can_run(ComputeProfile()) == (True, "ok")
    assert can_run(ComputeProfile(attention="efficient")) == (
        False,
        "the profile's attention backend 'efficient' runs only on CUDA",
    )
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    runnable, reason = can_run(ComputeProfile(device="cuda"))
    assert not runnable
    assert reason == "the profile needs a CUDA device and this machine has none"
    spec = parse_spec({**tiny_data, "profile": {"device": "cuda"}})
    with pytest.raises(UserError, match=f"cannot train or replay spec 'tiny' on this machine: {reason}"):
        StageTrainer(spec, 0)


@pytest.mark.parametrize(
    "profile",
    [
        {"dtype": "fp32", "threads": 1, "attention": "flash"},
        {"dtype": "bf16", "threads": 1, "attention": "flash"},
        {"dtype": "fp32", "threads": 2, "attention": "math"},
    ],
    ids=["fp32-flash", "bf16-flash", "fp32-2threads-math"],
)
def test_rounds_replay_bitwise_under_the_profile(tiny_data, profile):
    spec = parse_spec({**tiny_data, "profile": profile})
    parents = train_single_process(spec, 1).states
    first = train_single_process(spec, 1, first_round=1, states=parents)
    again = train_single_process(spec, 1, first_round=1, states=parents)
    assert first.state_digests == again.state_digests
    assert first.losses == again.losses
    for stage, trace in enumerate(first.traces):
        assert trace.profile == spec.profile.digest()
        report = replay_round(spec, stage, parents[stage], trace, require_signatures=False)
        assert report.ok, report
        assert report.state == first.states[stage]


def test_bf16_autocast_keeps_fp32_master_state(tiny_data):
    fp32 = parse_spec(tiny_data)
    bf16 = parse_spec({**tiny_data, "profile": {"dtype": "bf16"}})
    a, b = train_single_process(fp32, 1), train_single_process(bf16, 1)
    assert a.losses != b.losses  # the forward really ran in bf16
    assert abs(a.losses[-1] - b.losses[-1]) < 0.1
    trainer = StageTrainer(bf16, 1, state=b.states[1])
    assert {p.dtype for p in trainer.module.parameters()} == {torch.float32}
    assert {s["exp_avg"].dtype for s in trainer.optimizer.state.values()} == {torch.float32}
