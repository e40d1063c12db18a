// Live line charts drawn on <canvas>: a fixed window of samples per series,
// redrawn on each sample, on resize and on a theme change. Colours come from
// the stylesheet's custom properties (--c1..--c5, --grid, --muted), so the
// charts follow dark and light.

import { h } from "./dom.js";

const charts = new Set();
new MutationObserver(() => charts.forEach((c) => c.draw()))
  .observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => charts.forEach((c) => c.draw()));

function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

// niceMax rounds v up to 1, 2, 2.5 or 5 times a power of ten.
function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function short(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

export class LineChart {
  // series: [{name}], window: samples kept, label: what the axis counts.
  constructor({ title, series, window = 120, label = "", spark = false }) {
    this.series = series;
    this.window = window;
    this.spark = spark;
    this.data = series.map(() => []);
    this.canvas = h("canvas", { class: spark ? "spark" : "", role: "img", "aria-label": title || "chart" });
    if (spark) {
      this.el = this.canvas;
    } else {
      this.legend = h("div", { class: "legend" }, series.map((s, i) => h("span", { class: "s" + (i + 1) }, h("i"), s.name)));
      this.el = h("section", { class: "card chart" }, h("h2", { text: title }), this.canvas, this.legend,
        label ? h("div", { class: "sr", text: label }) : null);
    }
    this.resize = new ResizeObserver(() => this.draw());
    this.resize.observe(this.canvas);
    charts.add(this);
  }

  // set replaces the samples, e.g. from a history kept across pages.
  set(data) {
    this.data = data.map((d) => d.slice(-this.window));
    this.draw();
  }

  push(values) {
    values.forEach((v, i) => {
      const d = this.data[i];
      d.push(v);
      if (d.length > this.window) d.shift();
    });
    this.draw();
  }

  destroy() {
    this.resize.disconnect();
    charts.delete(this);
  }

  draw() {
    const c = this.canvas;
    const w = c.clientWidth, hgt = c.clientHeight;
    if (!w || !hgt) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(hgt * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(hgt * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, hgt);
    let top = 0;
    for (const d of this.data) for (const v of d) if (v > top) top = v;
    const ymax = niceMax(top);
    const padL = this.spark ? 1 : 40, padR = this.spark ? 1 : 8, padT = this.spark ? 2 : 8, padB = this.spark ? 2 : 18;
    const pw = w - padL - padR, ph = hgt - padT - padB;
    const x = (i) => padL + (pw * i) / Math.max(1, this.window - 1);
    const y = (v) => padT + ph - (ph * v) / ymax;
    if (!this.spark) {
      g.strokeStyle = css("--grid");
      g.fillStyle = css("--muted");
      g.lineWidth = 1;
      g.font = "11px " + css("--sans");
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (let k = 0; k <= 4; k++) {
        const v = (ymax * k) / 4, yy = Math.round(y(v)) + 0.5;
        g.beginPath(); g.moveTo(padL, yy); g.lineTo(w - padR, yy); g.stroke();
        g.fillText(short(v), padL - 6, yy);
      }
      g.textAlign = "left";
      g.textBaseline = "alphabetic";
      g.fillText(`last ${this.window}s`, padL, hgt - 3);
      g.textAlign = "right";
      g.fillText("now", w - padR, hgt - 3);
    }
    this.data.forEach((d, i) => {
      if (!d.length) return;
      const off = this.window - d.length;
      g.strokeStyle = css("--c" + ((i % 5) + 1));
      g.lineWidth = this.spark ? 1.5 : 2;
      g.lineJoin = "round";
      g.beginPath();
      d.forEach((v, j) => (j ? g.lineTo(x(off + j), y(v)) : g.moveTo(x(off + j), y(v))));
      g.stroke();
      if (i === 0) {
        g.globalAlpha = 0.12;
        g.fillStyle = g.strokeStyle;
        g.lineTo(x(off + d.length - 1), y(0));
        g.lineTo(x(off), y(0));
        g.closePath();
        g.fill();
        g.globalAlpha = 1;
      }
    });
  }
}
