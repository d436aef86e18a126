// The customer's page: quote a completion at a gateway, pay it from the wallet, read the answer.
// A paid ticket is kept (in this browser) until its completion arrives, so a gateway failure
// after payment is retried with the same ticket and never paid twice.
import { ZeroAddress, getAddress } from "../vendor/ethers.min.js";
import { html, useEffect, useState } from "../vendor/preact-htm.js";
import { assetOf, listModels } from "./chain.js";
import { formatAmount, shortHash } from "./format.js";
import { Status, useWallet } from "./ui.js";
import { transact } from "./wallet.js";

const TICKETS = "pm.tickets";

function savedTickets(chainId) {
  const all = JSON.parse(localStorage.getItem(TICKETS) ?? "[]");
  return all.filter((ticket) => ticket.chainId === chainId);
}

function storeTickets(chainId, tickets) {
  const others = JSON.parse(localStorage.getItem(TICKETS) ?? "[]").filter((t) => t.chainId !== chainId);
  localStorage.setItem(TICKETS, JSON.stringify([...others, ...tickets]));
}

async function gatewayCall(url, body) {
  let response;
  try {
    response = await fetch(url, { method: body ? "POST" : "GET", headers: body ? { "Content-Type": "application/json" } : {}, body: body && JSON.stringify(body) });
  } catch (error) {
    return { status: 0, body: { error: `the gateway cannot be reached (${error.message})` } };
  }
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text), retryAfter: response.headers.get("Retry-After") };
  } catch {
    return { status: response.status, body: { error: `HTTP ${response.status}` } };
  }
}

/** Every model a configured gateway serves, checked against the registry (asset and router). */
async function readOffers(chain) {
  const models = new Map((await listModels(chain)).map((model) => [model.id, model]));
  const router = getAddress(chain.config.contracts.RevenueRouter);
  const offers = [];
  const problems = [];
  for (const gateway of chain.config.gateways) {
    const reply = await gatewayCall(`${gateway}/v1/models`);
    if (reply.status !== 200) {
      problems.push(`${gateway}: ${reply.body.error}`);
      continue;
    }
    for (const record of reply.body.data) {
      const model = models.get(record.id);
      if (!model || getAddress(record.router) !== router || getAddress(record.revenue_asset) !== model.revenueAsset) {
        problems.push(`${gateway}: model ${record.id} does not match this chain's registry and router; not offered`);
        continue;
      }
      offers.push({ gateway, model, record, asset: await assetOf(chain, model.revenueAsset) });
    }
  }
  return { offers, problems };
}

export function Playground({ chain, wallet }) {
  useWallet(wallet);
  const chainId = chain.config.chainId;
  const [offers, setOffers] = useState(null);
  const [choice, setChoice] = useState(0);
  const [prompt, setPrompt] = useState("");
  const [maxTokens, setMaxTokens] = useState(16);
  const [quote, setQuote] = useState(null);
  const [status, setStatus] = useState(null);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  const [tickets, setTickets] = useState(() => savedTickets(chainId));

  useEffect(() => {
    readOffers(chain).then(setOffers, (error) => setOffers({ offers: [], problems: [error.message] }));
  }, [chain]);
  useEffect(() => storeTickets(chainId, tickets), [tickets]);

  const offer = offers?.offers[choice];
  const changed = (setter) => (event) => {
    setter(event.target.value);
    setQuote(null);
  };

  async function getQuote(event) {
    event.preventDefault();
    setResult(null);
    setBusy(true);
    const reply = await gatewayCall(`${offer.gateway}/v1/quote`, { model: offer.model.id, prompt, max_tokens: Number(maxTokens) });
    setBusy(false);
    if (reply.status !== 200) {
      setStatus({ kind: "failed", text: `No quote: ${reply.body.error}` });
      return;
    }
    const q = reply.body;
    if (q.model !== offer.model.id || getAddress(q.router) !== getAddress(chain.config.contracts.RevenueRouter) || BigInt(q.amount) <= 0n) {
      setStatus({ kind: "failed", text: "The gateway's quote names another model or router: not paying it." });
      return;
    }
    setQuote({ ...q, amount: BigInt(q.amount), offer, prompt });
    setStatus(null);
  }

  /** Completion for a paid ticket; on failure the ticket stays listed for a retry. */
  async function redeem(ticket) {
    setStatus({ kind: "pending", text: `Paid; the gateway is computing the completion (request ${shortHash(ticket.requestId)})…` });
    const reply = await gatewayCall(`${ticket.gateway}/v1/completions`, { model: ticket.model, prompt: ticket.prompt, max_tokens: ticket.maxTokens, ticket: ticket.ticket });
    if (reply.status === 200) {
      setTickets((all) => all.filter((t) => t.ticket !== ticket.ticket));
      setResult({ prompt: ticket.prompt, text: reply.body.text, round: reply.body.round, usage: reply.body.usage });
      setStatus({ kind: "done", text: `Completed by model ${ticket.model} with the weights of round ${reply.body.round}.` });
      return;
    }
    if (reply.status === 409) setTickets((all) => all.filter((t) => t.ticket !== ticket.ticket));
    const later = reply.retryAfter ? ` (the gateway suggests ${reply.retryAfter} s)` : "";
    const keep = reply.status === 409 ? "" : ` Your payment is kept: Retry redeems the same ticket${later}, without paying again.`;
    setStatus({ kind: "failed", text: `The gateway did not return the completion: ${reply.body.error}.${keep}` });
  }

  async function pay() {
    const { offer: paid, amount } = quote;
    setBusy(true);
    setResult(null);
    try {
      const router = chain.config.contracts.RevenueRouter;
      const routerIface = chain.iface.RevenueRouter;
      const payData = routerIface.encodeFunctionData("payForInference", [paid.model.id, quote.requestId, amount]);
      const eth = paid.model.revenueAsset === ZeroAddress;
      if (!eth) {
        const token = chain.token(paid.model.revenueAsset);
        if ((await token.allowance(wallet.account, router)) < amount) {
          const tokenIface = chain.iface.IERC20Metadata;
          const approve = { to: paid.model.revenueAsset, data: tokenIface.encodeFunctionData("approve", [router, amount]) };
          const label = `approve ${formatAmount(amount, paid.asset)} for the router`;
          if (!(await transact(chain, wallet, label, approve, tokenIface, setStatus))) return;
        }
      }
      const payment = { to: router, data: payData, value: eth ? amount : 0n };
      const receipt = await transact(chain, wallet, `pay ${formatAmount(amount, paid.asset)}`, payment, routerIface, setStatus);
      if (!receipt) return;
      const ticket = {
        chainId, gateway: paid.gateway, model: paid.model.id, prompt: quote.prompt, maxTokens: quote.max_tokens,
        ticket: quote.ticket, requestId: quote.requestId, amount: amount.toString(), paidTx: receipt.hash,
      };
      setTickets((all) => [...all, ticket]);
      setQuote(null);
      await redeem(ticket);
    } catch (error) {
      setStatus({ kind: "failed", text: `Could not pay: ${error.shortMessage ?? error.message}` });
    } finally {
      setBusy(false);
    }
  }

  async function retry(ticket) {
    setBusy(true);
    try {
      await redeem(ticket);
    } finally {
      setBusy(false);
    }
  }

  if (offers === null) return html`<section aria-labelledby="play-title"><h2 id="play-title">Playground</h2><p role="status">Asking the gateways what they serve…</p></section>`;
  return html`<section aria-labelledby="play-title">
    <h2 id="play-title">Playground</h2>
    ${offers.problems.map((problem) => html`<p class="status warning">${problem}</p>`)}
    ${offers.offers.length === 0
      ? html`<p>No gateway is configured or reachable: start the app with <code>--gateway URL</code>.</p>`
      : html`<form class="playground" onSubmit=${getQuote}>
          <label for="play-model">Model</label>
          <select id="play-model" value=${choice} onChange=${changed((v) => setChoice(Number(v)))}>
            ${offers.offers.map((o, i) => html`<option value=${i}>Model ${o.model.id} at ${o.gateway} (${o.asset.symbol})</option>`)}
          </select>
          <label for="play-prompt">Prompt</label>
          <textarea id="play-prompt" rows="3" required value=${prompt} onInput=${changed(setPrompt)}></textarea>
          <label for="play-tokens">Tokens to generate (at most ${offer.record.max_tokens})</label>
          <input id="play-tokens" type="number" min="1" max=${offer.record.max_tokens} required value=${maxTokens} onInput=${changed(setMaxTokens)} />
          <button type="submit" disabled=${busy || !prompt}>Get a quote</button>
        </form>`}
    ${quote
      ? html`<div class="quote">
          <p>Price: <strong data-field="quote-amount" data-raw=${quote.amount.toString()}>${formatAmount(quote.amount, quote.offer.asset)}</strong>
            for ${quote.prompt_tokens} prompt tokens and ${quote.max_tokens} generated (request <span title=${quote.requestId}>${shortHash(quote.requestId)}</span>).</p>
          <button type="button" disabled=${busy || !wallet.ready} onClick=${pay}>Pay ${formatAmount(quote.amount, quote.offer.asset)} and run</button>
          ${wallet.ready ? null : html`<p>Connect a wallet on ${chain.config.chainName} to pay.</p>`}
        </div>`
      : null}
    <${Status} status=${status} />
    ${result
      ? html`<figure class="completion"><figcaption>Completion</figcaption><pre><span class="prompt">${result.prompt}</span><output data-field="completion">${result.text}</output></pre></figure>`
      : null}
    ${tickets.length
      ? html`<section aria-labelledby="tickets-title"><h3 id="tickets-title">Paid, not yet answered</h3><ul class="tickets">
          ${tickets.map((t) => html`<li>Model ${t.model}: “${t.prompt}” (request <span title=${t.requestId}>${shortHash(t.requestId)}</span>)
            <button type="button" disabled=${busy} onClick=${() => retry(t)} aria-label=${`Retry request ${t.requestId} without paying again`}>Retry</button></li>`)}
        </ul></section>`
      : null}
  </section>`;
}
