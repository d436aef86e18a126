"""A verifier that its input cannot stop (issue #13), as real `pm verifier run` processes on anvil:
claims whose trace misses a field or has one too many, whose trace is a UnixFS DAG bomb, whose
checkpoint does not decrypt under the stage key it names, whose manifest is not the claim, whose
trace nobody serves, and whose checkpoint is under
a key no member of the stage holds: each is challenged with the reason in its evidence (the last two
as Unavailable once the grace period is over: a key nobody grants is withheld like data); the
verifier is killed -9 and restarted, never judges a refused claim again, and judges an honest claim
valid. (A spec names its data set by CID: `pm model create` refuses one whose data set the store
does not hold, and a data set a validator cannot read leaves a claim undecided, never refuted: the
data is the spec's, not the worker's; tests/offchain/data/test_data_provenance.py.)"""

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
            "missing field": with_trace(reframed(trace.to_bytes(), lambda d: d.pop("profile"))),
            "extra field": with_trace(reframed(trace.to_bytes(), lambda d: d["records"][0].update(extra=1))),
            "dag bomb": replace(honest, trace_cid=bomb),
            "undecryptable": replace(honest, checkpoint_cid=undecryptable),
            "foreign key": replace(honest, checkpoint_cid=foreign),
            "manifest": honest,
            "withheld": replace(honest, trace_cid=unserved),
        }
        reasons = {
            "missing field": r"trace Qm\w+: malformed: profile: Field required",
            "extra field": r"trace Qm\w+: malformed: records\.0\.extra: unknown field",
            "dag bomb": rf"trace {bomb}: {bomb} is larger than the \d+-byte limit",
            "undecryptable": rf"checkpoint {undecryptable}: checkpoint ciphertext failed authentication",
            "foreign key": r"withheld past the grace period: no member of model \d+ stage 1 granted its key",
            "manifest": r"manifest Qm\w+: claim manifest is not in canonical form",
            "withheld": r"withheld past the grace period: block Qm\w+ not found",
        }
        spaced = {"manifest": lambda raw: raw.replace(b",", b", ")}
        claims = {
            name: net.claim(net.member(name, net.model_id, 1), [published], edit=spaced.get(name))
            for name, published in rounds.items()
        }
        withheld = ["withheld", "foreign key"]
        refused = [name for name in claims if name not in withheld]

        def challenged(names):
            def check():
                return all(net.events("ClaimChallenged", claims[name]) for name in names)

            check.__doc__ = f"challenges of {', '.join(names)}"
            return check

        verifier = net.verifier("verifier-1", VALIDATORS[0], 1)
        try:
            net.wait(challenged(refused), timeout=240, processes=(verifier,))
        finally:
            verifier.kill9()
        first_log = verifier.text()

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
