// SVG charts: sparklines for tables and time-series charts with axes,
// a hover read-out and an honest empty state.

import { h, s, replace, formatCompact, formatClock, formatDuration } from "./util.js";
import { HISTORY_SECONDS } from "./api.js";

/** Path commands through points, split where a value is null. */
function linePath(points, x, y) {
  let d = "";
  let pen = false;
  for (const p of points) {
    if (p.v === null || p.v === undefined) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
    pen = true;
  }
  return d;
}

/** Closed areas under each unbroken run of points. */
function areaPath(points, x, y, base) {
  let d = "";
  let run = [];
  const flush = () => {
    if (run.length > 1) {
      d += `M${x(run[0].t).toFixed(1)},${base}`;
      for (const p of run) d += `L${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
      d += `L${x(run[run.length - 1].t).toFixed(1)},${base}Z`;
    }
    run = [];
  };
  for (const p of points) {
    if (p.v === null || p.v === undefined) flush();
    else run.push(p);
  }
  flush();
  return d;
}

/** A round step for `ticks` grid lines up to at least `value`. */
function niceStep(value, ticks) {
  const raw = value > 0 ? value / ticks : 1 / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (step * power >= raw) return step * power;
  }
  return 10 * power;
}

/** Milliseconds for axes and read-outs: "40 µs", "12.5 ms", "1.5 s", "2m 5s". */
export function formatMillis(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  const abs = Math.abs(ms);
  if (abs === 0) return "0 ms";
  if (abs < 1) return `${formatCompact(ms * 1000)} µs`;
  if (abs < 1000) return `${formatCompact(ms)} ms`;
  if (abs < 60_000) return `${formatCompact(ms / 1000)} s`;
  return formatDuration(ms / 1000);
}

/** A small trend line over the last `seconds` of `points`. */
export function sparkline(points, { width = 120, height = 28, seconds = 60, color = "var(--series-1)" } = {}) {
  const end = Date.now() / 1000;
  const start = end - seconds;
  const visible = points.filter((p) => p.t >= start);
  const max = Math.max(0, ...visible.map((p) => p.v ?? 0));
  const top = max > 0 ? max * 1.15 : 1;
  const x = (t) => ((t - start) / seconds) * width;
  const y = (v) => height - 2 - (v / top) * (height - 4);
  const hasData = visible.some((p) => p.v !== null);
  return s(
    "svg",
    { class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "throughput, last minute" },
    s("line", { x1: 0, x2: width, y1: height - 1.5, y2: height - 1.5, class: "spark-base" }),
    hasData ? s("path", { d: areaPath(visible, x, y, height - 1.5), class: "spark-area", style: { fill: color } }) : null,
    hasData ? s("path", { d: linePath(visible, x, y), class: "spark-line", style: { stroke: color } }) : null,
  );
}

/**
 * A time-series chart over the last `seconds`: `update(series)` redraws it
 * with `[{name, color, points: [{t, v}]}]`; with no points it shows `empty`.
 */
export class TimeChart {
  constructor({ id, title, subtitle = null, unit = "", seconds = 60, ranges = [60, HISTORY_SECONDS], height = 200, empty = "No data yet", format = formatCompact, axisWidth = 48 }) {
    this.seconds = seconds;
    this.axisWidth = axisWidth;
    this.height = height;
    this.unit = unit;
    this.format = format;
    this.emptyText = empty;
    this.series = [];
    this.legend = h("div", { class: "legend" });
    this.plot = h("div", { class: "chart-plot", style: { height: `${height}px` } });
    this.readout = h("div", { class: "chart-readout" });
    const rangeButtons = ranges.map((range) =>
      h(
        "button",
        {
          class: range === seconds ? "seg active" : "seg",
          type: "button",
          onclick: (event) => {
            this.seconds = range;
            for (const b of event.target.parentElement.children) b.classList.toggle("active", b === event.target);
            this.render();
          },
        },
        range % 60 === 0 ? `${range / 60}m` : `${range}s`,
      ),
    );
    const tools = h("div", { class: "chart-tools" }, this.legend, ranges.length > 1 ? h("div", { class: "segmented" }, rangeButtons) : null);
    this.element = h(
      "section",
      { class: "card chart", dataset: { chart: id } },
      h("header", { class: "card-head" }, h("div", {}, h("h3", {}, title), subtitle ? h("p", { class: "muted small" }, subtitle) : null), tools),
      this.plot,
      this.readout,
    );
    this.hover = null;
    this.plot.addEventListener("mousemove", (event) => {
      const box = this.plot.getBoundingClientRect();
      this.hover = event.clientX - box.left;
      this.render();
    });
    this.plot.addEventListener("mouseleave", () => {
      this.hover = null;
      this.render();
    });
    this.resize = new ResizeObserver(() => this.render());
    this.resize.observe(this.plot);
  }

  update(series) {
    this.series = series;
    this.render();
  }

  dispose() {
    this.resize.disconnect();
  }

  render() {
    const width = Math.max(200, Math.round(this.plot.clientWidth || 600));
    const height = this.height;
    const pad = { left: this.axisWidth, right: 12, top: 10, bottom: 24 };
    const end = Date.now() / 1000;
    const start = end - this.seconds;
    const innerW = width - pad.left - pad.right;
    const innerH = height - pad.top - pad.bottom;
    const x = (t) => pad.left + ((t - start) / this.seconds) * innerW;
    const visible = this.series.map((serie) => ({ ...serie, points: serie.points.filter((p) => p.t >= start - 2) }));
    const values = visible.flatMap((serie) => serie.points.map((p) => p.v)).filter((v) => v !== null && v !== undefined);
    const hasData = values.length > 0;
    const tickStep = niceStep(Math.max(...values, 0) * 1.05, 4);
    const top = tickStep * 4;
    const y = (v) => pad.top + innerH - (v / top) * innerH;
    const base = pad.top + innerH;

    const grid = [];
    for (let i = 0; i <= 4; i += 1) {
      const value = tickStep * i;
      const gy = y(value);
      grid.push(s("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy, class: i === 0 ? "axis" : "grid" }));
      if (hasData) grid.push(s("text", { x: pad.left - 8, y: gy + 4, class: "tick", "text-anchor": "end" }, this.format(value)));
    }
    const step = this.seconds <= 60 ? 15 : this.seconds <= 180 ? 30 : 60;
    for (let k = 0; k * step <= this.seconds; k += 1) {
      const ago = k * step;
      const gx = x(end - ago);
      const label = k === 0 ? "now" : ago % 60 === 0 ? `-${ago / 60}m` : `-${ago}s`;
      const anchor = k === 0 ? "end" : ago === this.seconds ? "start" : "middle";
      grid.push(s("text", { x: gx, y: height - 6, class: "tick", "text-anchor": anchor }, label));
      if (k > 0) grid.push(s("line", { x1: gx, x2: gx, y1: pad.top, y2: base, class: "grid grid-v" }));
    }

    const paths = [];
    visible.forEach((serie, index) => {
      if (index === 0 && hasData) {
        paths.push(s("path", { d: areaPath(serie.points, x, y, base), class: "area", style: { fill: serie.color } }));
      }
      paths.push(
        s("path", {
          d: hasData ? linePath(serie.points, x, y) : "",
          class: `line series-${index}`,
          style: { stroke: serie.color },
          dataset: { points: String(serie.points.filter((p) => p.v !== null).length) },
        }),
      );
    });

    const overlay = [];
    if (!hasData) {
      overlay.push(s("text", { x: pad.left + innerW / 2, y: pad.top + innerH / 2 + 4, class: "empty-text", "text-anchor": "middle" }, this.emptyText));
    } else if (this.hover !== null && this.hover >= pad.left && this.hover <= width - pad.right) {
      const t = start + ((this.hover - pad.left) / innerW) * this.seconds;
      overlay.push(s("line", { x1: this.hover, x2: this.hover, y1: pad.top, y2: base, class: "crosshair" }));
      const parts = [];
      for (const serie of visible) {
        let nearest = null;
        for (const p of serie.points) {
          if (p.v === null) continue;
          if (!nearest || Math.abs(p.t - t) < Math.abs(nearest.t - t)) nearest = p;
        }
        if (nearest && Math.abs(nearest.t - t) < 5) {
          overlay.push(s("circle", { cx: x(nearest.t), cy: y(nearest.v), r: 3.5, class: "marker", style: { stroke: serie.color } }));
          parts.push(h("span", {}, h("i", { class: "swatch", style: { background: serie.color } }), `${serie.name} ${this.format(nearest.v)}${this.unit}`));
        }
      }
      replace(this.readout, h("span", { class: "muted" }, formatClock(t * 1000)), parts);
    }
    if (this.hover === null || !hasData) replace(this.readout);

    const svg = s(
      "svg",
      { width, height, viewBox: `0 0 ${width} ${height}`, class: hasData ? "has-data" : "no-data", role: "img" },
      grid,
      paths,
      overlay,
    );
    replace(this.plot, svg);
    replace(
      this.legend,
      visible.map((serie) => {
        const last = [...serie.points].reverse().find((p) => p.v !== null);
        return h(
          "span",
          { class: "legend-item" },
          h("i", { class: "swatch", style: { background: serie.color } }),
          serie.name,
          h("b", {}, last ? `${this.format(last.v)}${this.unit}` : "—"),
        );
      }),
    );
  }
}

/** A small bar chart of values over categories (checkpoint sizes). */
export function bars(values, { width = 320, height = 56, color = "var(--series-1)", title = (v) => String(v) } = {}) {
  const max = Math.max(1, ...values.map((v) => v.value));
  const gap = 3;
  const slots = Math.max(values.length, 12);
  const bar = (width - gap * (slots - 1)) / slots;
  return s(
    "svg",
    { class: "bars", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" },
    values.map((v, i) => {
      const bh = Math.max(2, (v.value / max) * (height - 4));
      return s(
        "rect",
        { x: (slots - values.length + i) * (bar + gap), y: height - bh, width: bar, height: bh, rx: 2, class: `bar bar-${v.kind}`, style: { fill: v.kind === "checkpoint" ? color : null } },
        s("title", {}, title(v)),
      );
    }),
  );
}
