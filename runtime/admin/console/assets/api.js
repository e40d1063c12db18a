// The console's only way to the server: the admin API (docs/admin-api.md),
// addressed relative to the console's own URL so that a reverse proxy may
// mount both under a prefix. The token travels only in the Authorization
// header, never in a URL, and lives in sessionStorage: this tab, until it
// closes or the operator signs out.

const TOKEN_KEY = "qrun.token";

export class APIError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export class API {
  constructor() {
    this.base = new URL("../", document.baseURI);
    this.token = "";
    try { this.token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { /* storage off */ }
    this.onUnauthorized = () => {};
  }

  setToken(t) {
    this.token = t;
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* storage off: the token lasts as long as the page */ }
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = "Bearer " + this.token;
    const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(new URL(path.replace(/^\//, ""), this.base), init);
    } catch (e) {
      throw new APIError(0, "qrun did not answer: " + e.message, null);
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) {
      const err = new APIError(resp.status, (data && data.error) || resp.statusText || "HTTP " + resp.status, data);
      if (resp.status === 401) this.onUnauthorized(err);
      throw err;
    }
    return data;
  }

  queues() { return this.request("GET", "/v1/queues").then((d) => d.queues || []); }
  consumers() { return this.request("GET", "/v1/consumers").then((d) => d.consumers || []); }
  schedules() { return this.request("GET", "/v1/schedules").then((d) => d.schedules || []); }
  kvStores() { return this.request("GET", "/v1/kv").then((d) => d.stores || []); }
  kvList(store, { prefix = "", after = "", limit = 50 } = {}) {
    const q = new URLSearchParams({ prefix, after, limit: String(limit) });
    return this.request("GET", `/v1/kv/${encodeURIComponent(store)}?${q}`);
  }
  kvKey(store, key) { return `/v1/kv/${encodeURIComponent(store)}/${encodeURIComponent(key)}`; }
  kvGet(store, key) { return this.request("GET", this.kvKey(store, key)); }
  kvPut(store, key, entry) { return this.request("PUT", this.kvKey(store, key), entry); }
  kvDelete(store, key) { return this.request("DELETE", this.kvKey(store, key)); }
  config() { return this.request("GET", "/v1/config"); }
  reload() { return this.request("POST", "/v1/reload"); }
  peek(queue, { cursor = "", limit = 50, inFlight = false } = {}) {
    const q = new URLSearchParams({ cursor, limit: String(limit), body_limit: "65536" });
    if (inFlight) q.set("in_flight", "true");
    return this.request("GET", `/v1/queues/${encodeURIComponent(queue)}/messages?${q}`);
  }
  purge(queue) { return this.request("POST", `/v1/queues/${encodeURIComponent(queue)}/purge`); }
  redrive(queue, ids) { return this.request("POST", `/v1/queues/${encodeURIComponent(queue)}/redrive`, ids && ids.length ? { ids } : {}); }
  pause(name) { return this.request("POST", `/v1/consumers/${encodeURIComponent(name)}/pause`); }
  resume(name) { return this.request("POST", `/v1/consumers/${encodeURIComponent(name)}/resume`); }
}
