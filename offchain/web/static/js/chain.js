// The read path: every number on the page comes from the configured RPC, never from the wallet.
import { Contract, Interface, JsonRpcProvider, ZeroAddress } from "../vendor/ethers.min.js";

const LOG_SPAN = 50_000; // blocks per eth_getLogs call; halved when a node refuses a range

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

/** The chain as the page sees it: config.json, the ABIs, a read provider and contract handles. */
export async function loadChain() {
  const [config, abis] = await Promise.all([fetchJson("config.json"), fetchJson("abi.json")]);
  const provider = new JsonRpcProvider(config.rpcUrl, config.chainId, { staticNetwork: true });
  const iface = Object.fromEntries(Object.entries(abis).map(([name, abi]) => [name, new Interface(abi)]));
  const at = (name, address) => new Contract(address, abis[name], provider);
  return {
    config,
    provider,
    iface,
    registry: at("ModelRegistry", config.contracts.ModelRegistry),
    router: at("RevenueRouter", config.contracts.RevenueRouter),
    ledger: at("WorkLedger", config.contracts.WorkLedger),
    shares: (address) => at("ModelShares", address),
    token: (address) => at("IERC20Metadata", address),
    assets: new Map(),
    timestamps: new Map(),
  };
}

/** Every registered model, id order (IModelRegistry.Model plus its id). */
export async function listModels(chain) {
  const count = Number(await chain.registry.modelCount());
  const ids = Array.from({ length: count }, (_, i) => i + 1);
  const models = await Promise.all(ids.map((id) => chain.registry.getModel(id)));
  return models.map((m, i) => ({
    id: ids[i],
    creator: m.creator,
    shares: m.shares,
    numStages: Number(m.numStages),
    status: ["active", "paused", "retired"][Number(m.status)] ?? `status ${m.status}`,
    specCID: m.specCID,
    revenueAsset: m.revenueAsset,
    operator: m.operator,
    sharesPerWorkUnit: m.sharesPerWorkUnit,
  }));
}

/** The revenue asset of a model: ETH (the zero address) or an ERC-20's symbol and decimals. */
export async function assetOf(chain, address) {
  if (!chain.assets.has(address)) {
    const lookup =
      address === ZeroAddress
        ? Promise.resolve({ address, symbol: chain.config.nativeCurrency.symbol, decimals: 18 })
        : Promise.all([chain.token(address).symbol(), chain.token(address).decimals()]).then(([symbol, d]) => ({
            address,
            symbol,
            decimals: Number(d),
          }));
    chain.assets.set(address, lookup);
  }
  return chain.assets.get(address);
}

/** Logs of one event from the protocol's first block, in spans a public node accepts. */
export async function eventLogs(chain, contract, eventName, args = []) {
  const filter = await contract.filters[eventName](...args).getTopicFilter();
  const address = await contract.getAddress();
  const fragment = contract.interface.getEvent(eventName);
  const latest = await chain.provider.getBlockNumber();
  const logs = [];
  let from = chain.config.firstBlock;
  let span = LOG_SPAN;
  while (from <= latest) {
    const to = Math.min(from + span - 1, latest);
    try {
      logs.push(...(await chain.provider.getLogs({ address, topics: filter, fromBlock: from, toBlock: to })));
      from = to + 1;
    } catch (error) {
      if (span === 1) throw error;
      span = Math.max(1, Math.floor(span / 2));
    }
  }
  return logs.map((log) => ({
    args: contract.interface.decodeEventLog(fragment, log.data, log.topics),
    block: log.blockNumber,
    index: log.index,
    tx: log.transactionHash,
  }));
}

/** Unix seconds of each block (cached; one batched request for the new ones). */
export async function blockTimes(chain, blocks) {
  const wanted = [...new Set(blocks)].filter((b) => !chain.timestamps.has(b));
  const fetched = await Promise.all(wanted.map((b) => chain.provider.getBlock(b)));
  fetched.forEach((block, i) => chain.timestamps.set(wanted[i], block.timestamp));
  return new Map(blocks.map((b) => [b, chain.timestamps.get(b)]));
}

/** A receipt from the read RPC, polled; rejects after `timeoutMs`. */
export async function waitForReceipt(chain, hash, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const receipt = await chain.provider.getTransactionReceipt(hash);
    if (receipt) return receipt;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  throw new Error(`no receipt for ${hash} after ${timeoutMs / 1000} s`);
}

/** Decoded logs of one contract's event in a receipt. */
export function receiptEvents(receipt, contractIface, address, eventName) {
  const fragment = contractIface.getEvent(eventName);
  return receipt.logs
    .filter((log) => log.address.toLowerCase() === address.toLowerCase() && log.topics[0] === fragment.topicHash)
    .map((log) => contractIface.decodeEventLog(fragment, log.data, log.topics));
}

/** A contract call's revert explained by its custom error name, or null when it would succeed. */
export async function simulate(chain, tx, contractIface) {
  try {
    await chain.provider.call(tx);
    return null;
  } catch (error) {
    const data = error?.data ?? error?.info?.error?.data;
    const parsed = typeof data === "string" ? contractIface.parseError(data) : null;
    return parsed ? `${parsed.name}(${parsed.args.join(", ")})` : error.shortMessage ?? String(error.message);
  }
}
