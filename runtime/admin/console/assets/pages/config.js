// The running configuration: the file in effect (GET /v1/config, with
// secrets redacted by the server) and a reload that shows what changed,
// or the diagnostics when the new file is refused. Not polled: the file
// only changes on a reload.

import { h, num } from "../dom.js";

export default {
  id: "config",
  title: "Config",
  nav: true,
  render(ctx) {
    const path = h("code", { id: "config-path" });
    const note = h("span", { class: "muted" });
    const source = h("div", { class: "source", id: "config-source", tabindex: "0", "aria-label": "Configuration source" });
    const result = h("section", { id: "reload-result", "aria-live": "polite" });
    const reload = h("button", { type: "button", class: "primary", id: "config-reload", text: "Reload…" });
    ctx.main.append(
      h("div", { class: "page-head" }, h("h1", { text: "Configuration" }), reload),
      h("p", { class: "row" }, "In effect: ", path, note),
      result,
      source);

    const show = async () => {
      try {
        const c = await ctx.api.config();
        if (!ctx.alive()) return;
        path.textContent = c.path;
        note.textContent = c.redacted ? `${num(c.redacted)} secret value${c.redacted === 1 ? "" : "s"} redacted` : "";
        const lines = c.source.replace(/\n$/, "").split("\n");
        source.replaceChildren(
          h("div", { class: "ln", "aria-hidden": "true", text: lines.map((_, i) => i + 1).join("\n") }),
          h("pre", { class: "code", text: lines.join("\n") }));
      } catch (e) {
        source.replaceChildren(h("p", { class: "notice", text: e.status === 404 || e.status === 501 ? "This qrun has no configuration file to show: " + e.message : e.message }));
      }
    };

    reload.addEventListener("click", () => {
      ctx.act({
        confirm: { title: "Reload the configuration?", text: "qrun re-reads its file and applies the difference: queues and consumers added, changed or removed. A file that does not validate changes nothing.", ok: "Reload", danger: false },
        run: () => ctx.api.reload(),
        done: (r) => (r.changes.length ? `Reloaded: ${r.changes.length} change${r.changes.length === 1 ? "" : "s"}.` : "Reloaded: nothing changed."),
      }).then((r) => {
        if (!r) return;
        result.replaceChildren(h("div", { class: "card", id: "reload-ok" },
          h("h2", { text: r.changes.length ? "Reloaded" : "Reloaded: the file matches what runs" }),
          r.changes.length ? h("ul", { class: "changes" }, r.changes.map((c) => h("li", { text: c }))) : null,
          r.warnings && r.warnings.length ? [h("h3", { text: "Warnings" }), h("ul", { class: "changes" }, r.warnings.map((w) => h("li", { text: w })))] : null));
        show();
      }, (e) => {
        if (e.status === 401) return;
        const diags = e.body && e.body.diagnostics;
        result.replaceChildren(h("div", { class: "card", id: "reload-refused", role: "alert" },
          h("h2", { class: "error", text: "Reload refused; nothing was changed" }),
          h("p", { text: e.message }),
          diags ? h("pre", { class: "diag", id: "reload-diagnostics", text: diags }) : null));
      });
    });
    show();
  },
};
