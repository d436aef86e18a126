"""A verifier that its input cannot stop (issue #13), as real `pm verifier run` processes on anvil:
claims whose trace misses a field or has one too many, whose trace is a UnixFS DAG bomb, whose
checkpoint does not decrypt under the stage key it names, whose manifest is not the claim, on a
model whose spec names an unknown data set, whose trace nobody serves, and whose checkpoint is under
a key no member of the stage holds: each is challenged with the reason in its evidence (the last two
as Unavailable once the grace period is over: a key nobody grants is withheld like data); the
verifier is killed -9 and restarted, never judges a refused claim again, and judges an honest claim
valid."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from chain_testkit import REPO, advance_time
from stage_members import serving_stage_keys
from verifier_kit import VALIDATORS, WORKERS, Network, seed_states

from offchain.chain.protocol import ChallengeKind
from offchain.chain.status import cid_of
from offchain.storage.crypto import StageKey, encrypt_checkpoint
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.unixfs import KUBO_DEFAULT
from tests.offchain.storage.bombs import dag_bomb
from tests.offchain.verifier.rounds_kit import reframed


@pytest.mark.slow
def test_malformed_claims_are_challenged_with_a_reason_and_judging_goes_on(chain, tmp_path):
    url, deployments = chain
    net = Network(url, deployments, REPO / "specs" / "tiny.json", tmp_path)
    spec = json.loads((REPO / "specs" / "tiny.json").read_text())
    (tmp_path / "nowhere.json").write_text(
        json.dumps({**spec, "dataset": {"name": "nowhere", "sha256": "00" * 32}})
    )
    nowhere = net.create_model(tmp_path / "nowhere.json")
    with serving_stage_keys(net.protocol, net.spec, net.model_id, WORKERS, net.keys) as maddr:
        net.maddr = maddr
        key = net.keys[1]
        seeds = seed_states(net.spec)
        first = net.train(1, seeds)
        state, trace = first.states[1], first.traces[1]
        honest = net.publish(1, seeds[1], state, trace)

        def with_trace(blob: bytes):
            return replace(honest, trace_cid=net.store.put(encrypt_checkpoint(key, blob)))

        bomb = dag_bomb(net.store, levels=3, leaf=b"\x01" * KUBO_DEFAULT.chunk_size)
        altered = encrypt_checkpoint(key, state)
        altered[-1] ^= 1  # the authentication tag no longer matches
        undecryptable = net.store.put(altered)
        foreign = net.store.put(encrypt_checkpoint(StageKey(net.model_id, 1, b"\x09" * 32), state))
        unserved = EmbeddedStore(tmp_path / "elsewhere").put(b"a trace nobody will ever serve")
        rounds = {
            "missing field": with_trace(reframed(trace.to_bytes(), lambda d: d.pop("threads"))),
            "extra field": with_trace(reframed(trace.to_bytes(), lambda d: d["records"][0].update(extra=1))),
            "dag bomb": replace(honest, trace_cid=bomb),
            "undecryptable": replace(honest, checkpoint_cid=undecryptable),
            "foreign key": replace(honest, checkpoint_cid=foreign),
            "manifest": honest,
            "withheld": replace(honest, trace_cid=unserved),
        }
        reasons = {
            "missing field": r"trace Qm\w+: malformed: threads: Field required",
            "extra field": r"trace Qm\w+: malformed: records\.0\.extra: unknown field",
            "dag bomb": rf"trace {bomb}: {bomb} is larger than the \d+-byte limit",
            "undecryptable": rf"checkpoint {undecryptable}: checkpoint ciphertext failed authentication",
            "foreign key": r"withheld past the grace period: no member of model \d+ stage 1 granted its key",
            "manifest": r"manifest Qm\w+: claim manifest is not in canonical form",
            "unknown dataset": r"model spec Qm\w+: dataset 'nowhere' not found",
            "withheld": r"withheld past the grace period: block Qm\w+ not found",
        }
        spaced = {"manifest": lambda raw: raw.replace(b",", b", ")}
        claims = {
            name: net.claim(net.member(name, net.model_id, 1), [published], edit=spaced.get(name))
            for name, published in rounds.items()
        }
        stage_0 = net.publish(0, seeds[0], first.states[0], first.traces[0])
        claims["unknown dataset"] = net.claim(net.member("nowhere", nowhere, 0), [stage_0], model_id=nowhere)
        withheld = ["withheld", "foreign key"]
        refused = [name for name in claims if name not in withheld]

        def challenged(names):
            def check():
                return all(net.events("ClaimChallenged", claims[name]) for name in names)

            check.__doc__ = f"challenges of {', '.join(names)}"
            return check

        verifier = net.verifier("verifier-1", VALIDATORS[0], 1)
        # Its own key: two processes sending from one account race for nonces ("nonce too low").
        other_model = net.verifier("verifier-nowhere", VALIDATORS[1], 0, model_id=nowhere)
        try:
            net.wait(challenged(refused), timeout=240, processes=(verifier, other_model))
        finally:
            verifier.kill9()
            other_model.stop()
        first_log = verifier.text() + other_model.text()

        restarted = net.verifier("verifier-2", VALIDATORS[0], 1)
        try:
            restarted.wait_for("watching claims")
            valid = net.claim(net.workers[1], [honest])
            advance_time(net.reader, net.params["availabilityGrace"] + 1)
            net.wait(challenged(withheld), processes=(restarted,))
            pattern = rf"verdict claim={valid} model={net.model_id} stage=1 rounds=1 result=valid"
            net.wait(lambda: re.search(pattern, restarted.text()), timeout=180, processes=(restarted,))
        finally:
            restarted.stop()
        second_log = restarted.text()

    for name, claim_id in claims.items():
        (event,) = net.events("ClaimChallenged", claim_id)
        line = re.search(rf"verdict claim={claim_id} .*", first_log + second_log).group(0)
        assert "result=INVALID" in line and re.search(reasons[name], line), (name, line)
        if name in withheld:
            assert event["kind"] == ChallengeKind.UNAVAILABLE
            continue
        assert (event["kind"], event["round"], event["stepIndex"]) == (ChallengeKind.DIVERGENCE, 1, 0)
        verdict = json.loads(net.store.get(cid_of(event["evidenceCID"])))["verdict"]
        assert verdict["valid"] is False and re.search(reasons[name], verdict["reason"]), (name, verdict)
    for claim_id in (claims[name] for name in refused):
        assert f"verdict claim={claim_id} " not in second_log  # journaled: never judged again
    for log in (first_log, second_log):
        assert "Traceback" not in log and "verifier error" not in log
    assert net.events("ClaimChallenged", valid) == []
