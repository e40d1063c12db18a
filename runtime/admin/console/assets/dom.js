// DOM helpers. Everything from the server (message bodies above all) goes
// in as text nodes, never as HTML.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// setText changes a node's text only when it differs, so that polling does
// not disturb selection or screen readers.
export function setText(el, text) {
  const t = String(text);
  if (el.textContent !== t) el.textContent = t;
}

// keyed keeps container's children in step with items: one element per
// key, created once by create(item) and refreshed by update(el, item), so a
// focused button survives the next poll.
export function keyed(container, items, key, create, update) {
  const old = new Map();
  for (const el of container.children) if (el.dataset.key !== undefined) old.set(el.dataset.key, el);
  let prev = null;
  for (const item of items) {
    const k = String(key(item));
    let el = old.get(k);
    if (el) old.delete(k);
    else { el = create(item); el.dataset.key = k; }
    update(el, item);
    const want = prev ? prev.nextSibling : container.firstChild;
    if (want !== el) container.insertBefore(el, want);
    prev = el;
  }
  for (const el of old.values()) el.remove();
}

const nf = new Intl.NumberFormat();
export function num(n) { return n === undefined || n === null ? "–" : nf.format(n); }

export function rate(r) {
  if (r === undefined || r === null || Number.isNaN(r)) return "–";
  if (r === 0) return "0/s";
  if (r < 10) return r.toFixed(1) + "/s";
  return nf.format(Math.round(r)) + "/s";
}

export function ms(v) {
  if (v === undefined || v === null) return "–";
  if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " µs";
  if (v < 1000) return v.toFixed(v < 10 ? 1 : 0) + " ms";
  return (v / 1000).toFixed(2) + " s";
}

export function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1 << 20) return (n / 1024).toFixed(1) + " KiB";
  return (n / (1 << 20)).toFixed(1) + " MiB";
}

export function when(ts) {
  if (!ts) return "–";
  const d = new Date(ts);
  if (Number.isNaN(d.getTime()) || d.getFullYear() < 1971) return "–";
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

export function ago(ts) {
  const d = new Date(ts).getTime();
  if (!ts || Number.isNaN(d)) return "–";
  const s = Math.max(0, Math.round((Date.now() - d) / 1000));
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.floor(s / 60) + "m ago";
  if (s < 86400) return Math.floor(s / 3600) + "h ago";
  return Math.floor(s / 86400) + "d ago";
}

export function badge(text, kind) { return h("span", { class: "badge" + (kind ? " " + kind : "") , text }); }
