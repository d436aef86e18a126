// Pieces every view shares: re-rendering on wallet changes and new blocks, status lines, the wallet bar.
import { html, useEffect, useRef, useState } from "../vendor/preact-htm.js";
import { shortAddress, shortHash } from "./format.js";

const BLOCK_POLL_MS = 4000;

/** Re-render the calling component whenever the wallet's state changes. */
export function useWallet(wallet) {
  const [, setVersion] = useState(0);
  useEffect(() => wallet.subscribe(() => setVersion((n) => n + 1)), [wallet]);
  return wallet;
}

/** The latest block number, polled from the read RPC (null until the first answer). */
function useBlock(chain) {
  const [block, setBlock] = useState(null);
  useEffect(() => {
    let alive = true;
    const poll = () =>
      chain.provider.getBlockNumber().then(
        (number) => alive && setBlock(number),
        () => {}, // a missed poll is retried at the next tick
      );
    poll();
    const timer = setInterval(poll, BLOCK_POLL_MS);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [chain]);
  return block;
}

/**
 * `read()` for `key` (null: nothing to read), again at every new block and on `refresh()`. Reads run
 * one at a time and are never cancelled: under load a read may outlast a block, and cancelling it
 * for the next one would never show anything. Requests that arrive while one runs collapse into
 * one read after it, so `refresh()` resolves after a read that started after the call.
 */
export function useChainRead(chain, key, read) {
  const block = useBlock(chain);
  const [result, setResult] = useState(null); // {key, data, error}
  const latest = useRef({ key, read });
  latest.current = { key, read };
  const reads = useRef({ running: null, queued: null });

  function start() {
    const { key: readKey, read: readNow } = latest.current;
    const run = readNow().then(
      (data) => latest.current.key === readKey && setResult({ key: readKey, data, error: null }),
      (error) => latest.current.key === readKey && setResult((last) => ({ key: readKey, data: last?.key === readKey ? last.data : null, error })),
    );
    reads.current.running = run.then(() => {
      const next = reads.current.queued;
      reads.current = { running: null, queued: null };
      next?.start();
    });
    return run;
  }

  function refresh() {
    const { running, queued } = reads.current;
    if (!running) return start();
    if (!queued) {
      let done;
      const promise = new Promise((resolve) => (done = resolve));
      reads.current.queued = { promise, start: () => start().then(done) };
    }
    return reads.current.queued.promise;
  }

  useEffect(() => {
    if (key !== null && block !== null) refresh();
  }, [key, block]);
  const current = result?.key === key ? result : null;
  return { data: current?.data ?? null, error: current?.error ?? null, refresh };
}

/** One line saying how an action went; errors are announced at once, the rest politely. */
export function Status({ status }) {
  if (!status) return null;
  const urgent = status.kind === "failed";
  return html`<p class="status ${status.kind}" role=${urgent ? "alert" : "status"}>
    ${status.text}${status.hash ? html` <span class="hash" title=${status.hash}>tx ${shortHash(status.hash)}</span>` : null}
  </p>`;
}

export function Address({ address }) {
  return html`<span class="address" title=${address}>${shortAddress(address)}</span>`;
}

/** Connect (one button per wallet found), account, network check and switch, wallet messages. */
export function WalletBar({ wallet }) {
  useWallet(wallet);
  const { config } = wallet;
  const waiting = wallet.busy ? html`<p class="status wallet" role="status">Waiting for your wallet (${wallet.busy})…</p>` : null;
  const notice = wallet.notice ? html`<${Status} status=${wallet.notice} />` : null;
  if (!wallet.account) {
    const wallets = wallet.wallets;
    return html`<section class="wallet-bar" aria-label="Wallet">
      ${wallets.length
        ? wallets.map(
            ({ info }) => html`<button type="button" disabled=${Boolean(wallet.busy)} onClick=${() => wallet.connect(info.uuid)}>
              ${info.icon ? html`<img src=${info.icon} alt="" width="20" height="20" />` : null} Connect ${info.name}
            </button>`,
          )
        : html`<p>No browser wallet found. Install one (MetaMask, Rabby, Coinbase Wallet…) to claim or pay; the dashboard works without one.</p>`}
      ${waiting}${notice}
    </section>`;
  }
  return html`<section class="wallet-bar" aria-label="Wallet">
    <p>
      ${wallet.info.name}: <${Address} address=${wallet.account} />
      ${wallet.onRightChain ? html` on ${config.chainName}` : null}
    </p>
    ${wallet.onRightChain
      ? null
      : html`<p class="status warning" role="status">Your wallet is on chain ${wallet.chainId}; this app reads chain ${config.chainId}.</p>
          <button type="button" disabled=${Boolean(wallet.busy)} onClick=${() => wallet.switchChain()}>Switch to ${config.chainName}</button>`}
    <button type="button" class="secondary" onClick=${() => wallet.disconnect()}>Disconnect</button>
    ${waiting}${notice}
  </section>`;
}
