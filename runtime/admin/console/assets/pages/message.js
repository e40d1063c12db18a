// A message as the peek API shows it: its facts, attributes, and its body
// as text, pretty JSON or a hex dump. Shared by the queue and dead-letter
// pages.

import { h, num, when, bytes, badge } from "../dom.js";

export function bodyBytes(m) {
  if (m.body_base64) {
    const bin = atob(m.body_base64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  return new TextEncoder().encode(m.body || "");
}

export function preview(m) {
  if (m.body_base64) return "binary, " + bytes(m.body_size);
  const t = (m.body || "").replace(/\s+/g, " ");
  return t.length > 80 ? t.slice(0, 80) + "…" : t || "(empty)";
}

export function hexdump(b) {
  const lines = [];
  for (let off = 0; off < b.length; off += 16) {
    const row = b.subarray(off, off + 16);
    const hex = Array.from(row, (x) => x.toString(16).padStart(2, "0")).join(" ");
    const asc = Array.from(row, (x) => (x >= 0x20 && x < 0x7f ? String.fromCharCode(x) : ".")).join("");
    lines.push(off.toString(16).padStart(8, "0") + "  " + hex.padEnd(47, " ") + "  " + asc);
  }
  return lines.join("\n") || "(empty)";
}

function views(m) {
  const b = bodyBytes(m);
  const text = m.body_base64 ? "(not UTF-8 text: see hex)" : m.body || "(empty)";
  let json = null;
  if (!m.body_base64) {
    try { json = JSON.stringify(JSON.parse(m.body), null, 2); } catch (e) { json = null; }
  }
  return {
    text,
    json: json === null ? "(not JSON)" : json,
    hex: hexdump(b),
    preferred: json !== null ? "json" : m.body_base64 ? "hex" : "text",
  };
}

export function messageDetail(m, onClose) {
  const v = views(m);
  const pre = h("pre", { class: "body", id: "message-body", tabindex: "0" });
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Body format" });
  const show = (k) => {
    pre.textContent = v[k];
    pre.className = "body" + (k === "hex" ? " hex" : "");
    for (const b of tabs.children) b.setAttribute("aria-selected", String(b.dataset.view === k));
  };
  for (const [k, label] of [["text", "Text"], ["json", "JSON"], ["hex", "Hex"]]) {
    tabs.append(h("button", { type: "button", role: "tab", dataset: { view: k }, onclick: () => show(k), text: label }));
  }
  show(v.preferred);
  const facts = [
    ["ID", h("code", { text: m.id })],
    m.state ? ["State", badge(m.state.replace("_", " "), m.state === "in_flight" ? "warn" : "")] : null,
    ["Attempt", `${num(m.attempt)} (${num(m.failures)} failed)`],
    ["Enqueued", when(m.enqueued_at)],
    ["Size", bytes(m.body_size) + (m.body_truncated ? " (shown cut)" : "")],
    m.content_type ? ["Content type", m.content_type] : null,
    m.correlation_id ? ["Correlation", m.correlation_id] : null,
    m.ordering_key ? ["Ordering key", m.ordering_key] : null,
    m.priority ? ["Priority", String(m.priority)] : null,
    m.dead_letter_reason ? ["Dead-letter reason", m.dead_letter_reason] : null,
    m.dead_letter_source ? ["Came from", h("a", { href: "#/queue/" + encodeURIComponent(m.dead_letter_source), text: m.dead_letter_source })] : null,
  ].filter(Boolean);
  const attrs = Object.entries(m.attributes || {}).sort(([a], [b]) => a.localeCompare(b));
  return h("aside", { class: "card detail", id: "message-detail", "aria-label": "Message " + m.id },
    h("div", { class: "row" }, h("h2", { text: "Message" }), h("span", { class: "spacer" }),
      h("button", { type: "button", class: "ghost", "aria-label": "Close message", onclick: onClose, text: "✕" })),
    h("dl", { class: "kv" }, facts.map(([k, val]) => [h("dt", { text: k }), h("dd", {}, val)])),
    h("h3", { text: "Attributes" }),
    attrs.length
      ? h("dl", { class: "kv mono" }, attrs.map(([k, val]) => [h("dt", { text: k }), h("dd", { text: val })]))
      : h("p", { class: "muted", text: "None." }),
    h("h3", { text: "Body" }),
    tabs,
    m.body_truncated ? h("p", { class: "muted", text: "The body is cut at 64 KiB here." }) : null,
    pre);
}
