// The operator graph: a layered left-to-right drawing of a job's plan
// (sources on the left, sinks on the right) with live figures per node.

import { h, s, replace, ellipsize, formatRate } from "./util.js";

const NODE_W = 196;
const NODE_H = 76;
const GAP_X = 56;
const GAP_Y = 18;
const MARGIN = 14;

const KINDS = {
  source: ["Source", "io"],
  sink: ["Sink", "io-out"],
  project: ["Project", "stateless"],
  filter: ["Filter", "stateless"],
  watermark: ["Watermark", "time"],
  window_assign: ["Window TVF", "time"],
  window_aggregate: ["Window aggregate", "stateful"],
  group_aggregate: ["Group aggregate", "stateful"],
  join: ["Join", "stateful"],
  top_n: ["Top-N", "stateful"],
  over_aggregate: ["Over aggregate", "stateful"],
  union: ["Union", "stateless"],
};

/** The display name of a node kind. */
export function kindName(kind) {
  return (KINDS[kind] || [kind])[0];
}

/** Columns (longest path from a source; sinks last) and rows of each node. */
function layout(graph) {
  const inputs = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const e of graph.edges) inputs.get(e.to)?.push(e.from);
  const column = new Map();
  // Nodes come after their inputs.
  for (const n of graph.nodes) {
    const ins = inputs.get(n.id);
    column.set(n.id, ins.length ? Math.max(...ins.map((i) => column.get(i) ?? 0)) + 1 : 0);
  }
  const last = Math.max(0, ...column.values());
  for (const n of graph.nodes) if (n.kind === "sink") column.set(n.id, last);
  const columns = Array.from({ length: last + 1 }, () => []);
  for (const n of graph.nodes) columns[column.get(n.id)].push(n.id);
  // Order each column by the mean row of its inputs (two sweeps).
  const row = new Map();
  columns.forEach((ids) => ids.forEach((id, i) => row.set(id, i)));
  for (let sweep = 0; sweep < 2; sweep += 1) {
    for (const ids of columns.slice(1)) {
      const weight = (id) => {
        const ins = inputs.get(id);
        return ins.length ? ins.reduce((a, i) => a + row.get(i), 0) / ins.length : row.get(id);
      };
      ids.sort((a, b) => weight(a) - weight(b));
      ids.forEach((id, i) => row.set(id, i));
    }
  }
  const tallest = Math.max(...columns.map((ids) => ids.length));
  const height = tallest * NODE_H + (tallest - 1) * GAP_Y + 2 * MARGIN;
  const width = columns.length * NODE_W + (columns.length - 1) * GAP_X + 2 * MARGIN;
  const position = new Map();
  columns.forEach((ids, c) => {
    const used = ids.length * NODE_H + (ids.length - 1) * GAP_Y;
    const top = (height - used) / 2;
    ids.forEach((id, i) => position.set(id, { x: MARGIN + c * (NODE_W + GAP_X), y: top + i * (NODE_H + GAP_Y) }));
  });
  return { position, width, height };
}

/**
 * Draws `graph` into `container`. Returns `{update(figures, flowing), element}`:
 * `figures` maps a node id to `{rate, rateNote, backpressure}` (null: not measured).
 */
export function operatorGraph(graph, { onSelect = () => {}, compact = false } = {}) {
  const { position, width, height } = layout(graph);
  const defs = s(
    "defs",
    {},
    s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" })),
  );
  const edges = graph.edges.map((e) => {
    const a = position.get(e.from);
    const b = position.get(e.to);
    if (!a || !b) return null;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = b.x - 2;
    const y2 = b.y + NODE_H / 2;
    const bend = Math.max(24, (x2 - x1) / 2);
    return s("path", { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`, class: "edge", "marker-end": "url(#arrow)", dataset: { from: e.from, to: e.to } });
  });
  const figures = new Map();
  const nodes = graph.nodes.map((n) => {
    const p = position.get(n.id);
    const [name, family] = KINDS[n.kind] || [n.kind, "stateless"];
    const rate = s("text", { x: 14, y: 62, class: "node-metric" }, "— rec/s");
    const pressure = s("text", { x: NODE_W - 12, y: 62, class: "node-bp", "text-anchor": "end" }, "bp —");
    const pressureBar = s("rect", { x: 0, y: NODE_H - 3, width: 0, height: 3, class: "node-bp-bar" });
    figures.set(n.id, { rate, pressure, pressureBar });
    const group = s(
      "g",
      {
        class: `node family-${family}`,
        transform: `translate(${p.x},${p.y})`,
        tabindex: 0,
        role: "button",
        dataset: { id: n.id, kind: n.kind, label: n.label },
        onclick: () => select(n.id),
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") select(n.id);
        },
      },
      s("title", {}, n.detail),
      s("rect", { width: NODE_W, height: NODE_H, rx: 10, class: "node-box" }),
      s("rect", { x: 0, y: 0, width: 5, height: NODE_H, rx: 2.5, class: "node-band" }),
      s("text", { x: 14, y: 21, class: "node-kind" }, name.toUpperCase()),
      s("text", { x: NODE_W - 12, y: 21, class: "node-par", "text-anchor": "end" }, `×${n.parallelism}`),
      s("text", { x: 14, y: 41, class: "node-label" }, ellipsize(n.label, 22)),
      compact ? null : [rate, pressure],
      pressureBar,
    );
    return group;
  });
  const svg = s(
    "svg",
    { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "operator graph" },
    defs,
    s("g", { class: "edges" }, edges),
    s("g", { class: "nodes" }, nodes),
  );
  const element = h("div", { class: "graph-scroll" }, svg);

  function select(id) {
    for (const node of nodes) node.classList.toggle("selected", node.dataset.id === String(id));
    onSelect(graph.nodes.find((n) => n.id === id));
  }

  return {
    element,
    /** Sets each node's figures; `flowing` animates the edges. */
    update(values, flowing) {
      svg.classList.toggle("flowing", Boolean(flowing));
      for (const n of graph.nodes) {
        const f = figures.get(n.id);
        const v = values.get(n.id) || {};
        const rate = v.rate ?? n.records_per_second ?? null;
        replace(f.rate, rate === null ? "— rec/s" : `${formatRate(rate).replace("/s", "")} rec/s`);
        f.rate.classList.toggle("unknown", rate === null);
        const bp = v.backpressure ?? n.backpressure ?? null;
        replace(f.pressure, bp === null ? "bp —" : `bp ${Math.round(bp * 100)}%`);
        f.pressureBar.setAttribute("width", bp === null ? 0 : Math.max(0, Math.min(1, bp)) * NODE_W);
        f.pressureBar.classList.toggle("high", bp !== null && bp > 0.5);
      }
    },
    select,
  };
}

/** A plain-text rendering of the graph for assistive technology and copying. */
export function describeGraph(graph) {
  return graph.nodes.map((n) => `${kindName(n.kind)}: ${n.detail}`).join("\n");
}
