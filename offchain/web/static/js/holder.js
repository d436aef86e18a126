// The holder's page: every model the account has shares or revenue in, claim one or all, export history.
import { html, useEffect, useState } from "../vendor/preact-htm.js";
import { assetOf, blockTimes, eventLogs, listModels, receiptEvents } from "./chain.js";
import { formatAmount, formatTime, percentOf, toCsv, trimUnits } from "./format.js";
import { Status, useChainRead, useWallet } from "./ui.js";
import { transact } from "./wallet.js";

const SHARE_DECIMALS = 18;

/** The account's position in every model, all numbers read at one block. */
async function readHoldings(chain, account) {
  const blockTag = await chain.provider.getBlockNumber();
  const models = await listModels(chain);
  const rows = await Promise.all(
    models.map(async (model) => {
      const shares = chain.shares(model.shares);
      const [balance, supply, claimable, asset, history] = await Promise.all([
        shares.balanceOf(account, { blockTag }),
        shares.totalSupply({ blockTag }),
        shares.claimable(account, { blockTag }),
        assetOf(chain, model.revenueAsset),
        eventLogs(chain, shares, "RevenueClaimed", [account]),
      ]);
      const claimed = history.reduce((sum, log) => sum + log.args.amount, 0n);
      return { model, balance, supply, claimable, claimed, asset, history };
    }),
  );
  return { block: blockTag, rows: rows.filter((r) => r.balance > 0n || r.claimable > 0n || r.claimed > 0n) };
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const link = Object.assign(document.createElement("a"), { href: url, download: name });
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function exportHistory(chain, account, rows) {
  const claims = rows.flatMap((row) => row.history.map((log) => ({ row, log })));
  const times = await blockTimes(chain, claims.map(({ log }) => log.block));
  const lines = claims
    .sort((a, b) => a.log.block - b.log.block || a.log.index - b.log.index)
    .map(({ row, log }) => [
      row.model.id,
      log.block,
      formatTime(times.get(log.block)),
      log.tx,
      log.args.amount.toString(),
      trimUnits(log.args.amount, row.asset.decimals),
      row.asset.symbol,
      row.asset.address,
    ]);
  const header = ["model_id", "block", "time_utc", "tx", "amount_raw", "amount", "asset_symbol", "asset_address"];
  download(`claims-${account}.csv`, toCsv([header, ...lines]));
}

export function HolderView({ chain, wallet }) {
  useWallet(wallet);
  const account = wallet.account;
  const { data: holdings, error, refresh } = useChainRead(chain, account, () => readHoldings(chain, account));
  const [statuses, setStatuses] = useState({});
  const [claiming, setClaiming] = useState(false);

  useEffect(() => setStatuses({}), [account]);

  const setStatus = (id, status) => setStatuses((all) => ({ ...all, [id]: status }));

  /** One claim; true when it was mined. The page re-reads everything before Claim is enabled again. */
  async function claimOne(row) {
    const id = row.model.id;
    const iface = chain.iface.ModelShares;
    const tx = { to: row.model.shares, data: iface.encodeFunctionData("claim") };
    const receipt = await transact(chain, wallet, `claim from model ${id}`, tx, iface, (s) => setStatus(id, s));
    if (!receipt) return false;
    const amount = receiptEvents(receipt, iface, row.model.shares, "RevenueClaimed").reduce((sum, e) => sum + e.amount, 0n);
    setStatus(id, { kind: "done", text: `Claimed ${formatAmount(amount, row.asset)}.`, hash: receipt.hash });
    return true;
  }

  async function claim(rows) {
    setClaiming(true);
    try {
      for (const row of rows) {
        const mined = await claimOne(row);
        await refresh(); // Claim is enabled again only on numbers read after the receipt
        if (!mined) break; // a refusal or a failure stops "claim all": the rest stay as they are
      }
    } finally {
      setClaiming(false);
    }
  }

  if (!account) {
    return html`<section aria-labelledby="holder-title"><h2 id="holder-title">My shares</h2>
      <p>Connect a wallet to see the models you hold shares of and claim the revenue they earned.</p></section>`;
  }
  const rows = holdings?.rows ?? [];
  const locked = claiming || !wallet.ready;
  const claimableRows = rows.filter((row) => row.claimable > 0n);
  return html`<section aria-labelledby="holder-title">
    <h2 id="holder-title">My shares</h2>
    <${Status} status=${error && { kind: "failed", text: `Could not read the chain: ${error.shortMessage ?? error.message}` }} />
    ${holdings === null
      ? html`<p role="status">Reading your shares from the chain…</p>`
      : rows.length === 0
        ? html`<p>This account holds no shares and no revenue in any model.</p>`
        : html`<table class="holdings">
            <caption>Shares and revenue of <span class="address">${account}</span> at block <span data-field="block">${holdings.block}</span></caption>
            <thead><tr><th scope="col">Model</th><th scope="col">Shares</th><th scope="col">Of supply</th><th scope="col">Claimable</th><th scope="col">Claimed so far</th><th scope="col"><span class="visually-hidden">Claim</span></th></tr></thead>
            <tbody>${rows.map((row) => {
              const id = row.model.id;
              return html`<tr data-model=${id}>
                <th scope="row">Model ${id}</th>
                <td data-field="shares" data-raw=${row.balance.toString()}>${trimUnits(row.balance, SHARE_DECIMALS)}</td>
                <td data-field="percent">${percentOf(row.balance, row.supply)}</td>
                <td data-field="claimable" data-raw=${row.claimable.toString()}>${formatAmount(row.claimable, row.asset)}</td>
                <td data-field="claimed" data-raw=${row.claimed.toString()}>${formatAmount(row.claimed, row.asset)}</td>
                <td>
                  <button type="button" disabled=${locked || row.claimable === 0n} onClick=${() => claim([row])}
                    aria-label=${`Claim ${formatAmount(row.claimable, row.asset)} from model ${id}`}>Claim</button>
                  <${Status} status=${statuses[id]} />
                </td>
              </tr>`;
            })}</tbody>
          </table>
          <div class="actions">
            <button type="button" disabled=${locked || claimableRows.length === 0} onClick=${() => claim(claimableRows)}>
              Claim all (${claimableRows.length} ${claimableRows.length === 1 ? "model" : "models"})
            </button>
            <button type="button" class="secondary" disabled=${!rows.some((row) => row.history.length)}
              onClick=${() => exportHistory(chain, account, rows)}>Export claim history (CSV)</button>
          </div>`}
  </section>`;
}
