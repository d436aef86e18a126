"""KV-cached serving: the same tokens as uncached forward passes of transformers' LlamaForCausalLM,
the same numbers alone or batched with other requests, text streamed without broken characters or
stop sequences, chat prompts through the template."""

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from offchain.errors import UserError
from offchain.model.chat import ChatTemplate, Message
from offchain.model.export import hf_model
from offchain.model.generate import LocalPipeline, Sampling, TextStream, complete, pick
from offchain.model.kv import RequestCache, ServingStage, Step
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.model.tokens import shipped_tokenizer

SPECS = Path(__file__).resolve().parents[3] / "specs"
TOKENIZER = shipped_tokenizer(load_spec(SPECS / "tiny.json"))
PROMPTS = ["The assert statement", "def f(x):", "The", "import os\n", "a" * 30, "Class"]


@pytest.fixture(scope="module")
def trained():
    spec = load_spec(SPECS / "tiny.json")
    return spec, train_single_process(spec, 2).states


@pytest.mark.parametrize(
    "sampling", [Sampling(24), Sampling(24, temperature=0.9, top_k=50, top_p=0.95, seed=3)]
)
def test_cached_generation_equals_uncached_forward_passes_of_llama_for_causal_lm(trained, sampling):
    spec, states = trained
    ids = TOKENIZER.encode(PROMPTS[0]).ids
    cached = asyncio.run(complete(LocalPipeline(spec, states, [2, 2, 2]), TOKENIZER, ids, sampling))

    model = hf_model(spec, states).eval()
    rng, sequence, worst = np.random.default_rng(sampling.seed), list(ids), 0.0
    cached_logits = asyncio.run(_logits_along(LocalPipeline(spec, states, [2, 2, 2]), ids, cached.token_ids))
    for step in range(sampling.max_tokens):
        with torch.no_grad():
            logits = model(torch.tensor([sequence])).logits[0, -1].numpy()
        worst = max(worst, float(np.abs(logits - cached_logits[step]).max()))
        sequence.append(pick(logits, sampling, rng))
    assert sequence[len(ids) :] == cached.token_ids
    assert len(set(cached.token_ids)) > 1 or sampling.temperature == 0
    assert worst < 1e-4


async def _logits_along(pipeline, prompt, tokens):
    async with pipeline.session() as session:
        out = [await session.step(prompt)]
        for token in tokens[:-1]:
            out.append(await session.step([token]))
    return out


def test_a_request_gets_the_same_numbers_alone_or_batched(trained):
    """Six sessions step together through one pipeline (prompts of different lengths, so caches of
    different lengths share passes): every logit bitwise equal to the session run alone, in fewer
    passes than steps."""
    spec, states = trained

    async def run(pipeline, prompt):
        async with pipeline.session() as session:
            logits = [await session.step(TOKENIZER.encode(prompt).ids)]
            for _ in range(8):
                logits.append(await session.step([int(np.argmax(logits[-1]))]))
        return logits

    alone = [asyncio.run(run(LocalPipeline(spec, states, [2, 2, 2]), prompt)) for prompt in PROMPTS]
    shared = LocalPipeline(spec, states, [2, 2, 2])

    async def together():
        return await asyncio.gather(*(run(shared, prompt) for prompt in PROMPTS))

    batched = asyncio.run(together())
    for solo, joint in zip(alone, batched, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(solo, joint, strict=True))
    stats = shared.queues[0].stats
    assert stats.steps == len(PROMPTS) * 9 and stats.passes < stats.steps / 2


def test_a_stage_refuses_to_grow_a_cache_beyond_the_context(trained):
    spec, states = trained
    stage = ServingStage(spec, 0, states[0])
    cache = RequestCache()
    stage.run([Step(cache, torch.zeros(spec.context - 1, dtype=torch.long))])
    stage.run([Step(cache, torch.zeros(1, dtype=torch.long))])
    assert cache.length == spec.context and cache.nbytes > 0
    with pytest.raises(ValueError, match="context is 64"):
        stage.run([Step(cache, torch.zeros(1, dtype=torch.long))])


def _small_bpe() -> Tokenizer:
    """A byte-level BPE that never saw "é" nor capitals: each is spelled in byte tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|bos|>", "<|eos|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(["hello there, how are you?", "fine thanks"] * 20, trainer)
    return bpe


def test_text_stream_never_splits_a_character_nor_shows_a_stop_sequence():
    bpe = _small_bpe()
    ids = bpe.encode("né END x").ids  # é is two byte tokens
    stream = TextStream(bpe, stop=("END",))
    pieces = [stream.push(token) for token in ids[:7]]
    # The last 2 characters wait (they may start "END"), half an "é" waits for its other byte.
    assert pieces == ["", "", "", "n", "é", " ", ""] and stream.stopped
    assert stream.shown == "né " and stream.flush() == ""
    plain = TextStream(TOKENIZER, stop=("END",))
    assert "".join(plain.push(token) for token in TOKENIZER.encode("no E").ids) + plain.flush() == "no E"


def test_chat_prompts_use_the_template_and_need_a_user_turn():
    bpe = _small_bpe()
    chat = [Message(role="system", content="Be brief."), Message(role="user", content="hello")]
    ids = ChatTemplate(bpe).prompt_ids(chat)
    bos, eos = bpe.token_to_id("<|bos|>"), bpe.token_to_id("<|eos|>")
    assert ids[0] == bos and ids.count(eos) == 2
    assert bpe.decode(ids, skip_special_tokens=False).endswith("<|eos|>\n<|assistant|>\n")
    bos, eos = TOKENIZER.token_to_id("<|bos|>"), TOKENIZER.token_to_id("<|eos|>")
    assert ChatTemplate(TOKENIZER).prompt_ids(chat[1:]) == [
        bos,
        *TOKENIZER.encode("<|user|>\nhello").ids,
        eos,
        *TOKENIZER.encode("\n<|assistant|>\n").ids,
    ]
    with pytest.raises(UserError, match="at least one message with role 'user'"):
        ChatTemplate(TOKENIZER).prompt_ids(chat[:1])
