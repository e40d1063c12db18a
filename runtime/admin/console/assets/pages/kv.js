// Key-value stores: the stores (GET /v1/kv), a store's keys page by page
// in key order with a prefix filter (GET /v1/kv/{store}?prefix=&after=,
// read on opening, Refresh, Next and Previous: not polled, so the list you
// read does not move), a value as text, JSON or hex with its version and
// expiry, and set and delete, each confirmed (the API audit-logs them).

import { h, setText, num, when, bytes } from "../dom.js";
import { bodyBytes, hexdump } from "./message.js";

const PAGE = 50;

function valueBytes(e) { return bodyBytes({ body: e.value, body_base64: e.value_base64 }); }

function preview(e) {
  if (e.value_base64) return "binary, " + bytes(valueBytes(e).length);
  const t = (e.value || "").replace(/\s+/g, " ");
  return t.length > 80 ? t.slice(0, 80) + "…" : t || "(empty)";
}

function expiry(e) { return e.expires_at ? when(e.expires_at) : "never"; }

export default {
  id: "kv",
  title: "Key-value",
  nav: true,
  render(ctx) {
    const store = ctx.params[0] || "";
    const stores = h("nav", { class: "row dlq-tabs", id: "kv-stores", "aria-label": "Stores" });
    const head = h("div", { class: "page-head" }, h("h1", { text: store ? "Key-value: " + store : "Key-value stores" }));
    ctx.main.append(head, stores);
    ctx.api.kvStores().then((list) => {
      if (!ctx.alive()) return;
      if (!list.length) {
        stores.replaceChildren(h("p", { class: "notice", id: "kv-none", text: "No key-value stores are configured (kv blocks, docs/state.md)." }));
        return;
      }
      if (!store) { location.replace("#/kv/" + encodeURIComponent(list[0].name)); return; }
      stores.replaceChildren(...list.map((s) => h("a", {
        href: "#/kv/" + encodeURIComponent(s.name), class: "badge" + (s.name === store ? " ok" : ""), dataset: { store: s.name }, "aria-current": s.name === store ? "page" : null,
        title: `engine ${s.engine}, values up to ${bytes(s.max_value_size)}`, text: s.name,
      })));
      const cur = list.find((s) => s.name === store);
      if (cur) head.append(h("span", { class: "muted", text: `engine ${cur.engine} · values up to ${bytes(cur.max_value_size)}` }));
    }, (e) => stores.replaceChildren(h("p", { class: "notice error", text: e.message })));
    if (!store) return;

    const prefix = h("input", { type: "search", id: "kv-prefix", placeholder: "key prefix", "aria-label": "Key prefix" });
    const prev = h("button", { type: "button", id: "kv-prev", text: "← Previous" });
    const next = h("button", { type: "button", id: "kv-next", text: "Next →" });
    const refresh = h("button", { type: "button", id: "kv-refresh", text: "Refresh" });
    const tbody = h("tbody", { id: "kv-body" });
    const status = h("p", { class: "muted", id: "kv-status", role: "status" });
    const setKey = h("input", { type: "text", id: "kv-set-key", required: true, maxlength: 512, "aria-label": "Key", placeholder: "key" });
    const setTTL = h("input", { type: "text", id: "kv-set-ttl", "aria-label": "Time to live", placeholder: "ttl (e.g. 10m; empty: none)" });
    const setValue = h("textarea", { id: "kv-set-value", rows: 3, "aria-label": "Value", placeholder: "value (text)" });
    const setForm = h("form", { class: "card kv-form", id: "kv-set", "aria-label": "Set a key" },
      h("h2", { text: "Set a key" }), h("div", { class: "row" }, setKey, setTTL), setValue,
      h("div", { class: "row" }, h("span", { class: "spacer" }), h("button", { type: "submit", class: "primary", id: "kv-set-submit", text: "Set…" })));
    const split = h("div", { class: "split solo" });
    split.append(h("div", {},
      h("div", { class: "row toolbar" }, h("h2", { text: "Keys" }), h("span", { class: "spacer" }), prefix, refresh, prev, next),
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Keys" },
        h("thead", {}, h("tr", {}, h("th", { text: "Key" }), h("th", { text: "Value" }), h("th", { class: "num", text: "Version" }),
          h("th", { class: "wide", text: "Expires" }))),
        tbody)),
      status, setForm));
    ctx.main.append(split);

    // Paging: afters[i] starts page i; the API hands out the next one.
    let afters = [""], pageNo = 0, nextAfter = "", selected = null;
    const closeDetail = () => {
      selected = null;
      const d = split.querySelector("#kv-detail");
      if (d) d.remove();
      split.className = "split solo";
      for (const tr of tbody.children) tr.classList.remove("selected");
    };
    const detail = (e) => {
      const b = valueBytes(e);
      let json = null;
      if (!e.value_base64) { try { json = JSON.stringify(JSON.parse(e.value), null, 2); } catch (err) { json = null; } }
      const v = { text: e.value_base64 ? "(not UTF-8 text: see hex)" : e.value || "(empty)", json: json === null ? "(not JSON)" : json, hex: hexdump(b) };
      const pre = h("pre", { class: "body", id: "kv-value", tabindex: "0" });
      const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Value format" });
      const show = (k) => {
        pre.textContent = v[k];
        pre.className = "body" + (k === "hex" ? " hex" : "");
        for (const t of tabs.children) t.setAttribute("aria-selected", String(t.dataset.view === k));
      };
      for (const [k, label] of [["text", "Text"], ["json", "JSON"], ["hex", "Hex"]]) {
        tabs.append(h("button", { type: "button", role: "tab", dataset: { view: k }, onclick: () => show(k), text: label }));
      }
      show(json !== null ? "json" : e.value_base64 ? "hex" : "text");
      const del = h("button", { type: "button", class: "danger", id: "kv-delete", text: "Delete…" });
      del.addEventListener("click", () => ctx.act({
        confirm: { title: `Delete ${e.key}?`, text: `The key ${e.key} is deleted from ${store} for good. A delivery that read it and has not committed yet is redelivered.`, ok: "Delete" },
        run: () => ctx.api.kvDelete(store, e.key).then(() => true),
        done: () => `Deleted ${e.key} from ${store}.`,
      }).then((r) => { if (r !== null) { closeDetail(); load(); } }, () => {}));
      const edit = h("button", { type: "button", id: "kv-edit", text: "Edit", disabled: !!e.value_base64 });
      edit.addEventListener("click", () => { setKey.value = e.key; setValue.value = e.value || ""; setValue.focus(); });
      return h("aside", { class: "card detail", id: "kv-detail", "aria-label": "Key " + e.key },
        h("div", { class: "row" }, h("h2", { text: "Key" }), h("span", { class: "spacer" }),
          h("button", { type: "button", class: "ghost", "aria-label": "Close key", onclick: closeDetail, text: "✕" })),
        h("dl", { class: "kv" },
          h("dt", { text: "Key" }), h("dd", {}, h("code", { dataset: { field: "key" }, text: e.key })),
          h("dt", { text: "Version" }), h("dd", { dataset: { field: "version" }, text: String(e.version) }),
          h("dt", { text: "Expires" }), h("dd", { dataset: { field: "expires" }, text: expiry(e) }),
          h("dt", { text: "Size" }), h("dd", { text: bytes(b.length) })),
        h("div", { class: "row" }, edit, del),
        h("h3", { text: "Value" }), tabs, pre);
    };
    const open = async (key) => {
      try {
        const e = await ctx.api.kvGet(store, key);
        if (!ctx.alive()) return;
        closeDetail();
        selected = key;
        for (const tr of tbody.children) if (tr.dataset.key === key) tr.classList.add("selected");
        split.className = "split";
        const d = detail(e);
        split.append(d);
        d.querySelector("button").focus();
      } catch (err) {
        ctx.toast(err.status === 404 ? `${key} is gone (deleted or expired).` : err.message, true);
      }
    };
    const load = async () => {
      refresh.disabled = prev.disabled = next.disabled = true;
      try {
        const res = await ctx.api.kvList(store, { prefix: prefix.value, after: afters[pageNo], limit: PAGE });
        if (!ctx.alive()) return;
        const entries = res.entries || [];
        nextAfter = res.next || "";
        tbody.replaceChildren();
        for (const e of entries) {
          const tr = h("tr", { dataset: { key: e.key } },
            h("td", {}, h("button", { type: "button", class: "link mono", onclick: () => open(e.key), text: e.key })),
            h("td", { class: "preview", text: preview(e) }),
            h("td", { class: "num", text: num(e.version) }),
            h("td", { class: "wide" + (e.expires_at ? "" : " muted"), title: e.expires_at || "", text: expiry(e) }));
          if (e.key === selected) tr.classList.add("selected");
          tbody.append(tr);
        }
        if (!entries.length) tbody.append(h("tr", {}, h("td", { colspan: 4, class: "empty", text: pageNo ? "No more keys." : prefix.value ? "No key begins with that prefix." : "The store is empty." })));
        setText(status, `Page ${pageNo + 1}` + (entries.length ? `: ${entries.length} keys` : "") + (nextAfter ? "" : " (the last)") +
          ". In key order; not live: Refresh to look again.");
        prev.disabled = pageNo === 0;
        next.disabled = !nextAfter;
      } catch (e) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "empty", text: e.message })));
        prev.disabled = pageNo === 0;
      } finally {
        refresh.disabled = false;
      }
    };
    const restart = () => { afters = [""]; pageNo = 0; load(); };
    refresh.addEventListener("click", load);
    prefix.addEventListener("change", restart);
    next.addEventListener("click", () => { if (!nextAfter) return; afters[pageNo + 1] = nextAfter; pageNo++; load(); });
    prev.addEventListener("click", () => { if (pageNo > 0) { pageNo--; load(); } });
    setForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = setKey.value, value = setValue.value, ttl = setTTL.value.trim();
      if (!key) return;
      ctx.act({
        confirm: { title: `Set ${key}?`, text: `${key} in ${store} becomes the ${bytes(new TextEncoder().encode(value).length)} value given` + (ttl ? `, expiring after ${ttl}` : ", without expiry") + ". A delivery that read the key and has not committed yet is redelivered.", ok: "Set", danger: false },
        run: () => ctx.api.kvPut(store, key, { value, ttl: ttl || undefined }),
        done: (e) => `Set ${e.key} (version ${e.version}).`,
      }).then((e) => { if (e) { load(); open(e.key); } }, () => {});
    });
    load();
  },
};
