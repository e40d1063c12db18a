// The console's shell: sign-in, navigation, one live poll per open page,
// confirmation of every mutating action, and toasts. The pages live in
// pages/*.js; each is registered once in PAGES below.

import { API } from "./api.js";
import { h } from "./dom.js";
import { QueueHistory } from "./history.js";
import overview from "./pages/overview.js";
import queue from "./pages/queue.js";
import deadLetters from "./pages/deadletters.js";
import consumers from "./pages/consumers.js";
import config from "./pages/config.js";
import schedules from "./pages/schedules.js";
import kv from "./pages/kv.js";

// PAGES is the console's map. nav: shown in the top bar. A new page is a
// pages/*.js module exporting { id, title, nav, render } like the others,
// listed below; the navigation is built from this list, so no link exists
// before its page does.
const PAGES = [overview, queue, deadLetters, consumers, schedules, kv, config];

// POLL_MS is the live-update period: each open page makes at most one API
// request per period, and none while the tab is hidden.
const POLL_MS = 1000;

const api = new API();
const history = new QueueHistory(120);
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const live = document.getElementById("live");
const login = document.getElementById("login");
const loginForm = document.getElementById("login-form");
const loginToken = document.getElementById("login-token");
const loginError = document.getElementById("login-error");
const logout = document.getElementById("logout");
const dialog = document.getElementById("confirm");
const toasts = document.getElementById("toasts");

let current = null; // { page, ctx, cleanup[] }
let signedIn = false;

for (const p of PAGES.filter((p) => p.nav)) {
  nav.append(h("a", { href: "#/" + p.id, dataset: { page: p.id }, text: p.title }));
}

function parseHash() {
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decodeURIComponent);
  return { id: parts[0], params: parts.slice(1) };
}

function leave() {
  if (!current) return;
  current.alive = false;
  clearTimeout(current.timer);
  for (const f of current.cleanup) f();
  current = null;
}

function route() {
  if (!signedIn) return;
  leave();
  let { id, params } = parseHash();
  let page = PAGES.find((p) => p.id === id);
  if (!page) { page = PAGES[0]; params = []; }
  for (const a of nav.children) {
    if (a.dataset.page === (page.navAs || page.id)) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  const state = { alive: true, timer: 0, cleanup: [] };
  current = state;
  const ctx = {
    api, history, params, main, toast,
    // poll runs fn now and then every POLL_MS after the previous run
    // finished, while the page is open; fn makes one request.
    poll(fn) {
      const tick = async () => {
        if (!state.alive) return;
        if (!document.hidden) {
          try {
            await fn();
            live.className = "live on";
            // A counter the browser test waits on (never on time).
            live.dataset.polls = String(Number(live.dataset.polls || 0) + 1);
            live.title = "Live: updated " + new Date().toLocaleTimeString();
          } catch (e) {
            live.className = "live off";
            live.title = "Not updating: " + e.message;
          }
        }
        if (state.alive) state.timer = setTimeout(tick, POLL_MS);
      };
      tick();
    },
    onLeave(f) { state.cleanup.push(f); },
    alive: () => state.alive,
    act,
  };
  document.title = page.title + " · qrun";
  page.render(ctx);
}

// confirm asks before a mutating action; it resolves true only on the
// explicit confirm button.
function confirmAction({ title, text, ok = "Confirm", danger = true }) {
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const okBtn = document.getElementById("confirm-ok");
  okBtn.textContent = ok;
  okBtn.className = danger ? "danger" : "primary";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

// act runs a mutating API call after confirmation and reports the outcome.
// The API logs the call in its audit log (docs/admin-api.md#audit-log).
async function act({ confirm, run, done }) {
  if (!(await confirmAction(confirm))) return null;
  try {
    const res = await run();
    if (done) toast(done(res));
    return res;
  } catch (e) {
    if (e.status !== 401) toast(e.message, true);
    throw e;
  }
}

function toast(text, bad) {
  const t = h("div", { class: "toast" + (bad ? " bad" : ""), role: bad ? "alert" : "status", text });
  toasts.append(t);
  setTimeout(() => t.remove(), bad ? 9000 : 5000);
}

function showLogin(message) {
  signedIn = false;
  leave();
  main.replaceChildren();
  login.hidden = false;
  logout.hidden = true;
  loginError.hidden = !message;
  loginError.textContent = message || "";
  loginToken.value = "";
  loginToken.focus();
}

function signedInAs() {
  signedIn = true;
  login.hidden = true;
  logout.hidden = !api.token;
  route();
  main.focus();
}

api.onUnauthorized = () => {
  const had = api.token;
  api.setToken("");
  showLogin(had ? "The token was refused. Sign in again." : "");
};

loginForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = loginToken.value.trim();
  if (!token) return;
  api.setToken(token);
  const btn = document.getElementById("login-submit");
  btn.disabled = true;
  try {
    await api.request("GET", "/v1/queues");
    signedInAs();
  } catch (e) {
    if (e.status !== 401) showLogin(e.message);
  } finally {
    btn.disabled = false;
  }
});

logout.addEventListener("click", () => {
  api.setToken("");
  showLogin("Signed out.");
});

document.getElementById("theme-toggle").addEventListener("click", () => {
  const root = document.documentElement;
  const dark = root.dataset.theme ? root.dataset.theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  root.dataset.theme = dark ? "light" : "dark";
  try { localStorage.setItem("qrun.theme", root.dataset.theme); } catch (e) { /* storage off */ }
});

window.addEventListener("hashchange", route);

// Sign-in probe: one request tells whether a token is needed.
api.request("GET", "/v1/queues").then(signedInAs, (e) => {
  if (e.status !== 401) {
    main.replaceChildren(h("p", { class: "notice error", text: "qrun's admin API did not answer: " + e.message }));
  }
});
