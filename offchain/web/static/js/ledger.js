// Every read of the WorkLedger lives here, so a change of its events is a change of this one
// file. Protocol v2: a claim covers rounds firstRound..lastRound of its lane (model, worker);
// claimId = laneId << 64 | seq; a rejection voids every later open claim of its lane at once
// (LaneVoided). The rest of the page sees claims in one shape: {claimId, stage, firstRound,
// lastRound, worker, workUnits, state, challenged, sharesMinted, submittedBlock,
// challengedBlock, settledBlock}.
import { eventLogs } from "./chain.js";

/** Claim states as `pm status` counts them; `challenged` is a flag (a challenged claim still settles). */
export const CLAIM_STATES = ["pending", "finalized", "rejected", "voided"];

const byClaim = (logs) => new Map(logs.map((log) => [log.args.claimId, log]));
const laneOf = (claimId) => claimId >> 64n;
const before = (a, b) => a.block < b.block || (a.block === b.block && a.index < b.index);

/** Every claim submitted for the model, oldest first. */
export async function claimsOf(chain, modelId) {
  const ledger = chain.ledger;
  const [submitted, finalized, rejected, challenged, voids] = await Promise.all([
    eventLogs(chain, ledger, "ClaimSubmitted", [null, modelId]),
    eventLogs(chain, ledger, "ClaimFinalized").then(byClaim),
    eventLogs(chain, ledger, "ClaimRejected").then(byClaim),
    eventLogs(chain, ledger, "ClaimChallenged").then(byClaim),
    eventLogs(chain, ledger, "LaneVoided", [modelId]),
  ]);
  return submitted.map((log) => {
    const { args } = log;
    const done = finalized.get(args.claimId);
    const refused = rejected.get(args.claimId);
    const disputed = challenged.get(args.claimId);
    // A LaneVoided after this submission naming an earlier claim of the same lane voided it.
    const voided = voids.find(
      (v) => laneOf(v.args.rejectedClaimId) === laneOf(args.claimId) && v.args.rejectedClaimId < args.claimId && before(log, v),
    );
    const settled = done ?? refused ?? voided;
    return {
      claimId: args.claimId,
      stage: Number(args.stage),
      firstRound: Number(args.firstRound),
      lastRound: Number(args.lastRound),
      worker: args.worker,
      workUnits: args.workUnits,
      state: done ? "finalized" : refused ? "rejected" : voided ? "voided" : "pending",
      challenged: Boolean(disputed),
      sharesMinted: done ? done.args.sharesMinted : 0n,
      submittedBlock: log.block,
      challengedBlock: disputed?.block ?? null,
      settledBlock: settled?.block ?? null,
    };
  });
}

/** Per stage: its members and validators now, and the latest finalized round (the registry's checkpoint). */
export async function stagesOf(chain, model) {
  const stages = Array.from({ length: model.numStages }, (_, stage) => stage);
  return Promise.all(
    stages.map(async (stage) => {
      const [members, validators, checkpoint] = await Promise.all([
        chain.ledger.membersOf(model.id, stage),
        chain.ledger.validatorsOf(model.id, stage),
        chain.registry.checkpointOf(model.id, stage),
      ]);
      return { stage, members: [...members], validators: [...validators], round: Number(checkpoint.round) };
    }),
  );
}
