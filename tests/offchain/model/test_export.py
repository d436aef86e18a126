"""`pm model export` (off-chain: a spec and the workers' state folder) writes a folder that
transformers loads as LlamaForCausalLM + PreTrainedTokenizerFast, with the pipeline's logits."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from offchain.creator.commands import model_export
from offchain.errors import UserError
from offchain.model.chat import ChatTemplate, Message
from offchain.model.data import batch_for
from offchain.model.reference import train_single_process
from offchain.model.tokens import encode_tokens, shipped_tokenizer
from offchain.model.trainer import StageTrainer
from offchain.swarm.server import RoundState, StateFile

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "specs" / "tiny.json"


def pm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offchain.cli", *args], capture_output=True, text=True, timeout=300, cwd=REPO
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Round 2 of tiny, committed to a state folder the way off-chain workers leave it."""
    from offchain.model.spec import load_spec

    spec = load_spec(TINY)
    result = train_single_process(spec, rounds=2)
    state_dir = tmp_path_factory.mktemp("state")
    for stage, state in enumerate(result.states):
        StateFile(state_dir, spec, 0, stage).save(RoundState(2, state))
    return spec, result, state_dir


def test_export_loads_in_transformers_with_the_pipelines_logits(trained, tmp_path):
    spec, result, state_dir = trained
    out = tmp_path / "hf"
    done = pm(
        "model",
        "export",
        "--model-spec",
        str(TINY),
        "--state-dir",
        str(state_dir),
        "--out",
        str(out),
        "--json",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["rounds"] == [2, 2, 2] and record["spec_cid"] == spec.cid()
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(record["files"])

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    tokens, _ = batch_for(spec, 9, 0, 0)
    trainers = [StageTrainer(spec, stage, state=state) for stage, state in enumerate(result.states)]
    activation = b""
    for trainer in trainers:
        activation = trainer.forward_only(activation, encode_tokens(tokens, spec))
    pipeline = torch.frombuffer(bytearray(activation), dtype=torch.float32).view(*tokens.shape, -1)
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, pipeline)

    prompt = "The assert statement"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == shipped_tokenizer(spec).encode(prompt).ids
    generated = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 5)
    assert tokenizer.decode(generated[0]).startswith(prompt)
    chat = [Message(role="user", content="hello")]
    assert tokenizer.apply_chat_template([m.model_dump() for m in chat], add_generation_prompt=True)[
        "input_ids"
    ] == ChatTemplate(shipped_tokenizer(spec)).prompt_ids(chat)


def test_export_mistakes_are_one_line_and_write_nothing(trained, tmp_path):
    _, _, state_dir = trained
    out = tmp_path / "hf"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("x")
    done = pm("model", "export", "--out", str(out))
    assert done.returncode == 1
    assert (
        done.stderr.strip() == "pass exactly one of --model ID (on-chain) and --model-spec FILE (off-chain)"
    )
    cases = [
        ({"model_spec": TINY, "state_dir": tmp_path, "out": out}, "no stage 0 state in"),
        ({"model_spec": TINY, "out": out}, "--model-spec needs --state-dir"),
        (
            {"model_spec": TINY, "state_dir": state_dir, "out": busy},
            "is not an empty folder",
        ),
    ]
    for args, message in cases:
        with pytest.raises(UserError, match=re.escape(message)):
            model_export(**{"store": tmp_path / "store", **args})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["busy", "store"]
    assert [path.name for path in busy.iterdir()] == ["mine.txt"]
