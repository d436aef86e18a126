"""`pm worker run`: a compute provider serving one pipeline stage, on-chain (for shares) or off-chain.

torch and hivemind are imported inside the command so `pm --help` stays fast."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from offchain import options
from offchain.errors import UserError
from offchain.logs import configure_logging
from offchain.options import ChainModelOption, KeyEnvOption, ModelIdOption, PeersOption, SpecOption

if TYPE_CHECKING:  # the heavy modules load only when a command runs
    from offchain.data.dataset import Dataset
    from offchain.model.spec import ModelSpec
    from offchain.storage.store import Store

worker_app = typer.Typer(help="Compute provider: train one pipeline stage.", no_args_is_help=True)


class Cheat(StrEnum):
    """TEST TOOL: the dishonest-worker modes of offchain/worker/cheats.py."""

    SKIP_STEPS = "skip-steps"
    FAKE_DIGEST = "fake-digest"
    WRONG_PARENT = "wrong-parent"


def _training_data(store: Store, spec: ModelSpec) -> Dataset:
    """The spec's data set with its whole train split fetched now: the stage checks every
    micro-batch it trains on against it, and a store that goes away mid-training (a Kubo daemon
    restarting) must not stall its rounds. Memory: the train split's tokens (2 or 4 bytes each)."""
    import time

    from offchain.data.shipped import open_spec_dataset

    started = time.monotonic()
    dataset = open_spec_dataset(store, spec.tokenizer_cid, spec.manifest_cid, spec.config.vocab_size)
    tokens = dataset.load("train")
    logging.getLogger("offchain.worker").info(
        "data set %s: %d train tokens held (%.1fs)", dataset.cid, tokens, time.monotonic() - started
    )
    return dataset


@worker_app.command("run")
def worker_run(
    stage: Annotated[int, typer.Option("--stage", help="Pipeline stage to serve (0-based).")],
    model: ChainModelOption = None,
    model_spec: SpecOption = None,
    initial_peers: PeersOption = None,
    host_maddrs: Annotated[
        list[str] | None,
        typer.Option("--host-maddrs", help="Listen multiaddr (repeatable); default loopback, any port."),
    ] = None,
    announce_maddrs: Annotated[
        list[str] | None,
        typer.Option("--announce-maddrs", help="Multiaddr other machines reach you at (repeatable)."),
    ] = None,
    model_id: ModelIdOption = 0,
    key_file: options.KeyFile = None,
    private_key_env: KeyEnvOption = None,
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", help="Where round state, claim journal and keys are kept for restarts."),
    ] = Path(".pm/swarm-state"),
    rounds_per_claim: Annotated[
        int,
        typer.Option(
            "--rounds-per-claim",
            min=1,
            help="Rounds one claim covers: more rounds per claim cost less gas per round and delay "
            "their shares until the claim's window passes.",
        ),
    ] = 1,
    claim_wait: Annotated[
        int | None,
        typer.Option(
            "--claim-wait",
            min=0,
            help="Seconds (chain time) the oldest unclaimed round may wait for --rounds-per-claim "
            "rounds; past it, a shorter claim goes out. Default: always a full claim.",
        ),
    ] = None,
    cheat: Annotated[
        Cheat | None,
        typer.Option(
            "--cheat",
            help="TEST TOOL, never with real stake: publish and claim a dishonest round (training "
            "with peers stays honest) so a verifier can be shown catching it; the bond is slashed.",
        ),
    ] = None,
    cheat_round: Annotated[
        int | None,
        typer.Option("--cheat-round", min=1, help="TEST TOOL: with --cheat, cheat in this round only."),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help="With --model-spec: an address that may take part (repeatable: every worker and the "
            "driver); without any, every peer is refused.",
        ),
    ] = None,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
) -> None:
    """Serve one stage over hivemind P2P until SIGTERM; resumes from --state-dir after a crash.

    With --model ID: on-chain, for shares (stake, join, claim every round as it is published,
    chained on the worker's open claims, finalize them in runs).
    With --model-spec FILE: off-chain training only, no claims."""
    import asyncio

    from offchain.swarm.identity import Identity
    from offchain.swarm.node import network_config

    if (model is None) == (model_spec is None):
        raise UserError("pass exactly one of --model ID (on-chain) and --model-spec FILE (off-chain)")
    if cheat_round is not None and cheat is None:
        raise UserError("--cheat-round picks the round a --cheat applies to: pass --cheat too")
    from offchain.swarm.authz import Access

    if model_spec is not None:
        if cheat is not None or rounds_per_claim != 1 or claim_wait is not None:
            raise UserError(
                "--cheat, --rounds-per-claim and --claim-wait are about claims: they need --model"
            )
        from offchain.chain.models import checked_address
        from offchain.model.spec import load_spec
        from offchain.storage.store import open_store
        from offchain.swarm.stage_worker import WorkerConfig, serve_stage

        spec = load_spec(model_spec)
        spec.check_stage(stage)
        allowed = [checked_address(address, "--allow") for address in allow or ()]
        identity = Identity.load(key_file, private_key_env)
        configure_logging()
        if not allowed:
            logging.getLogger("offchain.worker").warning("no --allow list: every peer will be refused")
        network = network_config(initial_peers, host_maddrs, announce_maddrs)
        access = Access.off_chain(model_id, allowed)
        dataset = _training_data(open_store(ipfs_api, store), spec)
        config = WorkerConfig(
            spec, stage, identity, network, access, model_id=model_id, state_dir=state_dir, dataset=dataset
        )
        asyncio.run(serve_stage(config))
        return
    if allow:
        raise UserError("--allow is for --model-spec: on-chain, the chain says who may take part")

    from offchain.chain.client import ChainClient
    from offchain.chain.models import spec_of_model
    from offchain.chain.protocol import Protocol
    from offchain.keys import KEY_ENV, load_account
    from offchain.storage.store import open_store

    account = load_account(key_file, private_key_env or KEY_ENV)
    protocol = Protocol.load(ChainClient(rpc_url, account), deployments)
    content = open_store(ipfs_api, store)
    chain_model, spec = spec_of_model(protocol, content, model)
    if not 0 <= stage < chain_model.num_stages:
        raise UserError(
            f"stage {stage} out of range: model {model} has stages 0..{chain_model.num_stages - 1}"
        )
    from offchain.swarm.stage_worker import WorkerConfig, serve_stage
    from offchain.worker.claims import ClaimPolicy
    from offchain.worker.daemon import ChainWorker, ChainWorkerConfig

    identity = Identity(bytes(account.key), account.address)
    configure_logging()
    network = network_config(initial_peers, host_maddrs, announce_maddrs)
    access = Access.on_chain(protocol, model)
    dataset = _training_data(content, spec)
    config = WorkerConfig(
        spec, stage, identity, network, access, model_id=model, state_dir=state_dir, dataset=dataset
    )
    policy = ClaimPolicy(rounds_per_claim, claim_wait)
    role = ChainWorker(
        ChainWorkerConfig(model, stage, spec, state_dir, policy, cheat.value if cheat else None, cheat_round),
        protocol,
        content,
        account,
    )
    asyncio.run(serve_stage(config, role))
