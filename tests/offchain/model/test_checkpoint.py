"""Stage checkpoints: canonical safetensors (same state -> same bytes, in any process), readable
by the safetensors library, refused when they are another stage's, pinned by a golden vector."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load

from offchain.model.checkpoint import CheckpointError, average_state_bytes, decode_safetensors
from offchain.model.reference import train_single_process
from offchain.model.spec import parse_spec
from offchain.model.trainer import StageTrainer

GOLDEN = Path(__file__).parent / "golden" / "stage-checkpoint.safetensors"
# A 3-layer Llama of hidden size 4: stage 1 is one decoder layer, 152 weights.
MICRO = {
    "name": "micro",
    "config": {
        "vocab_size": 512,
        "hidden_size": 4,
        "intermediate_size": 8,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 8,
    },
    "stages": [[0, 1], [1, 2], [2, 3]],
    "context": 8,
    "tokenizer_cid": "QmeB8ALKZ1KjzQ6yNF6GoXFvdTdX47BWfi74qrUYEWAXNu",
    "manifest_cid": "QmVXchr8Mj5LQuY5AoRsYYCrUGcf2eeW2b6ZHzxdc5mpYR",
    "optimizer": {"lr": 0.001},
    "round_steps": 1,
    "micro_batches": 1,
    "micro_batch_size": 1,
    "seed": 7,
}


def _golden_state() -> bytes:
    """Stage 1 of MICRO with weights, moments and step set to fixed values (no training numerics:
    the vector pins the byte format, not a torch version's kernels)."""
    trainer = StageTrainer(parse_spec(MICRO), 1)
    params = dict(trainer.module.named_parameters())
    with torch.no_grad():
        for index, name in enumerate(sorted(params)):
            param = params[name]
            param.copy_(torch.arange(param.numel(), dtype=torch.float32).view(param.shape) / 8 + index)
            trainer.optimizer.state[param] = {
                "step": torch.tensor(3.0),
                "exp_avg": torch.full_like(param, -0.5 * index),
                "exp_avg_sq": torch.full_like(param, 0.25),
            }
    return trainer.state_bytes()


def test_golden_checkpoint_bytes():
    """A change to the checkpoint format changes digests already on-chain: it must be deliberate
    (regenerate with `python tests/offchain/model/test_checkpoint.py`)."""
    state = _golden_state()
    golden = GOLDEN.read_bytes()
    length = int.from_bytes(golden[:8], "little")
    assert state[: 8 + length].decode(errors="replace") == golden[: 8 + length].decode(errors="replace")
    assert state == golden
    trainer = StageTrainer(parse_spec(MICRO), 1, state=golden)
    assert trainer.state_bytes() == golden


def test_checkpoint_is_standard_safetensors(tiny, tmp_path):
    result = train_single_process(tiny, rounds=1)
    path = tmp_path / "stage1.safetensors"
    path.write_bytes(result.states[1])
    with safe_open(str(path), framework="pt") as reader:
        metadata = reader.metadata()
        names = set(reader.keys())
    assert metadata == {
        "format": "pt",
        "checkpoint": "protocol-models/stage-checkpoint/1",
        "spec": tiny.cid(),
        "stage": "1",
        "step": str(tiny.round_steps),
    }
    weights = {name for name in names if not name.startswith("optimizer.")}
    assert weights == {name for name, _ in StageTrainer(tiny, 1).module.named_parameters()}
    assert names == weights | {f"optimizer.{m}.{name}" for m in ("exp_avg", "exp_avg_sq") for name in weights}
    tensors = load(result.states[1])
    trainer = StageTrainer(tiny, 1, state=result.states[1])
    for name, param in trainer.module.named_parameters():
        assert torch.equal(tensors[name], param)
        assert torch.equal(tensors[f"optimizer.exp_avg.{name}"], trainer.optimizer.state[param]["exp_avg"])


_SAVE = """
import hashlib, sys
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
result = train_single_process(load_spec(sys.argv[1]), rounds=1)
print(" ".join(hashlib.sha256(state).hexdigest() for state in result.states))
"""


def test_same_state_same_bytes_twice_and_in_another_process(tiny):
    result = train_single_process(tiny, rounds=1)
    for stage, state in enumerate(result.states):
        trainer = StageTrainer(tiny, stage, state=state)
        assert trainer.state_bytes() == trainer.state_bytes() == state
    spec_file = Path(__file__).resolve().parents[3] / "specs" / "tiny.json"
    digests = subprocess.run(
        [sys.executable, "-c", _SAVE, str(spec_file)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert digests == [hashlib.sha256(state).hexdigest() for state in result.states]


def test_foreign_or_malformed_checkpoints_are_refused(tiny, tiny_data):
    state = train_single_process(tiny, rounds=0).states[1]
    with pytest.raises(CheckpointError, match="checkpoint of stage 1, this is stage 2"):
        StageTrainer(tiny, 2, state=state)
    other = parse_spec({**tiny_data, "seed": 99})
    with pytest.raises(CheckpointError, match=f"checkpoint of spec {tiny.cid()}, this stage trains spec"):
        StageTrainer(other, 1, state=state)
    for broken, message in [
        (b"", "shorter than its header length"),
        (state[:-4], "bytes after the last tensor|do not tile"),
        (state + b"\0" * 4, "4 bytes after the last tensor"),
        ((2**40).to_bytes(8, "little") + state[8:], "header runs past the end"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            StageTrainer(tiny, 1, state=broken)
    metadata, _ = decode_safetensors(state)
    assert json.loads(json.dumps(metadata)) == metadata


def test_average_of_one_replica_is_itself(tiny):
    state = train_single_process(tiny, rounds=1).states[0]
    assert average_state_bytes([state]) == state
    with pytest.raises(CheckpointError, match="differ in layout, spec or optimizer step"):
        average_state_bytes([state, train_single_process(tiny, rounds=0).states[0]])


if __name__ == "__main__":
    GOLDEN.write_bytes(_golden_state())
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
