// Entry point: read config.json, find wallets, and show one of three views chosen by the URL's hash.
import { html, render, useEffect, useState } from "../vendor/preact-htm.js";
import { loadChain } from "./chain.js";
import { Dashboard } from "./dashboard.js";
import { HolderView } from "./holder.js";
import { Playground } from "./playground.js";
import { WalletBar } from "./ui.js";
import { Wallet } from "./wallet.js";

const VIEWS = {
  holder: { label: "My shares", component: HolderView },
  playground: { label: "Playground", component: Playground },
  dashboard: { label: "Dashboard", component: Dashboard },
};

const currentView = () => {
  const name = location.hash.replace(/^#\/?/, "");
  return name in VIEWS ? name : "holder";
};

function App({ chain, wallet }) {
  const [view, setView] = useState(currentView);
  useEffect(() => {
    const follow = () => setView(currentView());
    window.addEventListener("hashchange", follow);
    return () => window.removeEventListener("hashchange", follow);
  }, []);
  useEffect(() => {
    document.title = `${VIEWS[view].label} · Protocol Models`;
  }, [view]);
  const View = VIEWS[view].component;
  return html`<header>
      <h1>Protocol Models</h1>
      <nav aria-label="Views"><ul>
        ${Object.entries(VIEWS).map(([name, { label }]) => html`<li><a href=${`#/${name}`} aria-current=${name === view ? "page" : null}>${label}</a></li>`)}
      </ul></nav>
      <${WalletBar} wallet=${wallet} />
    </header>
    <main><${View} chain=${chain} wallet=${wallet} /></main>
    <footer>Chain ${chain.config.chainId} · registry <code>${chain.config.contracts.ModelRegistry}</code> · reads through ${chain.config.rpcUrl}</footer>`;
}

async function main() {
  const root = document.getElementById("app");
  root.replaceChildren(); // the boot message goes; preact renders into an empty element
  try {
    const chain = await loadChain();
    render(html`<${App} chain=${chain} wallet=${new Wallet(chain.config)} />`, root);
  } catch (error) {
    render(html`<p class="status failed" role="alert">The app could not start: ${error.message}</p>`, root);
  }
}

main();
