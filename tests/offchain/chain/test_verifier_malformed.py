"""A verifier that its input cannot stop (issue #13), as a real `pm verifier run` on anvil: claims whose
trace misses a field or has one too many, whose trace is a UnixFS DAG bomb, whose checkpoint is
encrypted under another key, on a model whose spec names an unknown data set or a stage over the
size limits, and whose trace nobody serves: each is challenged with the reason in its evidence; the
verifier is killed -9 and restarted, judges an honest claim valid, challenges the withheld one once
the grace period is over, and never judges a refused claim twice."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from chain_testkit import REPO, advance_time
from stage_members import serving_stage_keys
from verifier_kit import VALIDATORS, WORKERS, Network, seed_states

from offchain.chain.models import create_model
from offchain.proofs.rounds import PublishedRound, publish_round
from offchain.storage.crypto import StageKey, encrypt_checkpoint
from offchain.storage.embedded import EmbeddedStore
from offchain.storage.unixfs import KUBO_DEFAULT
from tests.offchain.storage.bombs import dag_bomb
from tests.offchain.verifier.rounds_kit import reframed

WINDOW = 900
"""Long enough that real time never closes it; the grace period (2/3 of it) is skipped on the chain."""


def _other_model(net: Network, tmp_path, name: str, **changes) -> int:
    spec = {**json.loads((REPO / "specs" / "tiny.json").read_text()), **changes}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    created = create_model(
        net.protocol, net.store, path, shares_per_work_unit=1, revenue_asset="eth", operator=None
    )
    return created.model.model_id


@pytest.mark.slow
def test_malformed_claims_are_challenged_with_a_reason_and_judging_goes_on(chain, tmp_path):
    url, deployments = chain
    net = Network(url, deployments, REPO / "specs" / "tiny.json", tmp_path, {"challengeWindow": WINDOW})
    with serving_stage_keys(net.protocol, net.spec, net.model_id, WORKERS, net.keys) as maddr:
        net.maddr = maddr
        key = net.keys[1]
        seeds = seed_states(net.spec)
        first = net.train(1, seeds)
        state, trace = first.states[1], first.traces[1]
        honest = publish_round(net.store, key, state, trace, parent_cid="")

        def with_trace(blob: bytes) -> PublishedRound:
            return replace(honest, trace_cid=net.store.put(encrypt_checkpoint(key, blob)))

        elsewhere = publish_round(EmbeddedStore(tmp_path / "elsewhere"), key, state, trace, parent_cid="")
        bomb = dag_bomb(net.store, levels=3, leaf=b"\x01" * KUBO_DEFAULT.chunk_size)
        foreign = net.store.put(encrypt_checkpoint(StageKey(net.model_id, 1, b"\x09" * 32), state))
        published = {
            "missing field": with_trace(reframed(trace.to_bytes(), lambda d: d.pop("threads"))),
            "extra field": with_trace(reframed(trace.to_bytes(), lambda d: d["records"][0].update(extra=1))),
            "dag bomb": replace(honest, trace_cid=bomb),
            "other key": replace(honest, checkpoint_cid=foreign),
            "withheld": elsewhere,
        }
        reasons = {
            "missing field": r"trace Qm\w+: malformed: threads: Field required",
            "extra field": r"trace Qm\w+: malformed: records\.0\.extra: unknown field",
            "dag bomb": rf"trace {bomb}: {bomb} is larger than the \d+-byte limit",
            "other key": rf"checkpoint {foreign}: wrong key",
            "unknown dataset": r"model spec Qm\w+: dataset 'nowhere' not found",
            "stage over the limits": r"stage 0 would hold \d+ parameters .* above the 4294967296-byte limit",
            "withheld": r"withheld past the grace period: block Qm\w+ not found",
        }
        claims = {name: net.submit(net.member(name, net.model_id, 1), p) for name, p in published.items()}
        for name, changes in {
            "unknown dataset": {"dataset": {"name": "nowhere", "sha256": "00" * 32}},
            "stage over the limits": {"d_model": 65536},
        }.items():
            model_id = _other_model(net, tmp_path, name.replace(" ", "-"), **changes)
            other = replace(honest, model_id=model_id, stage=0)
            claims[name] = net.submit(net.member(name, model_id, 0), other)
        refused = [name for name in claims if name != "withheld"]

        def challenged(names):
            def check():
                return all(net.events("ClaimChallenged", claims[name]) for name in names)

            check.__doc__ = f"challenges of {', '.join(names)}"
            return check

        verifier = net.verifier("verifier-1", VALIDATORS[0], every_model=True)
        try:
            net.wait(challenged(refused), timeout=180, processes=(verifier,))
        finally:
            verifier.kill9()
        first_log = verifier.text()

        restarted = net.verifier("verifier-2", VALIDATORS[0], every_model=True)
        try:
            restarted.wait_for("watching claims")
            valid = net.submit(net.workers[1], honest)
            advance_time(net.reader, WINDOW - WINDOW // 3 + 1)
            net.wait(challenged(["withheld"]), timeout=120, processes=(restarted,))
            pattern = rf"verdict claim={valid} model={net.model_id} stage=1 round=1 result=valid"
            net.wait(lambda: re.search(pattern, restarted.text()), timeout=180, processes=(restarted,))
        finally:
            restarted.stop()
        second_log = restarted.text()

    for name, claim_id in claims.items():
        (event,) = net.events("ClaimChallenged", claim_id)
        evidence = json.loads(net.store.get(event["evidenceCID"]))
        verdict = evidence["verdict"]
        assert verdict["valid"] is False and verdict["step"] == event["stepIndex"] == 0
        assert re.search(reasons[name], verdict["reason"]), (name, verdict["reason"])
        line = re.search(rf"verdict claim={claim_id} .*", first_log + second_log).group(0)
        assert "result=INVALID" in line, line
    for claim_id in (claims[name] for name in refused):
        assert f"verdict claim={claim_id} " not in second_log  # journaled: never judged again
    for log in (first_log, second_log):
        assert "Traceback" not in log and "verifier error" not in log
    assert net.events("ClaimChallenged", valid) == []
