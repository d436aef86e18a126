"""`pm verifier run`: the validator daemon. torch, hivemind and web3 load inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from offchain import options
from offchain.errors import UserError
from offchain.logs import configure_logging
from offchain.options import PeersOption

if TYPE_CHECKING:
    from hivemind.dht.node import DHTNode

    from offchain.chain.protocol import Protocol
    from offchain.model.spec import ModelSpec
    from offchain.storage.crypto import StageKey
    from offchain.storage.store import Store
    from offchain.swarm.keyshare import EncryptionKeypair

verifier_app = typer.Typer(help="Validator: replay claims, challenge and vote.", no_args_is_help=True)

KEY_REQUEST_TIMEOUT_S = 15.0
KEY_RETRY_S = 60.0


class P2PStageKeys:
    """The validated stage's keys, asked from that stage's members over P2P by the key id a ciphertext
    names (members rotate the key after a departure; a validator is granted its own stage's keys
    only), each checked against the stage's finalized checkpoint in `store` when it is that one's key.
    Kept in memory: a restarted verifier asks again rather than keeping secrets on disk. A key that no
    member granted is not asked for again for KEY_RETRY_S (judging goes on meanwhile)."""

    def __init__(self, node: DHTNode, protocol: Protocol, keypair: EncryptionKeypair, store: Store) -> None:
        self.node, self.protocol, self.keypair, self.store = node, protocol, keypair, store
        self.keys: dict[tuple[int, int, bytes], StageKey] = {}
        self.refused: dict[tuple[int, int, bytes], tuple[float, Exception]] = {}

    async def __call__(self, spec: ModelSpec, model_id: int, stage: int, key_id: bytes) -> StageKey:
        import time

        from offchain.swarm.keyshare import StageKeyUnavailable, request_stage_key

        wanted = (model_id, stage, key_id)
        if wanted in self.keys:
            return self.keys[wanted]
        retry_at, refusal = self.refused.get(wanted, (0.0, None))
        if refusal is not None and time.monotonic() < retry_at:
            raise refusal
        try:
            key = await request_stage_key(
                self.node.p2p,
                self.node,
                self.protocol,
                spec.digest(),
                model_id,
                stage,
                self.protocol.client.account,
                self.keypair,
                timeout=KEY_REQUEST_TIMEOUT_S,
                store=self.store,
                key_id=key_id,
            )
        except StageKeyUnavailable as error:
            self.refused[wanted] = (time.monotonic() + KEY_RETRY_S, error)
            raise
        self.refused.pop(wanted, None)
        self.keys[wanted] = key
        return key


@verifier_app.command("run")
def verifier_run(
    model_id: options.ModelId,
    stage: Annotated[
        int, typer.Option("--stage", min=0, help="The one stage of the model to validate (0-based).")
    ],
    initial_peers: PeersOption = None,
    probability: Annotated[
        float,
        typer.Option(
            "--probability",
            envvar="PM_VERIFY_PROBABILITY",
            help="Chance of replaying each round of a claim (0..1).",
        ),
    ] = 1.0,
    state_dir: Annotated[
        Path, typer.Option("--state-dir", help="Journal, event cursor and X25519 key of this verifier.")
    ] = Path(".pm/verifier"),
    drivers: Annotated[
        list[str] | None,
        typer.Option("--driver", help="Address allowed to sign stage 0's inputs (repeatable; default: any)."),
    ] = None,
    rpc_url: options.RpcUrl = options.DEFAULT_RPC_URL,
    key_file: options.KeyFile = None,
    deployments: options.Deployments = options.DEPLOYMENTS_DIR,
    store: options.StoreDir = options.DEFAULT_STORE,
    ipfs_api: options.IpfsApi = None,
) -> None:
    """Validate one stage of a model: register for it, replay sampled rounds of its claims, challenge
    false or withheld ones, vote on its disputes, resolve them, finalize the claims it judged valid."""
    if not 0.0 <= probability <= 1.0:
        raise UserError(f"--probability must be between 0 and 1, not {probability}")
    if not initial_peers:
        raise UserError(
            "pm verifier run needs --initial-peers: a stage member's multiaddr (to be granted stage keys)"
        )
    import asyncio

    from offchain.chain.models import checked_address
    from offchain.chain.protocol import open_protocol

    allowed = tuple(checked_address(driver, "--driver") for driver in drivers or ())
    protocol = open_protocol(rpc_url, key_file, deployments, signer=True)
    if protocol.ledger is None:
        raise UserError("this deployment has no WorkLedger: nothing to verify")
    model = protocol.model(model_id)  # an unknown id is one clear error, before anything is sent
    if stage >= model.num_stages:
        raise UserError(f"stage {stage} out of range: model {model_id} has stages 0..{model.num_stages - 1}")

    from offchain.storage.store import open_store
    from offchain.swarm.keyshare import EncryptionKeypair
    from offchain.swarm.node import network_config, shutdown_node, start_node, stop_on_signals
    from offchain.verifier.daemon import Verifier, VerifierConfig, ensure_validator

    keypair = EncryptionKeypair.load_or_create(state_dir / "x25519.key")
    config = VerifierConfig(state_dir, model_id, stage, probability, allowed)
    configure_logging()
    ensure_validator(protocol, model_id, stage)

    async def run() -> None:
        stop = stop_on_signals()
        node = await start_node(network_config(initial_peers, None, None))
        try:
            content = open_store(ipfs_api, store)
            verifier = Verifier(protocol, content, P2PStageKeys(node, protocol, keypair, content), config)
            await verifier.run(stop)
        finally:
            await shutdown_node(node)

    asyncio.run(run())
