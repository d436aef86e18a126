"""`pm model create` / `pm model show` against a protocol deployed by scripts/deploy.py on anvil."""

import json
import os
import subprocess
import sys

import pytest
from chain_testkit import REPO, anvil_account

from offchain.chain.client import ChainClient
from offchain.chain.models import fetch_spec
from offchain.chain.protocol import Protocol
from offchain.model.spec import load_spec
from offchain.storage.embedded import EmbeddedStore

TINY = REPO / "specs" / "tiny.json"


def pm(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "offchain.cli", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture
def env(chain, tmp_path):
    url, deployments = chain
    return {
        **os.environ,
        "PM_RPC_URL": url,
        "PM_DEPLOYMENTS": str(deployments),
        "PM_STORE": str(tmp_path / "store"),
        "PM_PRIVATE_KEY": anvil_account(1).key.hex(),
    }


def model_count(env) -> int:
    protocol = Protocol.load(ChainClient(env["PM_RPC_URL"]), REPO / env["PM_DEPLOYMENTS"])
    return protocol.registry.functions.modelCount().call()


def test_create_pins_the_canonical_spec_and_registers_the_model(env, tmp_path):
    result = pm("model", "create", "--spec", str(TINY), "--json", env=env)
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    spec = load_spec(TINY)
    assert created["model_id"] == 1
    assert created["num_stages"] == spec.num_stages == 3
    assert created["creator"] == created["operator"] == anvil_account(1).address
    assert created["revenue_asset"] == "0x0000000000000000000000000000000000000000"
    assert created["spec_digest"] == spec.digest()
    stored = EmbeddedStore(tmp_path / "store")
    assert stored.get(created["spec_cid"]) == spec.canonical_json()
    assert fetch_spec(stored, created["spec_cid"]) == spec

    shown = pm("model", "show", "--model", "1", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {key: created[key] for key in json.loads(shown.stdout)}


def test_invalid_spec_is_one_line_and_sends_nothing(env, tmp_path):
    bad = tmp_path / "bad.json"
    tiny = json.loads(TINY.read_text())
    for config, message in [
        ({"num_attention_heads": 5}, "invalid model spec"),
        ({"vocab_size": 500}, "the spec's vocab_size 500 is not the tokenizer's 512"),
    ]:
        bad.write_text(json.dumps({**tiny, "config": {**tiny["config"], **config}}))
        result = pm("model", "create", "--spec", str(bad), env=env)
        assert result.returncode == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert message in result.stderr and "Traceback" not in result.stderr
    assert model_count(env) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model", "show", "--model", "7"], "unknown model id 7 (this chain has 0 models)"),
        (
            ["model", "create", "--spec", str(TINY), "--revenue-asset", "0x1234"],
            "--revenue-asset: '0x1234' is not",
        ),
        (["model", "create", "--spec", "missing.json"], "model spec missing.json not found"),
    ],
)
def test_bad_input_is_one_clear_line(env, args, message):
    result = pm(*args, env=env)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_rpc_url_that_is_not_a_node_is_refused(env):
    result = pm("model", "show", "--model", "1", "--rpc-url", "http://127.0.0.1:9", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == "cannot reach the RPC URL http://127.0.0.1:9"
