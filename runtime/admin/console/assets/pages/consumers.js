// Consumers: state, plugin version and digest, hot reloads, counters,
// latency and recent errors, live (one GET /v1/consumers per second);
// pause and resume.

import { h, keyed, setText, num, ms, when, ago, badge } from "../dom.js";

function count(label, field) {
  return h("div", {}, h("span", { text: label }), h("b", { dataset: { field }, text: "–" }));
}

function fact(label, field) {
  return [h("dt", { text: label }), h("dd", { dataset: { field } })];
}

export default {
  id: "consumers",
  title: "Consumers",
  nav: true,
  render(ctx) {
    const grid = h("div", { class: "grid consumers", id: "consumers" });
    ctx.main.append(h("div", { class: "page-head" }, h("h1", { text: "Consumers" })), grid);

    const toggle = (c, btn) => {
      const pausing = btn.dataset.action === "pause";
      ctx.act({
        confirm: pausing
          ? { title: `Pause ${c.name}?`, text: `${c.name} finishes the deliveries in hand and starts no more; messages keep arriving in ${c.queue}. A pause is not remembered across a restart.`, ok: "Pause" }
          : { title: `Resume ${c.name}?`, text: `${c.name} starts taking messages from ${c.queue} again.`, ok: "Resume", danger: false },
        run: () => (pausing ? ctx.api.pause(c.name) : ctx.api.resume(c.name)),
        done: (r) => `${c.name} is ${r.state}.`,
      }).catch(() => {});
    };

    const create = (c) => {
      const btn = h("button", { type: "button", dataset: { action: "pause" } });
      const card = h("article", { class: "card consumer", dataset: { consumer: c.name }, "aria-label": "Consumer " + c.name },
        h("header", {}, h("h2", { text: c.name }), h("span", { dataset: { field: "state" } }), btn),
        h("dl", { class: "kv" },
          [h("dt", { text: "Queue" }), h("dd", {}, h("a", { href: "#/queue/" + encodeURIComponent(c.queue), text: c.queue }))],
          fact("Plugin", "plugin"), fact("Digest", "digest"), fact("Serving since", "loaded"),
          fact("Hot reloads", "reloads"), fact("In flight", "inflight"), fact("Latency", "latency")),
        h("div", { class: "counts" },
          count("acked", "acked"), count("nacked", "nacked"), count("dead-lettered", "dead_lettered"), count("requeued", "requeued"),
          count("traps", "traps"), count("timeouts", "timeouts"), count("bad verdicts", "bad_verdicts"), count("engine errors", "engine_errors")),
        h("details", { dataset: { field: "errors-box" } }, h("summary", { dataset: { field: "errors-title" } }), h("ul", { class: "errors", dataset: { field: "errors" } })));
      btn.addEventListener("click", () => toggle(card._c, btn));
      return card;
    };

    const update = (card, c) => {
      card._c = c;
      const f = (name) => card.querySelector(`[data-field="${name}"]`);
      const st = f("state");
      if (st.textContent !== c.state) st.replaceChildren(badge(c.state, c.state === "running" ? "ok" : "warn"));
      const btn = card.querySelector("button[data-action]");
      const action = c.state === "paused" ? "resume" : "pause";
      if (btn.dataset.action !== action || !btn.textContent) {
        btn.dataset.action = action;
        btn.textContent = action === "pause" ? "Pause…" : "Resume…";
        btn.className = action === "pause" ? "" : "primary";
      }
      const p = c.plugin || {};
      setText(f("plugin"), (c.version || "–") + (c.isolation ? ` · ${c.isolation} isolation` : "") + (p.loaded_versions > 1 ? ` · ${p.loaded_versions} versions loaded` : ""));
      const dg = f("digest");
      if (dg.textContent !== (p.version || "–")) dg.replaceChildren(h("code", { title: p.path || "", text: p.version || "–" }));
      setText(f("loaded"), p.loaded_at ? `${when(p.loaded_at)} (${ago(p.loaded_at)})` : "–");
      setText(f("reloads"), `${num(p.reloads || 0)} swapped in, ${num(p.failed_reloads || 0)} refused` + (p.last_error ? ` — last refusal: ${p.last_error}` : ""));
      setText(f("inflight"), `${num(c.in_flight)} of ${num(c.concurrency)} · ${num(c.instances)} instances`);
      setText(f("latency"), c.latency ? `p50 ${ms(c.latency.p50_ms)} · p99 ${ms(c.latency.p99_ms)} · mean ${ms(c.latency.mean_ms)} (${num(c.latency.count)} calls)` : "not recorded yet");
      for (const k of ["acked", "nacked", "dead_lettered", "requeued", "traps", "timeouts", "bad_verdicts", "engine_errors"]) {
        const el = f(k);
        setText(el, num(c.counts[k]));
        el.className = c.counts[k] > 0 && k !== "acked" && k !== "requeued" ? "num-bad" : "";
      }
      const errs = c.recent_errors || [];
      setText(f("errors-title"), errs.length ? `Recent errors (${errs.length})` : "No recent errors");
      const ul = f("errors");
      const sig = errs.map((e) => e.time + e.error).join("|");
      if (ul.dataset.sig !== sig) {
        ul.dataset.sig = sig;
        ul.replaceChildren(...errs.map((e) => h("li", {}, h("time", { datetime: e.time, text: when(e.time) }), badge(e.kind, "bad"), " ",
          e.message_id ? h("code", { text: e.message_id + (e.attempt ? ` #${e.attempt}` : "") + " " }) : null, e.error)));
      }
    };

    ctx.poll(async () => {
      const cs = await ctx.api.consumers();
      if (!ctx.alive()) return;
      if (!cs.length) {
        grid.replaceChildren(h("p", { class: "notice", text: "No consumers are configured." }));
        return;
      }
      if (grid.firstChild && !grid.firstChild.dataset.key) grid.replaceChildren();
      keyed(grid, cs, (c) => c.name, create, update);
    });
  },
};
