// Dead letters: the dead-letter queues (those some queue names as its
// dead_letter) with their counts, live (one GET /v1/queues per second);
// one queue's dead letters through the paged peek API, filtered by reason;
// redrive the selected ones or all, purge.

import { h, keyed, setText, num, when, badge } from "../dom.js";
import { messageDetail, preview } from "./message.js";

const PAGE = 200;

export default {
  id: "dead-letters",
  title: "Dead letters",
  nav: true,
  render(ctx) {
    let name = ctx.params[0] || "";
    const tabs = h("div", { class: "row dlq-tabs", id: "dlq-list", role: "list", "aria-label": "Dead-letter queues" });
    const body = h("div");
    ctx.main.append(
      h("div", { class: "page-head" }, h("h1", { text: "Dead letters" })),
      tabs, body);

    let messages = [], cursor = "", more = false, selected = new Set(), detailId = null;
    const reason = h("select", { id: "dl-reason", "aria-label": "Filter by reason" });
    const count = h("span", { class: "muted", id: "dl-count", role: "status" });
    const redriveSel = h("button", { type: "button", class: "primary", id: "dl-redrive-selected", disabled: true, text: "Redrive selected" });
    const redriveAll = h("button", { type: "button", id: "dl-redrive-all", text: "Redrive all…" });
    const purge = h("button", { type: "button", class: "danger", id: "dl-purge", text: "Purge…" });
    const refresh = h("button", { type: "button", id: "dl-refresh", text: "Refresh" });
    const loadMore = h("button", { type: "button", id: "dl-more", hidden: true, text: "Load more" });
    const all = h("input", { type: "checkbox", id: "dl-select-all", "aria-label": "Select every dead letter shown" });
    const tbody = h("tbody", { id: "dl-body" });
    const split = h("div", { class: "split solo" });

    const shown = () => messages.filter((m) => !reason.value || (m.dead_letter_reason || "(none)") === reason.value);
    const syncButtons = () => {
      const n = [...selected].filter((id) => messages.some((m) => m.id === id)).length;
      redriveSel.disabled = n === 0;
      redriveSel.textContent = n ? `Redrive ${n} selected…` : "Redrive selected";
      const vis = shown();
      all.checked = vis.length > 0 && vis.every((m) => selected.has(m.id));
    };
    const closeDetail = () => {
      detailId = null;
      const d = split.querySelector("#message-detail");
      if (d) d.remove();
      split.className = "split solo";
    };
    const draw = () => {
      const reasons = [...new Set(messages.map((m) => m.dead_letter_reason || "(none)"))].sort();
      const keep = reason.value;
      reason.replaceChildren(h("option", { value: "", text: "All reasons" }),
        ...reasons.map((r) => h("option", { value: r, text: `${r} (${messages.filter((m) => (m.dead_letter_reason || "(none)") === r).length})` })));
      reason.value = reasons.includes(keep) ? keep : "";
      const vis = shown();
      tbody.replaceChildren();
      for (const m of vis) {
        const box = h("input", { type: "checkbox", "aria-label": "Select " + m.id, checked: selected.has(m.id) });
        box.addEventListener("change", () => { box.checked ? selected.add(m.id) : selected.delete(m.id); syncButtons(); });
        const tr = h("tr", { dataset: { id: m.id } },
          h("td", {}, box),
          h("td", {}, h("button", { type: "button", class: "link mono", text: m.id, onclick: () => {
            closeDetail();
            detailId = m.id;
            split.className = "split";
            const d = messageDetail(m, closeDetail);
            split.append(d);
            d.querySelector("button").focus();
          } })),
          h("td", {}, badge(m.dead_letter_reason || "(none)", "bad")),
          h("td", {}, m.dead_letter_source ? h("a", { href: "#/queue/" + encodeURIComponent(m.dead_letter_source), text: m.dead_letter_source }) : "–"),
          h("td", { class: "num", text: `${num(m.attempt)} (${num(m.failures)}✗)` }),
          h("td", { class: "wide", text: when(m.enqueued_at) }),
          h("td", { class: "preview", text: preview(m) }));
        tbody.append(tr);
      }
      if (!vis.length) tbody.append(h("tr", {}, h("td", { colspan: 7, class: "empty", id: "dl-empty", text: messages.length ? "No dead letter has this reason." : "No dead letters. 🎉" })));
      setText(count, `${vis.length} shown of ${messages.length} loaded` + (more ? " (more in the queue)" : ""));
      loadMore.hidden = !more;
      syncButtons();
    };
    const load = async (append) => {
      if (!name) return;
      refresh.disabled = true;
      try {
        const res = await ctx.api.peek(name, { cursor: append ? cursor : "", limit: PAGE });
        if (!ctx.alive()) return;
        messages = append ? messages.concat(res.messages || []) : res.messages || [];
        cursor = res.next_cursor || "";
        more = !!cursor;
        const ids = new Set(messages.map((m) => m.id));
        for (const id of selected) if (!ids.has(id)) selected.delete(id);
        if (detailId && !ids.has(detailId)) closeDetail();
        draw();
      } catch (e) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "empty", text: e.status === 501 ? "This queue's engine cannot show messages without consuming them; Redrive all and Purge still work." : e.message })));
      } finally {
        refresh.disabled = false;
      }
    };

    reason.addEventListener("change", draw);
    all.addEventListener("change", () => { for (const m of shown()) all.checked ? selected.add(m.id) : selected.delete(m.id); draw(); });
    refresh.addEventListener("click", () => load(false));
    loadMore.addEventListener("click", () => load(true));
    const after = (p) => p.then(() => load(false), () => {});
    redriveSel.addEventListener("click", () => {
      const ids = [...selected];
      after(ctx.act({
        confirm: { title: `Redrive ${ids.length} dead letter${ids.length === 1 ? "" : "s"}?`, text: `They go back to the queue they came from and start again at attempt 1. Fix the handler first, or they come straight back.`, ok: "Redrive", danger: false },
        run: () => ctx.api.redrive(name, ids),
        done: (r) => { selected.clear(); return `Redrove ${num(r.redriven)} of ${ids.length} dead letters.`; },
      }));
    });
    redriveAll.addEventListener("click", () => after(ctx.act({
      confirm: { title: `Redrive every dead letter in ${name}?`, text: `All of them, whatever the filter shows, go back to the queues they came from and start again at attempt 1.`, ok: "Redrive all", danger: false },
      run: () => ctx.api.redrive(name, []),
      done: (r) => { selected.clear(); return `Redrove ${num(r.redriven)} dead letters.`; },
    })));
    purge.addEventListener("click", () => after(ctx.act({
      confirm: { title: `Purge ${name}?`, text: `Every dead letter in ${name} is deleted for good.`, ok: "Purge" },
      run: () => ctx.api.purge(name),
      done: (r) => { selected.clear(); return `Purged ${num(r.purged)} dead letters.`; },
    })));

    const showQueue = () => {
      body.replaceChildren(
        h("div", { class: "row toolbar" }, h("h2", { text: name }), h("a", { href: "#/queue/" + encodeURIComponent(name), text: "queue view" }), h("span", { class: "spacer" }),
          reason, refresh, redriveSel, redriveAll, purge),
        split);
      split.replaceChildren(h("div", {},
        h("div", { class: "table-wrap" }, h("table", { "aria-label": "Dead letters in " + name },
          h("thead", {}, h("tr", {}, h("th", {}, all), h("th", { text: "ID" }), h("th", { text: "Reason" }), h("th", { text: "From" }),
            h("th", { class: "num", text: "Attempts" }), h("th", { class: "wide", text: "Dead since" }), h("th", { text: "Body" }))),
          tbody)),
        h("div", { class: "row" }, count, loadMore)));
      load(false);
    };
    if (name) showQueue();

    ctx.poll(async () => {
      const qs = await ctx.api.queues();
      if (!ctx.alive()) return;
      ctx.history.add(qs);
      const byName = new Map(qs.map((q) => [q.name, q]));
      const dlqs = [...new Set(qs.map((q) => q.dead_letter).filter((n) => n && byName.has(n)))].sort();
      if (!dlqs.length) {
        tabs.replaceChildren(h("p", { class: "notice", text: "No queue has a dead_letter queue configured." }));
        return;
      }
      if (tabs.firstChild && !tabs.firstChild.dataset.key) tabs.replaceChildren();
      keyed(tabs, dlqs, (n) => n, (n) => h("a", { href: "#/dead-letters/" + encodeURIComponent(n), role: "listitem", class: "badge", dataset: { dlq: n } },
        n + " ", h("b")), (a, n) => {
        setText(a.querySelector("b"), num(byName.get(n).depth));
        a.className = "badge" + (n === name ? " bad" : "");
        if (n === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
      });
      if (!name) {
        // No queue chosen: show the first with dead letters, or the first.
        const pick = dlqs.find((n) => byName.get(n).depth > 0) || dlqs[0];
        history.replaceState(null, "", "#/dead-letters/" + encodeURIComponent(pick));
        name = pick;
        showQueue();
      }
    });
  },
};
