// Every read of the WorkLedger lives here, so a change of its events (Protocol v2: ranges of
// rounds, ClaimsFinalized, LaneVoided) is a change of this one file. The rest of the page sees
// claims in one shape: {claimId, stage, firstRound, lastRound, worker, workUnits, state,
// challenged, sharesMinted, submittedBlock, challengedBlock, settledBlock}.
import { eventLogs } from "./chain.js";

/** Claim states as `pm status` counts them; `challenged` is a flag (a claim may be challenged and then settle). */
export const CLAIM_STATES = ["pending", "finalized", "rejected"];

const byClaim = (logs) => new Map(logs.map((log) => [log.args.claimId, log]));

/** Every claim submitted for the model, oldest first. */
export async function claimsOf(chain, modelId) {
  const ledger = chain.ledger;
  const [submitted, finalized, rejected, challenged] = await Promise.all([
    eventLogs(chain, ledger, "ClaimSubmitted", [null, modelId]),
    eventLogs(chain, ledger, "ClaimFinalized").then(byClaim),
    eventLogs(chain, ledger, "ClaimRejected").then(byClaim),
    eventLogs(chain, ledger, "ClaimChallenged").then(byClaim),
  ]);
  return submitted.map(({ args, block }) => {
    const done = finalized.get(args.claimId);
    const refused = rejected.get(args.claimId);
    const disputed = challenged.get(args.claimId);
    return {
      claimId: args.claimId,
      stage: Number(args.stage),
      firstRound: Number(args.round),
      lastRound: Number(args.round),
      worker: args.worker,
      workUnits: args.workUnits,
      state: done ? "finalized" : refused ? "rejected" : "pending",
      challenged: Boolean(disputed),
      sharesMinted: done ? done.args.sharesMinted : 0n,
      submittedBlock: block,
      challengedBlock: disputed?.block ?? null,
      settledBlock: (done ?? refused)?.block ?? null,
    };
  });
}

/** Per stage: its members now and the latest finalized round (the registry's checkpoint). */
export async function stagesOf(chain, model) {
  const stages = Array.from({ length: model.numStages }, (_, stage) => stage);
  return Promise.all(
    stages.map(async (stage) => {
      const [members, checkpoint] = await Promise.all([
        chain.ledger.membersOf(model.id, stage),
        chain.registry.checkpointOf(model.id, stage),
      ]);
      return { stage, members: [...members], round: Number(checkpoint.round) };
    }),
  );
}
