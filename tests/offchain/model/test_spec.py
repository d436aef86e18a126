"""A spec is refused with one line naming the field when it is malformed."""

import itertools
import json

import pytest

from offchain.errors import UserError
from offchain.model.spec import load_spec, parse_spec
from offchain.storage.embedded import EmbeddedStore


def test_shipped_specs_load(tiny):
    assert tiny.num_stages == 3
    assert tiny.digest() == parse_spec(tiny.model_dump(mode="json")).digest()


def test_digest_changes_with_any_field(tiny, tiny_data):
    tiny_data["seed"] += 1
    assert parse_spec(tiny_data).digest() != tiny.digest()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning_rate": 1}, "learning_rate: unknown field"),
        ({"optimizer": {"lr": 0.1, "momentum": 0.9}}, "optimizer.momentum: unknown field"),
        ({"stages": [[0, 2], [1, 3]]}, "stage 1 range [1, 3) overlaps layers below 2"),
        ({"stages": [[0, 1], [2, 3]]}, "layers 1..1 belong to no stage (gap before stage 1)"),
        ({"stages": [[0, 1], [1, 2]]}, "stages cover layers 0..1 but num_hidden_layers=3"),
        ({"stages": [[0, 3], [3, 3]]}, "stage 1 range [3, 3) is empty or reversed"),
        ({"config.num_attention_heads": 5}, "config: num_attention_heads=5 does not divide hidden_size=64"),
        (
            {"config.num_key_value_heads": 3},
            "config: num_key_value_heads=3 does not divide num_attention_heads=4",
        ),
        ({"config.num_attention_heads": 64, "config.num_key_value_heads": 1}, "must be even (RoPE)"),
        ({"config.tie_word_embeddings": True}, "embedding and head live on different stages"),
        ({"config.hidden_act": "gelu"}, "config.hidden_act"),
        ({"config.rope_scaling": {"factor": 2}}, "config.rope_scaling: unknown field"),
        ({"context": 128}, "context=128 exceeds config.max_position_embeddings=64"),
        ({"tokenizer_cid": None}, "tokenizer_cid: Input should be a valid string"),
        ({"manifest_cid": "not-a-cid"}, "manifest_cid: String should match pattern"),
        ({"dataset": {"name": "pydoc"}}, "dataset: unknown field"),
        ({"family": "gpt2"}, "family: Input should be 'llama'"),
        ({"profile": {"device": "tpu"}}, "profile.device"),
        ({"profile": {"dtype": "fp16"}}, "profile.dtype"),
        ({"profile": {"threads": 0}}, "profile.threads"),
        ({"codec": {"name": "subspace"}}, "codec 'subspace' needs k"),
        ({"codec": {"name": "subspace", "k": 65}}, "codec k=65 exceeds hidden_size=64"),
        ({"codec": {"name": "dense", "block_size": 64}}, "takes no block_size"),
        ({"codec": {"name": "subspace", "k": 8, "block_size": 64}}, "takes no block_size"),
        ({"codec": {"name": "int8", "coordinates": "fp16"}}, "takes no coordinates"),
        ({"codec": {"name": "zip"}}, "codec.name"),
        ({"config.hidden_size": -1}, "config.hidden_size: Input should be greater than 0"),
        (
            {"optimizer": {"lr": 0.1, "schedule": {"warmup_steps": 10, "decay_steps": 10}}},
            "optimizer.schedule: decay_steps=10 must be above warmup_steps=10",
        ),
        ({"optimizer": {"lr": 0.1, "schedule": {"min_lr_ratio": 1.5}}}, "optimizer.schedule.min_lr_ratio"),
        ({"optimizer": {"lr": 0.1, "schedule": {"warmup_steps": -1}}}, "optimizer.schedule.warmup_steps"),
        (
            {"optimizer": {"lr": 0.1, "schedule": {"kind": "cosine"}}},
            "optimizer.schedule.kind: unknown field",
        ),
    ],
)
def test_bad_spec_is_one_clear_error(tiny_data, change, message):
    for key, value in change.items():
        if key.startswith("config."):
            tiny_data["config"][key.removeprefix("config.")] = value
        else:
            tiny_data[key] = value
    with pytest.raises(UserError) as error:
        parse_spec(tiny_data, "bad.json")
    text = str(error.value)
    assert text.startswith("invalid model spec bad.json: ")
    assert message in text
    assert "\n" not in text


def test_the_vocabulary_must_be_the_tokenizers(tiny):
    tiny.check_tokenizer_vocab(512)
    with pytest.raises(
        UserError, match=r"^invalid model spec: config\.vocab_size=512, the tokenizer has 300 tokens$"
    ):
        tiny.check_tokenizer_vocab(300)


def test_spec_cid_is_what_the_store_gives_its_canonical_json(tiny, tmp_path):
    assert EmbeddedStore(tmp_path).put(tiny.canonical_json()) == tiny.cid()


def test_load_spec_file_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_spec(broken)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1, 2]))
    with pytest.raises(UserError, match="must be a JSON object"):
        load_spec(listed)


def test_stage_index_out_of_range(tiny):
    with pytest.raises(UserError, match=r"stage 3 out of range: the spec has stages 0\.\.2"):
        tiny.check_stage(3)


def test_the_rate_schedule_is_a_function_of_round_and_step(tiny_data):
    schedule = {"warmup_steps": 4, "decay_steps": 12, "min_lr_ratio": 0.25}
    spec = parse_spec(
        {**tiny_data, "optimizer": {**tiny_data["optimizer"], "lr": 0.004, "schedule": schedule}}
    )
    assert spec.round_steps == 4
    rates = [spec.learning_rate(*spec.round_and_step(t)) for t in range(16)]
    assert spec.round_and_step(0) == (1, 0)  # round 1 is the first a network trains
    assert spec.learning_rate(0, 3) == spec.learning_rate(1, 3)  # an off-chain round 0: round 1's rates
    assert rates[:4] == [0.001, 0.002, 0.003, 0.004]  # warmup, then peak
    assert rates[4] == 0.004 and rates[8] == 0.0025  # linear decay from step 4 ...
    assert rates[12:] == [0.001] * 4  # ... to 0.25 * lr at step 12, constant after
    assert all(a >= b for a, b in itertools.pairwise(rates[4:]))
    plain = parse_spec(tiny_data)
    assert {plain.learning_rate(r, s) for r in range(3) for s in range(4)} == {plain.optimizer.lr}


def test_a_spec_without_schedule_keeps_its_canonical_bytes(tiny, tiny_data):
    """Specs written before `optimizer.schedule` existed keep their CID (on-chain, in checkpoints)."""
    assert b"schedule" not in tiny.canonical_json()
    assert json.loads(tiny.canonical_json())["optimizer"] == {**tiny_data["optimizer"], "betas": [0.9, 0.95]}
    scheduled = parse_spec(
        {**tiny_data, "optimizer": {**tiny_data["optimizer"], "schedule": {"warmup_steps": 2}}}
    )
    assert json.loads(scheduled.canonical_json())["optimizer"]["schedule"] == {
        "warmup_steps": 2,
        "decay_steps": None,
        "min_lr_ratio": 0.1,
    }
    assert parse_spec(json.loads(scheduled.canonical_json())).cid() == scheduled.cid() != tiny.cid()
