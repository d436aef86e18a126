// The wallet only signs: it is found over EIP-6963 (window.ethereum as a fallback), asked for an
// account, moved to the app's chain, and handed transactions; the page reads through its own RPC.
import { toQuantity } from "../vendor/ethers.min.js";
import { simulate, waitForReceipt } from "./chain.js";

const LAST_WALLET = "pm.wallet"; // rdns of the wallet connected last (restored without a prompt)
const USER_REJECTED = 4001;
const REQUEST_PENDING = -32002;
const UNKNOWN_CHAIN = 4902;
const INTERNAL_ERROR = -32603;

/** What a wallet error means to the person in front of it: {kind, text}. */
function explain(error, action) {
  const code = error?.code ?? error?.info?.error?.code;
  if (code === USER_REJECTED || code === "ACTION_REJECTED") {
    return { kind: "rejected", text: `You rejected the request in your wallet (${action}); nothing was sent.` };
  }
  if (code === REQUEST_PENDING) {
    return {
      kind: "pending",
      text: `Your wallet already has a request from this page waiting: open the wallet and approve or reject it, then ${action} again.`,
    };
  }
  return { kind: "failed", text: `${action} failed: ${error?.message ?? String(error)}` };
}

function unknownChain(error) {
  const nested = error?.data?.originalError?.code ?? error?.data?.code;
  return error?.code === UNKNOWN_CHAIN || nested === UNKNOWN_CHAIN || error?.code === INTERNAL_ERROR;
}

/** The wallets on offer, the connected one, its account and chain; `subscribe` re-renders on any change. */
export class Wallet {
  constructor(config) {
    this.config = config;
    this.chainHex = toQuantity(config.chainId);
    this.found = new Map(); // uuid -> {info, provider}
    this.provider = null;
    this.info = null;
    this.account = null;
    this.chainId = null;
    this.busy = null; // what the wallet is being asked right now
    this.notice = null; // {kind, text} of the last wallet interaction
    this.listeners = new Set();
    this.onAccounts = (accounts) => this.#accountsChanged(accounts);
    this.onChain = (chainId) => this.#update({ chainId: Number(chainId) });
    window.addEventListener("eip6963:announceProvider", (event) => this.#announced(event.detail));
    window.dispatchEvent(new Event("eip6963:requestProvider"));
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  #update(changes) {
    Object.assign(this, changes);
    for (const listener of this.listeners) listener(this);
  }

  /** Wallets that announced themselves, or the legacy injected one when none did. */
  get wallets() {
    if (this.found.size) return [...this.found.values()];
    if (window.ethereum) return [{ info: { uuid: "injected", name: "Browser wallet", rdns: "injected" }, provider: window.ethereum }];
    return [];
  }

  get onRightChain() {
    return this.chainId === this.config.chainId;
  }

  get ready() {
    return Boolean(this.account) && this.onRightChain;
  }

  #announced(detail) {
    if (!detail?.info?.uuid || typeof detail.provider?.request !== "function") return;
    this.found.set(detail.info.uuid, detail);
    this.#update({});
    if (!this.provider && detail.info.rdns === localStorage.getItem(LAST_WALLET)) this.#restore(detail);
  }

  async #restore(detail) {
    try {
      const accounts = await detail.provider.request({ method: "eth_accounts" });
      if (accounts.length) await this.#attach(detail, accounts);
    } catch {
      // A wallet that will not say which accounts it shares stays disconnected until asked.
    }
  }

  async #attach({ info, provider }, accounts) {
    const chainId = Number(await provider.request({ method: "eth_chainId" }));
    this.#detach();
    provider.on?.("accountsChanged", this.onAccounts);
    provider.on?.("chainChanged", this.onChain);
    localStorage.setItem(LAST_WALLET, info.rdns);
    this.#update({ provider, info, account: accounts[0] ?? null, chainId });
  }

  #detach() {
    this.provider?.removeListener?.("accountsChanged", this.onAccounts);
    this.provider?.removeListener?.("chainChanged", this.onChain);
  }

  #accountsChanged(accounts) {
    if (accounts.length) this.#update({ account: accounts[0] });
    else this.disconnect();
  }

  /** Run one wallet request with `busy` set: {value} or, when the wallet refused, {notice}. */
  async #ask(action, request) {
    this.#update({ busy: action, notice: null });
    try {
      return { value: await request() };
    } catch (error) {
      return { notice: explain(error, action) };
    } finally {
      this.#update({ busy: null });
    }
  }

  /** #ask for requests about the wallet itself: a refusal is shown in the wallet bar. */
  async #askHere(action, request) {
    const { notice } = await this.#ask(action, request);
    if (notice) this.#update({ notice });
  }

  async connect(uuid) {
    const detail = this.wallets.find((wallet) => wallet.info.uuid === uuid);
    await this.#askHere("connect", async () => {
      const accounts = await detail.provider.request({ method: "eth_requestAccounts" });
      await this.#attach(detail, accounts);
    });
  }

  disconnect() {
    this.#detach();
    localStorage.removeItem(LAST_WALLET);
    this.#update({ provider: null, info: null, account: null, chainId: null, notice: null });
  }

  /** wallet_switchEthereumChain; a wallet that does not know the chain gets wallet_addEthereumChain first. */
  async switchChain() {
    const { config, chainHex } = this;
    const switchTo = () => this.provider.request({ method: "wallet_switchEthereumChain", params: [{ chainId: chainHex }] });
    await this.#askHere("switch network", async () => {
      try {
        await switchTo();
      } catch (error) {
        if (!unknownChain(error)) throw error;
        await this.provider.request({
          method: "wallet_addEthereumChain",
          params: [
            {
              chainId: chainHex,
              chainName: config.chainName,
              nativeCurrency: config.nativeCurrency,
              rpcUrls: [config.rpcUrl],
            },
          ],
        });
        await switchTo();
      }
      this.#update({ chainId: Number(await this.provider.request({ method: "eth_chainId" })) });
    });
  }

  /** eth_sendTransaction from the connected account: {value: hash} or {notice} when it was refused. */
  async send(action, { to, data, value = 0n }) {
    if (!this.ready) return { notice: { kind: "failed", text: "Connect a wallet on the app's network first." } };
    const tx = { from: this.account, to, data, value: toQuantity(value) };
    return this.#ask(action, () => this.provider.request({ method: "eth_sendTransaction", params: [tx] }));
  }
}

/**
 * One transaction from the wallet, reported step by step through `onStatus({kind, text, hash})`:
 * simulated first on the read RPC (a revert is explained by its custom error, and the wallet is
 * not asked), then signed by the wallet, then mined. Resolves to the receipt, or null.
 */
export async function transact(chain, wallet, action, tx, contractIface, onStatus) {
  const revert = await simulate(chain, { from: wallet.account, ...tx }, contractIface);
  if (revert) {
    onStatus({ kind: "failed", text: `${action} would fail: ${revert}. Nothing was sent.` });
    return null;
  }
  onStatus({ kind: "wallet", text: `Confirm ${action} in your wallet…` });
  const { value: hash, notice } = await wallet.send(action, tx);
  if (notice) {
    onStatus(notice);
    return null;
  }
  onStatus({ kind: "pending", text: `${action}: transaction sent, waiting for it to be mined…`, hash });
  let receipt;
  try {
    receipt = await waitForReceipt(chain, hash);
  } catch (error) {
    onStatus({ kind: "failed", text: `${action}: ${error.message}; look the transaction up before sending it again.`, hash });
    return null;
  }
  if (receipt.status !== 1) {
    onStatus({ kind: "failed", text: `${action}: the transaction reverted.`, hash });
    return null;
  }
  return receipt;
}
