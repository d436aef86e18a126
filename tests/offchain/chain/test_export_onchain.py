"""`pm model export --model ID`: someone holding every stage key turns the finalized, encrypted
checkpoints on-chain into a Hugging Face folder; with a stage key missing, nothing is written."""

import json
import random
import subprocess
import sys

import torch
from chain_testkit import REPO, anvil_account, join_stage, submit_and_finalize
from transformers import AutoModelForCausalLM

from offchain.chain.client import ChainClient
from offchain.chain.models import create_model
from offchain.chain.protocol import Protocol
from offchain.model.data import batch_for
from offchain.model.export import hf_model
from offchain.model.reference import train_single_process
from offchain.model.spec import load_spec
from offchain.proofs.manifest import ClaimManifest
from offchain.proofs.rounds import claim_input, publish_manifest, publish_round
from offchain.storage.crypto import StageKey
from offchain.storage.embedded import EmbeddedStore

SPEC = REPO / "specs" / "tiny.json"


def pm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offchain.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_holder_of_every_stage_key_exports_the_onchain_model(chain, tmp_path):
    url, deployments = chain
    creator = ChainClient(url, anvil_account(1))
    protocol = Protocol.load(creator, deployments)
    store = EmbeddedStore(tmp_path / "store")
    model_id = create_model(
        protocol, store, SPEC, shares_per_work_unit=1, revenue_asset="eth", operator=None
    ).model.model_id
    spec = load_spec(SPEC)
    keys = [StageKey.generate(model_id, stage) for stage in range(spec.num_stages)]
    key_files = []
    for stage, key in enumerate(keys):
        key_files.append(tmp_path / f"stage-key-model{model_id}-stage{stage}")
        key_files[-1].write_bytes(key.secret)
    random.Random(3).shuffle(key_files)  # any order: each stage takes the key that opens it
    common = ["--model", str(model_id), "--rpc-url", url, "--deployments", str(deployments)]
    common += ["--store", str(tmp_path / "store"), "--out", str(tmp_path / "hf")]
    keyed = [arg for file in key_files for arg in ("--stage-key", str(file))]

    early = pm("model", "export", *common, *keyed)
    assert early.returncode == 1
    assert early.stderr.strip() == f"stage 0 of model {model_id} has no finalized checkpoint yet"

    result = train_single_process(spec, 1, first_round=1, model_id=model_id)
    for stage in range(spec.num_stages):
        worker = ChainClient(url, anvil_account(2 + stage))
        ledger = join_stage(protocol, worker, model_id, stage)
        published = publish_round(store, keys[stage], result.states[stage], result.traces[stage])
        manifest = ClaimManifest(model_id, stage, None, (published.record(1),))
        submit_and_finalize(ledger, worker, claim_input(manifest, publish_manifest(store, manifest)))

    missing = pm("model", "export", *common, *keyed[:-2])
    assert missing.returncode == 1
    assert "none of the --stage-key files opens stage" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "hf").exists()

    done = pm("model", "export", *common, *keyed, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rounds"] == [1, 1, 1]
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens, _ = batch_for(spec, 4, 0, 0)
    with torch.no_grad():
        assert torch.equal(exported(tokens).logits, hf_model(spec, result.states)(tokens).logits)
