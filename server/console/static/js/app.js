// The console's shell: who is signed in, the page navigation, and the hash router.

import { api, ApiError, apiKey, setApiKey } from "./api.js";
import { announce, clear, errorBox, h } from "./dom.js";
import * as chat from "./chat.js";
import * as documents from "./documents.js";
import * as sources from "./sources.js";
import * as adapters from "./adapters.js";
import * as health from "./health.js";

const PAGES = { chat, documents, sources, adapters, health };
const main = document.getElementById("main");
let session = null; // { principal, can(scope) }
let leavePage = null; // the current page's cleanup (timers, streams)

function can(principal, scope) { return principal.scopes.includes(scope); }

async function signIn() {
  try {
    const principal = await api("/v1/me");
    session = { principal, can: (scope) => can(principal, scope) };
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false;
    throw err;
  }
}

function renderWho() {
  const who = clear(document.getElementById("who"));
  if (!session) return;
  const p = session.principal;
  who.append(h("span", {}, p.auth ? `${p.name} · tenant ${p.tenant} · ${p.scopes.join(", ")}`
    : "no API keys configured (loopback only)"));
  if (p.auth) {
    who.append(h("button", { type: "button", class: "secondary", onclick: () => {
      setApiKey(""); session = null; start();
    } }, "Sign out"));
  }
  for (const link of document.querySelectorAll("#nav a[data-scope]")) {
    link.parentElement.hidden = !session.can(link.dataset.scope);
  }
}

function renderSignIn(message) {
  clear(main);
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const form = h("form", { class: "row", "aria-labelledby": "signin-title" },
    h("label", { for: "api-key" }, "API key", input),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setApiKey(input.value.trim());
    await start();
  });
  main.append(h("h1", { id: "signin-title" }, "Sign in"),
    h("p", {}, "Paste an API key. The console sends it as a Bearer token to this gateway's API and "
      + "keeps it in this tab only; it can do exactly what the key can do with curl."),
    message ? errorBox(message) : null, form);
  input.focus();
}

async function route() {
  if (leavePage) { leavePage(); leavePage = null; }
  const name = (location.hash.replace(/^#\/?/, "").split("/")[0]) || "chat";
  const page = PAGES[name] || chat;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  main.setAttribute("aria-busy", "true"); // screen readers wait for the page to be built
  try {
    leavePage = (await page.render(main, session)) || null;
  } catch (err) {
    main.append(errorBox(err));
  }
  main.setAttribute("aria-busy", "false");
  const heading = main.querySelector("h1");
  if (heading) { heading.tabIndex = -1; heading.focus(); }
  document.title = `${heading ? heading.textContent : "ragdock"} · ragdock console`;
  announce(`${heading ? heading.textContent : name} page`);
}

async function start() {
  let signedIn = false;
  try {
    signedIn = await signIn();
  } catch (err) {
    clear(main).append(h("h1", {}, "ragdock console"), errorBox(err));
    return;
  }
  renderWho();
  if (!signedIn) {
    renderSignIn(apiKey() ? "That key was refused (401): check it and try again." : null);
    return;
  }
  await route();
}

window.addEventListener("hashchange", () => { if (session) route(); });
start();
