// A browser wallet for the tests, injected before the page's scripts (Playwright add_init_script).
// It announces itself over EIP-6963 and forwards JSON-RPC to anvil, whose accounts are unlocked,
// so eth_sendTransaction really sends. The test steers it through window.testWallet:
//   mode "approve" (answer), "reject" (4001 to every request that needs the user),
//   "hold" (leave such requests unanswered until release()), "busy" (-32002, a request already open).
// The wallet starts on `walletChainId`; it knows the chains in `knownChains` and answers 4902 to a
// switch to any other (or `unknownChainError`: "nested" 4902 inside -32603 data, or bare "-32603").
(() => {
  const setup = window.__testWalletSetup;
  const USER_METHODS = new Set(["eth_requestAccounts", "wallet_switchEthereumChain", "wallet_addEthereumChain", "eth_sendTransaction"]);
  const listeners = { accountsChanged: new Set(), chainChanged: new Set() };
  const state = {
    mode: "approve",
    account: setup.account,
    connected: false,
    chainId: setup.walletChainId,
    knownChains: new Set(setup.knownChains),
    unknownChainError: setup.unknownChainError ?? "4902",
    held: [],
    log: [],
  };
  const rpcError = (code, message, data) => Object.assign(new Error(message), { code, data });
  const emit = (event, value) => listeners[event].forEach((fn) => fn(value));

  async function anvil(method, params) {
    const response = await fetch(setup.rpcUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method, params }),
    });
    const reply = await response.json();
    if (reply.error) throw rpcError(reply.error.code, reply.error.message, reply.error.data);
    return reply.result;
  }

  function unknownChain() {
    if (state.unknownChainError === "nested") return rpcError(-32603, "Unrecognized chain ID", { originalError: { code: 4902 } });
    if (state.unknownChainError === "-32603") return rpcError(-32603, "Internal JSON-RPC error");
    return rpcError(4902, "Unrecognized chain ID");
  }

  async function approved(method, params) {
    switch (method) {
      case "eth_requestAccounts":
        state.connected = true;
        return [state.account];
      case "wallet_switchEthereumChain": {
        const wanted = Number(params[0].chainId);
        if (!state.knownChains.has(wanted)) throw unknownChain();
        state.chainId = wanted;
        emit("chainChanged", "0x" + wanted.toString(16));
        return null;
      }
      case "wallet_addEthereumChain":
        state.knownChains.add(Number(params[0].chainId));
        return null;
      case "eth_sendTransaction":
        if (state.chainId !== setup.anvilChainId) throw rpcError(-32603, "the wallet is on another chain");
        return anvil(method, params);
    }
  }

  async function request({ method, params = [] }) {
    state.log.push({ method, params });
    if (method === "eth_chainId") return "0x" + state.chainId.toString(16);
    if (method === "eth_accounts") return state.connected ? [state.account] : [];
    if (!USER_METHODS.has(method)) return anvil(method, params);
    if (state.mode === "reject") throw rpcError(4001, "User rejected the request.");
    if (state.mode === "busy") throw rpcError(-32002, "Request already pending.");
    if (state.mode === "hold") {
      return new Promise((resolve, reject) => state.held.push(() => approved(method, params).then(resolve, reject)));
    }
    return approved(method, params);
  }

  const provider = {
    request,
    on: (event, fn) => listeners[event]?.add(fn),
    removeListener: (event, fn) => listeners[event]?.delete(fn),
  };
  const info = {
    uuid: "6b2f3a64-6f5e-4f47-9a59-4d1f7f0b7c10",
    name: "Test Wallet",
    icon: "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 8 8'%3E%3Crect width='8' height='8' fill='%23f2b632'/%3E%3C/svg%3E",
    rdns: "org.protocolmodels.testwallet",
  };
  const announce = () => window.dispatchEvent(new CustomEvent("eip6963:announceProvider", { detail: Object.freeze({ info, provider }) }));
  window.addEventListener("eip6963:requestProvider", announce);
  announce();

  window.testWallet = {
    state,
    setMode: (mode) => { state.mode = mode; },
    release: () => state.held.splice(0).forEach((run) => run()),
    switchAccount: (account) => { state.account = account; emit("accountsChanged", [account]); },
    switchChain: (chainId) => { state.chainId = chainId; emit("chainChanged", "0x" + chainId.toString(16)); },
    requests: (method) => state.log.filter((entry) => entry.method === method).map((entry) => entry.params),
  };
})();
