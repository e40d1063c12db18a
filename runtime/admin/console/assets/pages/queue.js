// A queue: its statistics live (one GET /v1/queues per second), its
// messages page by page through the paged peek API (only when asked:
// opening the page, Refresh, Next, Previous), a message's details, purge.

import { h, setText, num, rate, when, bytes, badge } from "../dom.js";
import { LineChart } from "../chart.js";
import { messageDetail, preview } from "./message.js";

export default {
  id: "queue",
  title: "Queue",
  nav: false,
  navAs: "overview",
  render(ctx) {
    const name = ctx.params[0];
    if (!name) { location.hash = "#/overview"; return; }
    const chart = new LineChart({ title: "Depth and throughput", series: [{ name: "depth" }, { name: "enqueued/s" }, { name: "acked/s" }] });
    ctx.onLeave(() => chart.destroy());
    const stats = h("section", { class: "grid stats", "aria-label": "Statistics" });
    const cards = {};
    for (const [k, label] of [["depth", "Depth"], ["ready", "Ready"], ["in_flight", "In flight"], ["delayed", "Delayed"],
      ["enq", "Enqueued"], ["ack", "Acked"], ["failed", "Nacked / dead-lettered"]]) {
      cards[k] = h("div", { class: "value", dataset: { stat: k }, text: "–" });
      stats.append(h("div", { class: "card stat" }, h("div", { class: "label", text: label }), cards[k]));
    }
    const engine = h("span", { class: "muted" });
    const dlLink = h("span");
    const purge = h("button", { type: "button", class: "danger", id: "queue-purge", text: "Purge…" });
    const inFlight = h("input", { type: "checkbox", id: "show-inflight" });
    const pageSize = h("select", { id: "page-size", "aria-label": "Messages per page" },
      [20, 50, 100, 200].map((n) => h("option", { value: n, selected: n === 50, text: n + " per page" })));
    const prev = h("button", { type: "button", id: "page-prev", text: "← Previous" });
    const next = h("button", { type: "button", id: "page-next", text: "Next →" });
    const refresh = h("button", { type: "button", id: "messages-refresh", text: "Refresh" });
    const tbody = h("tbody", { id: "messages-body" });
    const status = h("p", { class: "muted", id: "messages-status", role: "status" });
    const split = h("div", { class: "split solo" });
    const list = h("div", {},
      h("div", { class: "row toolbar" }, h("h2", { text: "Messages" }), h("span", { class: "spacer" }),
        h("label", { class: "check" }, inFlight, "in flight too"), pageSize, refresh, prev, next),
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Messages" },
        h("thead", {}, h("tr", {}, h("th", { text: "ID" }), h("th", { text: "State" }), h("th", { class: "num", text: "Attempt" }),
          h("th", { class: "wide", text: "Enqueued" }), h("th", { class: "num wide", text: "Size" }), h("th", { text: "Body" }))),
        tbody)),
      status);
    split.append(list);
    ctx.main.append(
      h("div", { class: "crumb" }, h("a", { href: "#/overview", text: "Overview" }), " / queue"),
      h("div", { class: "page-head" }, h("h1", { text: name }), engine, dlLink, purge),
      stats,
      h("div", { class: "grid charts" }, chart.el),
      split);

    // Paging: cursors[i] starts page i; the API hands out the next one.
    let cursors = [""], pageNo = 0, nextCursor = "", selected = null, messages = [];
    const closeDetail = () => {
      selected = null;
      const d = split.querySelector("#message-detail");
      if (d) d.remove();
      split.className = "split solo";
      for (const tr of tbody.children) tr.classList.remove("selected");
    };
    const open = (m, tr) => {
      closeDetail();
      selected = m.id;
      tr.classList.add("selected");
      split.className = "split";
      const d = messageDetail(m, closeDetail);
      split.append(d);
      d.querySelector("button").focus();
    };
    const load = async () => {
      refresh.disabled = prev.disabled = next.disabled = true;
      try {
        const res = await ctx.api.peek(name, { cursor: cursors[pageNo], limit: Number(pageSize.value), inFlight: inFlight.checked });
        if (!ctx.alive()) return;
        messages = res.messages || [];
        nextCursor = res.next_cursor || "";
        tbody.replaceChildren();
        for (const m of messages) {
          const tr = h("tr", { dataset: { id: m.id } },
            h("td", {}, h("button", { type: "button", class: "link mono", onclick: () => open(m, tr), text: m.id })),
            h("td", {}, badge((m.state || "ready").replace("_", " "), m.state === "in_flight" ? "warn" : "")),
            h("td", { class: "num", text: `${num(m.attempt)}` + (m.failures ? ` (${m.failures}✗)` : "") }),
            h("td", { class: "wide", text: when(m.enqueued_at) }),
            h("td", { class: "num wide", text: bytes(m.body_size) }),
            h("td", { class: "preview", text: preview(m) }));
          if (m.id === selected) tr.classList.add("selected");
          tbody.append(tr);
        }
        if (!messages.length) tbody.append(h("tr", {}, h("td", { colspan: 6, class: "empty", text: pageNo ? "No more messages." : "No messages waiting." })));
        setText(status, `Page ${pageNo + 1}` + (messages.length ? `: ${messages.length} messages` : "") +
          (nextCursor ? "" : " (end of the queue)") + ". Shown in the engine's scan order; not live: Refresh to look again.");
        prev.disabled = pageNo === 0;
        next.disabled = !nextCursor;
      } catch (e) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty", text: e.status === 501 ? "This queue's engine cannot show messages without consuming them." : e.message })));
        if (e.status !== 501) prev.disabled = pageNo === 0;
      } finally {
        refresh.disabled = false;
      }
    };
    const restart = () => { cursors = [""]; pageNo = 0; load(); };
    refresh.addEventListener("click", load);
    inFlight.addEventListener("change", restart);
    pageSize.addEventListener("change", restart);
    next.addEventListener("click", () => { if (!nextCursor) return; cursors[pageNo + 1] = nextCursor; pageNo++; load(); });
    prev.addEventListener("click", () => { if (pageNo > 0) { pageNo--; load(); } });
    purge.addEventListener("click", () => ctx.act({
      confirm: { title: `Purge ${name}?`, text: `Every ready and delayed message in ${name} is deleted for good. Messages being handled are left to their handlers.`, ok: "Purge" },
      run: () => ctx.api.purge(name),
      done: (r) => `Purged ${num(r.purged)} messages from ${name}.`,
    }).then(() => restart(), () => {}));
    load();

    ctx.poll(async () => {
      const qs = await ctx.api.queues();
      if (!ctx.alive()) return;
      ctx.history.add(qs);
      const q = qs.find((x) => x.name === name);
      if (!q) { setText(engine, "no such queue"); return; }
      const s = q.stats || {};
      const e = ctx.history.queue(name);
      setText(engine, "engine " + q.engine);
      if (q.dead_letter && !dlLink.firstChild) {
        dlLink.append(h("a", { href: "#/dead-letters/" + encodeURIComponent(q.dead_letter), text: "dead letters: " + q.dead_letter }));
      }
      setText(cards.depth, num(q.depth));
      setText(cards.ready, num(s.ready));
      setText(cards.in_flight, num(s.in_flight));
      setText(cards.delayed, num(s.delayed));
      setText(cards.enq, rate(e.enqRate) + " · " + num(s.enqueued_total));
      setText(cards.ack, rate(e.ackRate) + " · " + num(s.acked_total));
      setText(cards.failed, num(s.nacked_total) + " / " + num(s.dead_lettered_total));
      chart.set([e.depth, e.enq, e.ack]);
    });
  },
};
