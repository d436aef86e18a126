// The public dashboard of a model, read from the chain's state and events (no wallet needed).
import { html, useMemo, useState } from "../vendor/preact-htm.js";
import { ZeroAddress } from "../vendor/ethers.min.js";
import { TimeChart } from "./chart.js";
import { assetOf, blockTimes, eventLogs, listModels } from "./chain.js";
import { formatAmount, percentOf, trimUnits } from "./format.js";
import { CLAIM_STATES, claimsOf, stagesOf } from "./ledger.js";
import { Address, Status, useChainRead } from "./ui.js";

const SHARE_DECIMALS = 18;

/** Current balance of everyone who ever received the model's shares (from its Transfer events). */
async function holdersOf(chain, model, blockTag) {
  const shares = chain.shares(model.shares);
  const transfers = await eventLogs(chain, shares, "Transfer");
  const addresses = [...new Set(transfers.map((log) => log.args.to))].filter((a) => a !== ZeroAddress);
  const balances = await Promise.all(addresses.map((a) => shares.balanceOf(a, { blockTag })));
  return addresses
    .map((address, i) => ({ address, balance: balances[i] }))
    .filter((h) => h.balance > 0n)
    .sort((a, b) => (b.balance > a.balance ? 1 : b.balance < a.balance ? -1 : 0));
}

async function readModel(chain, model) {
  const blockTag = await chain.provider.getBlockNumber();
  const shares = chain.shares(model.shares);
  const [asset, stages, claims, holders, payments, supply, revenue, claimed, held, owed, protocolBps, operatorBps] = await Promise.all([
    assetOf(chain, model.revenueAsset),
    stagesOf(chain, model),
    claimsOf(chain, model.id),
    holdersOf(chain, model, blockTag),
    eventLogs(chain, chain.router, "InferencePaid", [model.id]),
    shares.totalSupply({ blockTag }),
    shares.totalRevenue({ blockTag }),
    shares.totalClaimed({ blockTag }),
    shares.heldRevenue({ blockTag }),
    chain.router.feesOwed(model.id, { blockTag }),
    chain.router.protocolFeeBps({ blockTag }),
    chain.router.operatorFeeBps({ blockTag }),
  ]);
  const times = await blockTimes(chain, [chain.config.firstBlock, blockTag, ...claims.flatMap((c) => [c.submittedBlock, c.settledBlock, c.challengedBlock]), ...payments.map((p) => p.block)].filter((b) => b !== null));
  const sum = (field) => payments.reduce((total, p) => total + p.args[field], 0n);
  return {
    block: blockTag, model, asset, stages, claims, holders, payments, times, supply,
    span: { start: Number(times.get(chain.config.firstBlock)), end: Number(times.get(blockTag)) }, // charts' time axis
    revenue: { total: revenue, claimed, held, paid: sum("amount"), toHolders: sum("toHolders"), toOperator: sum("toOperator"), toProtocol: sum("toProtocol") },
    fees: { protocolBps: Number(protocolBps), operatorBps: Number(operatorBps), owedProtocol: owed.toProtocol, owedOperator: owed.toOperator },
  };
}

/** Cumulative claims by state at every block where one changed. */
function claimSeries(claims, times, span) {
  const events = claims.flatMap((c) => [
    { block: c.submittedBlock, key: "submitted" },
    ...(c.challengedBlock !== null ? [{ block: c.challengedBlock, key: "challenged" }] : []),
    ...(c.settledBlock !== null ? [{ block: c.settledBlock, key: c.state }] : []),
  ]);
  const blocks = [...new Set(events.map((e) => e.block))].sort((a, b) => a - b);
  const totals = Object.fromEntries(["submitted", "challenged", ...CLAIM_STATES].map((key) => [key, 0]));
  const rows = blocks.map((block) => {
    for (const e of events.filter((e) => e.block === block)) totals[e.key] += 1;
    const settled = CLAIM_STATES.filter((s) => s !== "pending").reduce((sum, s) => sum + totals[s], 0);
    return { ...totals, pending: totals.submitted - settled };
  });
  return sinceDeployment(
    blocks.map((b) => Number(times.get(b))),
    [...CLAIM_STATES, "challenged"].map((state) => ({ label: state, values: rows.map((row) => row[state]) })),
    span,
  );
}

/** Each series from zero at the protocol's deployment to its last value at the block the page read. */
function sinceDeployment(x, series, { start, end }) {
  if (x.length === 0) return { x, series };
  const head = start < x[0] ? [start] : [];
  const tail = end > x.at(-1) ? [end] : [];
  return {
    x: [...head, ...x, ...tail],
    series: series.map((s) => ({ ...s, values: [...head.map(() => 0), ...s.values, ...tail.map(() => s.values.at(-1))] })),
  };
}

function revenueSeries(payments, times, asset, span) {
  let paid = 0n;
  let toHolders = 0n;
  const points = payments.map((p) => {
    paid += p.args.amount;
    toHolders += p.args.toHolders;
    return [Number(times.get(p.block)), Number(trimUnits(paid, asset.decimals)), Number(trimUnits(toHolders, asset.decimals))];
  });
  const series = [
    { label: `paid (${asset.symbol})`, values: points.map((p) => p[1]) },
    { label: `to holders (${asset.symbol})`, values: points.map((p) => p[2]) },
  ];
  return sinceDeployment(points.map((p) => p[0]), series, span);
}

const Accounts = ({ field, accounts }) =>
  html`<td data-field=${field}>${accounts.length ? accounts.map((a) => html`<${Address} address=${a} /> `) : "none"}</td>`;

const Amount = ({ value, asset, field }) => html`<span data-field=${field} data-raw=${value.toString()}>${formatAmount(value, asset)}</span>`;

function ModelReport({ data }) {
  const { model, asset, stages, claims, holders, revenue, fees, supply } = data;
  const counts = Object.fromEntries(CLAIM_STATES.map((state) => [state, claims.filter((c) => c.state === state).length]));
  const challenged = claims.filter((c) => c.challenged).length;
  const claimChart = useMemo(() => claimSeries(claims, data.times, data.span), [data]);
  const revenueChart = useMemo(() => revenueSeries(data.payments, data.times, asset, data.span), [data]);
  return html`<div class="report" data-model=${model.id}>
    <p>Model ${model.id} is <strong>${model.status}</strong>: ${model.numStages} stages, revenue in ${asset.symbol}, spec <code>${model.specCID}</code>; read at block <span data-field="block">${data.block}</span>.</p>
    <h3>Stages</h3>
    <table class="stages"><thead><tr><th scope="col">Stage</th><th scope="col">Finalized round</th><th scope="col">Members</th><th scope="col">Validators</th></tr></thead>
      <tbody>${stages.map((s) => html`<tr data-stage=${s.stage}><th scope="row">${s.stage}</th><td data-field="round">${s.round}</td>
        <${Accounts} field="members" accounts=${s.members} /><${Accounts} field="validators" accounts=${s.validators} /></tr>`)}</tbody></table>
    <h3>Claims</h3>
    <p class="counts">${CLAIM_STATES.map((state) => html`<span>${state} <strong data-field=${`claims-${state}`}>${counts[state]}</strong></span> `)}
      <span>challenged <strong data-field="claims-challenged">${challenged}</strong></span></p>
    <${TimeChart} title="Claims by state over time" summary=${`${claims.length} claims: ${CLAIM_STATES.map((state) => `${counts[state]} ${state}`).join(", ")}`} x=${claimChart.x} series=${claimChart.series} />
    <h3>Shares by holder</h3>
    <table class="holders"><caption>Supply <span data-field="supply" data-raw=${supply.toString()}>${trimUnits(supply, SHARE_DECIMALS)}</span> shares</caption>
      <thead><tr><th scope="col">Holder</th><th scope="col">Shares</th><th scope="col">Of supply</th></tr></thead>
      <tbody>${holders.map((h) => html`<tr data-holder=${h.address}><th scope="row"><${Address} address=${h.address} /></th>
        <td data-field="shares" data-raw=${h.balance.toString()}>${trimUnits(h.balance, SHARE_DECIMALS)}</td><td data-field="percent">${percentOf(h.balance, supply)}</td></tr>`)}</tbody></table>
    <h3>Revenue</h3>
    <${TimeChart} title="Revenue paid over time (cumulative)" summary=${`${data.payments.length} payments, ${formatAmount(revenue.paid, asset)} in all`} x=${revenueChart.x} series=${revenueChart.series} />
    <dl class="figures">
      <dt>Payments</dt><dd data-field="payments">${data.payments.length}</dd>
      <dt>Paid by customers</dt><dd><${Amount} value=${revenue.paid} asset=${asset} field="paid" /></dd>
      <dt>To holders</dt><dd><${Amount} value=${revenue.toHolders} asset=${asset} field="to-holders" /></dd>
      <dt>Revenue credited to shares</dt><dd><${Amount} value=${revenue.total} asset=${asset} field="total-revenue" /></dd>
      <dt>Claimed by holders</dt><dd><${Amount} value=${revenue.claimed} asset=${asset} field="claimed" /></dd>
      <dt>Held until the first shares</dt><dd><${Amount} value=${revenue.held} asset=${asset} field="held" /></dd>
      <dt>Operator fee (${fees.operatorBps / 100}%)</dt><dd><${Amount} value=${revenue.toOperator} asset=${asset} field="to-operator" />, <${Amount} value=${fees.owedOperator} asset=${asset} field="owed-operator" /> not yet withdrawn</dd>
      <dt>Protocol fee (${fees.protocolBps / 100}%)</dt><dd><${Amount} value=${revenue.toProtocol} asset=${asset} field="to-protocol" />, <${Amount} value=${fees.owedProtocol} asset=${asset} field="owed-protocol" /> not yet withdrawn</dd>
    </dl>
  </div>`;
}

export function Dashboard({ chain }) {
  const registry = useChainRead(chain, "models", () => listModels(chain));
  const models = registry.data;
  const [chosen, setChosen] = useState(null);
  const selected = chosen ?? models?.[0]?.id ?? null;
  const report = useChainRead(chain, selected, () => readModel(chain, models.find((m) => m.id === selected)));
  const data = report.data;
  const failure = registry.error ?? report.error;
  const error = failure && { kind: "failed", text: `Could not read the chain: ${failure.shortMessage ?? failure.message}` };

  return html`<section aria-labelledby="dash-title">
    <h2 id="dash-title">Model dashboard</h2>
    <${Status} status=${error} />
    ${models === null
      ? html`<p role="status">Reading the registry…</p>`
      : models.length === 0
        ? html`<p>No model is registered on this chain yet.</p>`
        : html`<label for="dash-model">Model</label>
            <select id="dash-model" value=${selected} onChange=${(e) => setChosen(Number(e.target.value))}>
              ${models.map((m) => html`<option value=${m.id}>Model ${m.id} (${m.numStages} stages, ${m.status})</option>`)}
            </select>
            ${data && data.model.id === selected ? html`<${ModelReport} data=${data} />` : html`<p role="status">Reading model ${selected}…</p>`}`}
  </section>`;
}
