"""`pm worker run --model ID --stage S`: a compute provider on-chain.

It serves its stage in the swarm like any worker (offchain/swarm/stage_worker.py) and adds, as a
`StageRole`:
- start: stake up to the minimum, `join` the stage with its X25519 key, get the stage key (the
  first member creates it, later ones are granted it by a member over P2P), and pick the state to
  serve from: the stage's finalized checkpoint, or the state on disk if this worker published its
  round (so its claims can still follow), or the spec's seed;
- every committed round: encrypt and store the checkpoint and trace, journal the round durably
  (offchain/worker/journal.py);
- a ledger loop (offchain/worker/claims.py): group rounds into claims and submit each as soon as it
  can be fetched, chained on the lane's open claims; finalize due claims in runs; follow
  challenges; when a claim is rejected (and the later ones voided), a sole member takes its stage
  back to its lane's tip.

Swarm rounds and chain rounds: the chain's checkpoint round R is the state after R rounds of the
stage's lineage (R = 0: the seed, no CID); the swarm's committed round is the round about to be
trained, so the state of checkpoint R is served as committed round R + 1 and the next round trained
is claimed as R + 1. After a sole member went back to an earlier checkpoint the swarm round stays
where the other stages are, and the claim numbers the rounds from the checkpoint on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount
from hivemind.dht.node import DHTNode

from offchain.chain.protocol import Protocol
from offchain.chain.structs import call_struct
from offchain.crash import crash_point
from offchain.errors import UserError
from offchain.model.records import Trace
from offchain.model.spec import ModelSpec
from offchain.model.trainer import StageTrainer
from offchain.proofs.rounds import fetch_checkpoint, publish_round
from offchain.storage.cids import bytes32_to_cid
from offchain.storage.crypto import StageKey
from offchain.storage.store import Store
from offchain.swarm.discovery import lookup, stage_key
from offchain.swarm.keyshare import (
    EncryptionKeypair,
    HeldKey,
    StageKeyKeeper,
    StageKeyring,
    key_for_checkpoint,
    request_held_key,
    rotate_if_departed,
)
from offchain.swarm.server import RoundState, StageServer, StateFile
from offchain.worker.claims import ClaimKeeper, ClaimPolicy
from offchain.worker.journal import ClaimEntry, ClaimJournal, RoundEntry

log = logging.getLogger("offchain.worker")


@dataclass(frozen=True)
class ChainWorkerConfig:
    model_id: int
    stage: int
    spec: ModelSpec
    state_dir: Path
    policy: ClaimPolicy = field(default_factory=ClaimPolicy)
    cheat: str | None = None
    cheat_round: int | None = None  # TEST TOOL: cheat in this swarm round only (None: every round)
    poll_seconds: float = 1.0


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class ChainWorker:
    """The on-chain half of one stage worker (see the module docstring)."""

    def __init__(
        self, config: ChainWorkerConfig, protocol: Protocol, store: Store, account: LocalAccount
    ) -> None:
        self.config = config
        self.protocol, self.store, self.account = protocol, store, account
        self.client, self.ledger = protocol.client, protocol.ledger
        self.model_id, self.stage = config.model_id, config.stage
        lane = f"model{config.model_id}-stage{config.stage}"
        self.journal = ClaimJournal(config.state_dir / f"claims-{lane}")
        self.keyring = StageKeyring(config.state_dir / f"stage-keys-{lane}", config.model_id, config.stage)
        self.state_file = StateFile(config.state_dir, config.spec, config.model_id, config.stage)
        self.seed = StageTrainer(config.spec, config.stage, model_id=config.model_id).state_bytes()
        self.keeper = ClaimKeeper(
            protocol,
            config.model_id,
            config.stage,
            self.journal,
            store,
            seed_digest=sha256(self.seed),
            policy=config.policy,
        )
        self.key_keeper: StageKeyKeeper | None = None
        self._rounds: asyncio.Queue[tuple[RoundState, RoundState, Trace]] = asyncio.Queue()

    # ---- start --------------------------------------------------------------------------------

    async def start(self, node: DHTNode) -> RoundState:
        keypair = EncryptionKeypair.load_or_create(self.config.state_dir / "encryption-key")
        first = await asyncio.to_thread(self._stake_and_join, node.peer_id.to_bytes(), keypair.public)
        if self.keyring.current is None:
            if first:
                block = self.client.rpc("block_number", lambda: self.client.w3.eth.block_number)
                self.keyring.add(HeldKey(StageKey.generate(self.model_id, self.stage), block))
                log.info("stage key created: first member of model %d stage %d", self.model_id, self.stage)
            else:
                held = await request_held_key(
                    node.p2p,
                    node,
                    self.protocol,
                    self.config.spec.digest(),
                    self.model_id,
                    self.stage,
                    self.account,
                    keypair,
                    store=self.store,
                )
                self.keyring.add(held)
        self.key_keeper = StageKeyKeeper(self.protocol, self.keyring, self.account)
        swarm_round = await self._swarm_round(node)
        return await asyncio.to_thread(self._initial_state, swarm_round)

    async def _swarm_round(self, node: DHTNode) -> int:
        """The round the other stages are at when this stage has no live replica (0 otherwise): a
        worker that replaces a stage's only member starts at that round, or the driver would wait
        forever for this stage to reach it. With a live replica the driver syncs this worker to it."""
        spec = self.config.spec
        found = [
            await lookup(node, stage_key(spec.digest(), self.model_id, s)) for s in range(spec.num_stages)
        ]
        if found[self.stage]:
            return 0
        return max((record.round for records in found for record in records), default=0)

    def _stake_and_join(self, peer_id: bytes, encryption_key: bytes) -> bool:
        """Stake up to the minimum and join the stage if needed; True if this worker is its only member."""
        client, ledger, me = self.client, self.ledger, self.client.address
        params = self.keeper.parameters()
        claim_bond, min_stake = params["claimBond"], params["minWorkerStake"]
        staked = call_struct(client, ledger.functions.stakeOf(me), "stakeOf")["staked"]
        required = max(min_stake, claim_bond)
        if staked < required:
            receipt = client.transact(ledger.functions.stake(), value=required - staked, action="stake")
            log.info(
                "staked %d wei (now %d), tx %s",
                required - staked,
                required,
                receipt["transactionHash"].to_0x_hex(),
            )
        member, stage = client.call(ledger.functions.stageOf(self.model_id, me), action="stageOf")
        if member and stage != self.stage:
            raise UserError(
                f"{me} is a member of stage {stage} of model {self.model_id}, not {self.stage}: "
                "an address holds one stage of a model (leave it first)"
            )
        if not member:
            join = ledger.functions.join(self.model_id, self.stage, peer_id, encryption_key)
            receipt = client.transact(join, action="join")
            log.info(
                "joined model %d stage %d, tx %s",
                self.model_id,
                self.stage,
                receipt["transactionHash"].to_0x_hex(),
            )
        members = client.call(ledger.functions.membersOf(self.model_id, self.stage), action="membersOf")
        return list(members) == [me]

    def _newest_live_state(self) -> tuple[str, bytes]:
        """(what it is, plaintext) of the newest state this worker may still train on: the end of
        its live chain (rounds it published that descend from its lane's tip, fetched back from the
        store), else the tip itself: the newest open claim's checkpoint, else the stage's finalized
        checkpoint, else the seed."""
        lane = self.keeper.lane()
        chain = self.keeper.live_chain(lane)
        if chain:
            last = chain[-1]
            if isinstance(last, ClaimEntry):
                record, rounds = last.manifest.checkpoint, f"swarm round {last.swarm_rounds[-1]}"
            else:
                record, rounds = last.published, f"swarm round {last.round}"
            key = key_for_checkpoint(self.keyring, self.store, record.checkpoint_cid)
            state = fetch_checkpoint(self.store, key, record.checkpoint_cid, record.checkpoint_digest)
            return f"its published state after {rounds} ({record.checkpoint_cid})", state
        if lane.tip_claim_id:
            entry = self.journal.claim_by_id(lane.tip_claim_id)
            if entry is not None:
                record = entry.manifest.checkpoint
                cid, digest = record.checkpoint_cid, record.checkpoint_digest
            else:
                claim = self.keeper.claim(lane.tip_claim_id)
                cid, digest = bytes32_to_cid(claim["checkpointCID"]), bytes(claim["checkpointDigest"])
            what = f"the checkpoint of round {lane.tip_round} (claim {lane.tip_claim_id}, {cid})"
            key = key_for_checkpoint(self.keyring, self.store, cid)
            return what, fetch_checkpoint(self.store, key, cid, digest)
        checkpoint = self.keeper.checkpoint()
        if checkpoint.cid is None:
            return "the spec's seed", self.seed
        key = key_for_checkpoint(self.keyring, self.store, checkpoint.cid)
        state = fetch_checkpoint(self.store, key, checkpoint.cid, checkpoint.digest)
        return f"the finalized checkpoint of round {checkpoint.round} ({checkpoint.cid})", state

    def _initial_state(self, swarm_round: int) -> RoundState:
        """The state on disk if it can still lead to claims (it descends from the lane's tip), else
        the newest state that can (`_newest_live_state`); served at the disk's or the swarm's round
        if that is ahead, to stay in step with the other stages."""
        local = self.state_file.load()
        lane = self.keeper.lane()
        if local is not None and sha256(local.state) in self.keeper.live_digests(lane):
            log.info("resuming stage %d from its round %d state on disk", self.stage, local.round)
            return RoundState(max(local.round, swarm_round), local.state)
        what, state = self._newest_live_state()
        served = max(lane.tip_round + 1, local.round if local is not None else 0, swarm_round)
        log.info("starting stage %d from %s as round %d", self.stage, what, served)
        return RoundState(served, state)

    # ---- rounds -------------------------------------------------------------------------------

    async def on_round(self, parent: RoundState, committed: RoundState, trace: Trace | None) -> None:
        """Queue the round for publishing (the driver's finish_round must not wait for storage)."""
        if trace is None or trace.round != parent.round or not trace.records:
            log.warning(
                "round %d committed without a trace of this replica's steps: not claimable", parent.round
            )
            return
        self._rounds.put_nowait((parent, committed, trace))

    def publish(self, parent: RoundState, committed: RoundState, trace: Trace) -> None:
        """Store the round (under --cheat: what the cheat makes of it) and journal it durably."""
        if self.journal.claim_of_round(trace.round) is not None:
            log.warning("round %d was committed again after it was claimed: keeping the claim", trace.round)
            return
        state, cheat = committed.state, self.config.cheat
        if cheat is not None and self.config.cheat_round in (None, trace.round):
            from offchain.worker.cheats import apply_cheat

            state, trace = apply_cheat(cheat, self.config.spec, parent.state, state, trace)
        else:
            cheat = None
        key = rotate_if_departed(self.protocol, self.keyring)
        published = publish_round(self.store, key, state, trace)
        block = self.client.rpc("get_block", lambda: self.client.w3.eth.get_block("latest"))
        entry = RoundEntry(
            published, sha256(parent.state), sha256(committed.state), block["timestamp"], block["number"]
        )
        self.journal.put_round(entry)
        log.info(
            "round %d published: checkpoint %s, trace %s, digest %s, %d work units%s",
            published.round,
            published.checkpoint_cid,
            published.trace_cid,
            published.checkpoint_digest.hex(),
            published.work_units,
            f" (CHEAT {cheat})" if cheat else "",
        )
        crash_point("after-store")

    async def _publish_queued(self) -> None:
        while not self._rounds.empty():
            await asyncio.to_thread(self.publish, *self._rounds.get_nowait())

    # ---- the ledger loop ----------------------------------------------------------------------

    async def run(self, server: StageServer, stop: asyncio.Event) -> None:
        """Publish committed rounds and move claims along, one step at a time, until `stop`; a step
        that fails (an RPC outage outlasting the client's retries, a store error) is logged and
        tried again on the next pass, so the daemon outlives its chain endpoint."""
        while not stop.is_set():
            try:
                await self._publish_queued()
                await asyncio.to_thread(self.keeper.tick)
                if self.keeper.rebase:
                    await self._rebase(server)
            except Exception as error:  # noqa: BLE001 - the daemon must outlive any one failed step
                log.warning("ledger step failed (%s: %s); trying again", type(error).__name__, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.poll_seconds)
        await self._publish_queued()  # committed rounds are stored and journaled before exiting

    async def _rebase(self, server: StageServer) -> None:
        """After a rejected or voided claim (or rounds that cannot be claimed), a sole member serves
        the newest state that descends from its lane's tip unless what it serves already does; with
        replicas, the swarm's majority state decides and the driver syncs this worker."""
        if await asyncio.to_thread(self.keeper.members) != [self.client.address]:
            self.keeper.rebase = False
            return
        lane = await asyncio.to_thread(self.keeper.lane)
        live = await asyncio.to_thread(self.keeper.live_digests, lane)
        if bytes.fromhex(server.committed.digest) in live:
            self.keeper.rebase = False
            return
        what, state = await asyncio.to_thread(self._newest_live_state)
        if server.in_round is not None:
            return  # between rounds only: the next pass tries again
        await server.adopt(RoundState(server.committed.round, state))
        log.warning("stage %d back to %s: the next round trains from it", self.stage, what)
        self.keeper.rebase = False
