// Overview: every queue's depth and states, enqueue and ack rates as live
// charts, and the dead letters waiting for each queue. One GET /v1/queues
// per second.

import { h, keyed, setText, num, rate, badge } from "../dom.js";
import { LineChart } from "../chart.js";

function stat(label, id) {
  return h("div", { class: "card stat" }, h("div", { class: "label", text: label }), h("div", { class: "value", id, text: "–" }));
}

export default {
  id: "overview",
  title: "Overview",
  nav: true,
  render(ctx) {
    const depth = new LineChart({ title: "Messages waiting", series: [{ name: "depth" }, { name: "ready" }, { name: "in flight" }, { name: "delayed" }] });
    const rates = new LineChart({ title: "Throughput (messages/s)", series: [{ name: "enqueued" }, { name: "acked" }] });
    const tbody = h("tbody", { id: "queues-body" });
    const sparks = new Map();
    ctx.main.append(
      h("div", { class: "page-head" }, h("h1", { text: "Overview" })),
      h("section", { class: "grid stats", "aria-label": "Totals" },
        stat("Depth", "total-depth"), stat("In flight", "total-inflight"), stat("Enqueued", "total-enq"),
        stat("Acked", "total-ack"), stat("Dead letters", "total-dead")),
      h("div", { class: "grid charts" }, depth.el, rates.el),
      h("div", { class: "table-wrap" },
        h("table", { "aria-label": "Queues" },
          h("thead", {}, h("tr", {},
            h("th", { text: "Queue" }), h("th", { class: "wide", text: "Engine" }), h("th", { class: "num", text: "Depth" }),
            h("th", { class: "num", text: "Ready" }), h("th", { class: "num", text: "In flight" }), h("th", { class: "num", text: "Delayed" }),
            h("th", { class: "num", text: "Enqueue" }), h("th", { class: "num", text: "Ack" }), h("th", { class: "num", text: "Dead letters" }),
            h("th", { class: "wide", text: "Last 2 min" }))),
          tbody)));
    ctx.onLeave(() => { depth.destroy(); rates.destroy(); sparks.forEach((s) => s.destroy()); });
    const t = ctx.history.total;
    depth.set([t.depth, t.ready, t.inFlight, t.delayed]);
    rates.set([t.enq, t.ack]);

    ctx.poll(async () => {
      const qs = await ctx.api.queues();
      if (!ctx.alive()) return;
      ctx.history.add(qs);
      const byName = new Map(qs.map((q) => [q.name, q]));
      const dlqs = new Set(qs.map((q) => q.dead_letter).filter(Boolean));
      let dead = 0;
      for (const n of dlqs) dead += byName.get(n) ? byName.get(n).depth : 0;
      const tot = ctx.history.total;
      const last = (a) => a[a.length - 1];
      setText(document.getElementById("total-depth"), num(last(tot.depth)));
      setText(document.getElementById("total-inflight"), num(last(tot.inFlight)));
      setText(document.getElementById("total-enq"), rate(last(tot.enq)));
      setText(document.getElementById("total-ack"), rate(last(tot.ack)));
      setText(document.getElementById("total-dead"), num(dead));
      depth.set([tot.depth, tot.ready, tot.inFlight, tot.delayed]);
      rates.set([tot.enq, tot.ack]);
      if (!qs.length) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "empty", text: "No queues are configured." })));
        return;
      }
      if (tbody.firstChild && !tbody.firstChild.dataset.key) tbody.replaceChildren();
      for (const [n, sp] of sparks) if (!byName.has(n)) { sp.destroy(); sparks.delete(n); }
      keyed(tbody, qs, (q) => q.name, (q) => {
        const spark = new LineChart({ title: q.name + " depth", series: [{ name: "depth" }], spark: true });
        sparks.set(q.name, spark);
        const isDLQ = dlqs.has(q.name);
        const link = isDLQ ? "#/dead-letters/" + encodeURIComponent(q.name) : "#/queue/" + encodeURIComponent(q.name);
        return h("tr", { dataset: { queue: q.name } },
          h("td", {}, h("a", { href: link, text: q.name }), isDLQ ? [" ", badge("dead letters", "warn")] : null),
          h("td", { class: "wide muted", text: q.engine }),
          h("td", { class: "num", dataset: { col: "depth" } }), h("td", { class: "num", dataset: { col: "ready" } }),
          h("td", { class: "num", dataset: { col: "in_flight" } }), h("td", { class: "num", dataset: { col: "delayed" } }),
          h("td", { class: "num", dataset: { col: "enq" } }), h("td", { class: "num", dataset: { col: "ack" } }),
          h("td", { class: "num", dataset: { col: "dead" } }),
          h("td", { class: "wide" }, spark.el));
      }, (tr, q) => {
        const s = q.stats || {};
        const e = ctx.history.queue(q.name);
        const cell = (c) => tr.querySelector(`[data-col="${c}"]`);
        setText(cell("depth"), num(q.depth));
        setText(cell("ready"), num(s.ready));
        setText(cell("in_flight"), num(s.in_flight));
        setText(cell("delayed"), num(s.delayed));
        setText(cell("enq"), rate(e && e.enqRate));
        setText(cell("ack"), rate(e && e.ackRate));
        const dl = q.dead_letter && byName.get(q.dead_letter);
        const dc = cell("dead");
        if (dl) {
          if (!dc.firstChild || dc.firstChild.nodeName !== "A") {
            dc.replaceChildren(h("a", { href: "#/dead-letters/" + encodeURIComponent(q.dead_letter) }));
          }
          setText(dc.firstChild, num(dl.depth));
          dc.firstChild.className = dl.depth > 0 ? "num-bad" : "";
        } else {
          setText(dc, "–");
        }
        if (e) sparks.get(q.name).set([e.depth]);
      });
    });
  },
};
