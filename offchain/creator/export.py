"""Gather a model's stage checkpoints for export: from an off-chain swarm's state folder, or from
the chain and the store, decrypted with the stage keys of someone who holds all of them.

On-chain, nobody but a holder of every stage key can do this: each finalized checkpoint is
ciphertext under its own stage's key, and a key is only ever handed to members of that stage. A
model's full weights stay out of any single stage member's reach exactly as while it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from offchain.chain.models import spec_of_model
from offchain.chain.protocol import Protocol
from offchain.chain.status import cid_of
from offchain.errors import UserError
from offchain.model.spec import ModelSpec
from offchain.proofs.rounds import fetch_checkpoint
from offchain.storage.crypto import StageKey
from offchain.storage.errors import DecryptionError
from offchain.storage.store import Store
from offchain.swarm.server import StateFile

STAGE_KEY_BYTES = 32


@dataclass(frozen=True)
class Gathered:
    """Every stage's checkpoint (plaintext) and the round it is from."""

    spec: ModelSpec
    states: list[bytes]
    rounds: list[int]


def from_state_dir(spec: ModelSpec, state_dir: Path, model_id: int) -> Gathered:
    """The states the off-chain workers of `spec` (`pm worker run --model-spec`) committed last."""
    states, rounds = [], []
    for stage in range(spec.num_stages):
        state_file = StateFile(state_dir, spec, model_id, stage)
        committed = state_file.load()
        if committed is None:
            raise UserError(f"no stage {stage} state in {state_dir} (expected {state_file.path.name})")
        states.append(committed.state)
        rounds.append(committed.round)
    return Gathered(spec, states, rounds)


def read_stage_keys(files: Sequence[Path]) -> list[bytes]:
    """The secrets of the given stage-key files (what `pm worker run` keeps in its state folder)."""
    secrets = []
    for file in files:
        if not file.is_file():
            raise UserError(f"stage key file {file} does not exist")
        secret = file.read_bytes()
        if len(secret) != STAGE_KEY_BYTES:
            raise UserError(f"stage key file {file} does not hold a {STAGE_KEY_BYTES}-byte stage key")
        secrets.append(secret)
    return secrets


def from_chain(protocol: Protocol, store: Store, model_id: int, secrets: Sequence[bytes]) -> Gathered:
    """Every stage's finalized checkpoint, fetched by its on-chain CID, decrypted with whichever of
    `secrets` is that stage's key and checked against the on-chain digest."""
    _, spec = spec_of_model(protocol, store, model_id)
    states, rounds = [], []
    for stage in range(spec.num_stages):
        raw_cid, digest, round_ = protocol.client.call(
            protocol.registry.functions.checkpointOf(model_id, stage), action="checkpointOf"
        )
        cid = cid_of(bytes(raw_cid))  # the CIDv0 whose sha256 digest the chain holds
        if cid is None:
            raise UserError(f"stage {stage} of model {model_id} has no finalized checkpoint yet")
        states.append(_decrypt_stage(store, model_id, stage, cid, bytes(digest), secrets))
        rounds.append(round_)
    return Gathered(spec, states, rounds)


def _decrypt_stage(
    store: Store, model_id: int, stage: int, cid: str, digest: bytes, secrets: Sequence[bytes]
) -> bytes:
    for secret in secrets:
        try:
            return fetch_checkpoint(store, StageKey(model_id, stage, secret), cid, digest)
        except DecryptionError:
            continue
    raise UserError(f"none of the --stage-key files opens stage {stage}'s checkpoint {cid}")
