// Schedules: every schedule with its expression, time zone, queue, next
// and last tick, ticks fired and skipped, and the error of a claim that
// keeps failing; live (one GET /v1/schedules per second).

import { h, keyed, setText, num, when, ago, badge } from "../dom.js";

export default {
  id: "schedules",
  title: "Schedules",
  nav: true,
  render(ctx) {
    const tbody = h("tbody", { id: "schedules-body" });
    ctx.main.append(
      h("div", { class: "page-head" }, h("h1", { text: "Schedules" })),
      h("p", { class: "muted", text: "Fired and skipped count this qrun's ticks since it started; the last tick may have been claimed by another node sharing the engine." }),
      h("div", { class: "table-wrap" },
        h("table", { "aria-label": "Schedules" },
          h("thead", {}, h("tr", {},
            h("th", { text: "Schedule" }), h("th", { text: "Expression" }), h("th", { class: "wide", text: "Time zone" }),
            h("th", { text: "Queue" }), h("th", { text: "Next tick" }), h("th", { class: "wide", text: "Last tick" }),
            h("th", { class: "num", text: "Fired" }), h("th", { class: "num", text: "Skipped" }), h("th", { text: "Last error" }))),
          tbody)));

    ctx.poll(async () => {
      const ss = await ctx.api.schedules();
      if (!ctx.alive()) return;
      if (!ss.length) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "empty", id: "schedules-empty", text: "No schedules are configured." })));
        return;
      }
      if (tbody.firstChild && !tbody.firstChild.dataset.key) tbody.replaceChildren();
      keyed(tbody, ss, (s) => s.name, (s) => h("tr", { dataset: { schedule: s.name } },
        h("td", {}, h("b", { text: s.name })),
        h("td", {}, h("code", { dataset: { col: "expr" } })),
        h("td", { class: "wide muted", dataset: { col: "time_zone" } }),
        h("td", {}, h("a", { href: "#/queue/" + encodeURIComponent(s.queue), dataset: { col: "queue" } })),
        h("td", { dataset: { col: "next" } }),
        h("td", { class: "wide", dataset: { col: "last_tick" } }),
        h("td", { class: "num", dataset: { col: "fired" } }),
        h("td", { class: "num", dataset: { col: "skipped" } }),
        h("td", { dataset: { col: "last_error" } })), (tr, s) => {
        const cell = (c) => tr.querySelector(`[data-col="${c}"]`);
        setText(cell("expr"), s.expr);
        setText(cell("time_zone"), s.time_zone || "UTC");
        setText(cell("queue"), s.queue);
        setText(cell("next"), s.next ? `${when(s.next)}` : "–");
        cell("next").title = s.next || "";
        setText(cell("last_tick"), s.last_tick ? `${when(s.last_tick)} (${ago(s.last_tick)})` : "never");
        cell("last_tick").title = s.last_tick || "";
        setText(cell("fired"), num(s.fired));
        setText(cell("skipped"), num(s.skipped));
        const err = cell("last_error");
        const sig = s.last_error || "";
        if (err.dataset.sig !== sig || !err.firstChild) {
          err.dataset.sig = sig;
          err.replaceChildren(sig ? badge(sig, "bad") : h("span", { class: "muted", text: "–" }));
        }
      });
    });
  },
};
