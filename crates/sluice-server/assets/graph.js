// The operator graph: a layered left-to-right drawing of a job's plan
// (sources on the left, sinks on the right) with live figures per node.

import { h, s, replace, ellipsize, formatRate } from "./util.js";

const NODE_W = 196;
const NODE_H = 76;
const NODE_H_COMPACT = 50;
const GAP_X = 56;
const GAP_Y = 18;
const MARGIN = 14;
const MIN_SCALE = 0.75;

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

/** The family of a node kind (its colour): io, io-out, stateless, stateful, time. */
export function kindFamily(kind) {
  return (KINDS[kind] || [kind, "stateless"])[1];
}

const DUMMY_H = 10;

/**
 * Columns (longest path from a source; sinks last) and rows of each node.
 * An edge spanning several columns passes through a waypoint in each, so it
 * is routed around the nodes in between.
 */
function layout(graph, nodeH) {
  const column = new Map();
  const inputsOf = new Map(graph.nodes.map((n) => [n.id, []]));
  for (const e of graph.edges) inputsOf.get(e.to)?.push(e.from);
  // Nodes come after their inputs.
  for (const n of graph.nodes) {
    const ins = inputsOf.get(n.id);
    column.set(n.id, ins.length ? Math.max(...ins.map((i) => column.get(i) ?? 0)) + 1 : 0);
  }
  const last = Math.max(0, ...column.values());
  for (const n of graph.nodes) if (n.kind === "sink") column.set(n.id, last);
  // Items: nodes and waypoints ("w<edge>:<column>"), with their links.
  const height = new Map(graph.nodes.map((n) => [n.id, nodeH]));
  const ins = new Map(graph.nodes.map((n) => [n.id, []]));
  const outs = new Map(graph.nodes.map((n) => [n.id, []]));
  const chains = graph.edges.map((e, index) => {
    const chain = [e.from];
    if (!column.has(e.from) || !column.has(e.to)) return chain;
    for (let c = column.get(e.from) + 1; c < column.get(e.to); c += 1) {
      const id = `w${index}:${c}`;
      column.set(id, c);
      height.set(id, DUMMY_H);
      ins.set(id, []);
      outs.set(id, []);
      chain.push(id);
    }
    chain.push(e.to);
    for (let i = 1; i < chain.length; i += 1) {
      ins.get(chain[i]).push(chain[i - 1]);
      outs.get(chain[i - 1]).push(chain[i]);
    }
    return chain;
  });
  const columns = Array.from({ length: last + 1 }, () => []);
  for (const [id, c] of column) columns[c].push(id);
  const row = new Map();
  columns.forEach((ids) => ids.forEach((id, i) => row.set(id, i)));
  // Order each column by the mean row of its neighbours, sweeping both ways.
  const sweep = (order, neighbours) => {
    for (const ids of order) {
      const weight = (id) => {
        const near = neighbours.get(id);
        return near.length ? near.reduce((a, i) => a + row.get(i), 0) / near.length : row.get(id);
      };
      const weights = new Map(ids.map((id) => [id, weight(id)]));
      ids.sort((a, b) => weights.get(a) - weights.get(b));
      ids.forEach((id, i) => row.set(id, i));
    }
  };
  for (let pass = 0; pass < 3; pass += 1) {
    sweep(columns.slice(1), ins);
    sweep(columns.slice(0, -1).reverse(), outs);
  }
  sweep(columns.slice(1), ins);
  const used = columns.map((ids) => ids.reduce((a, id) => a + height.get(id), 0) + Math.max(0, ids.length - 1) * GAP_Y);
  const total = Math.max(...used) + 2 * MARGIN;
  const width = columns.length * NODE_W + (columns.length - 1) * GAP_X + 2 * MARGIN;
  const position = new Map();
  columns.forEach((ids, c) => {
    let y = (total - used[c]) / 2;
    for (const id of ids) {
      position.set(id, { x: MARGIN + c * (NODE_W + GAP_X), y, h: height.get(id) });
      y += height.get(id) + GAP_Y;
    }
  });
  return { position, chains, width, height: total };
}

/** An edge through `chain`'s items: curves between columns, straight across waypoints. */
function edgePath(chain, position) {
  const points = chain.map((id) => position.get(id));
  if (points.length < 2 || points.some((p) => !p)) return null;
  const first = points[0];
  let x = first.x + NODE_W;
  let y = first.y + first.h / 2;
  let d = `M${x},${y}`;
  points.slice(1).forEach((p, i) => {
    const target = i === points.length - 2;
    const tx = target ? p.x - 2 : p.x;
    const ty = p.y + p.h / 2;
    const bend = Math.max(20, (tx - x) / 2);
    d += ` C${x + bend},${y} ${tx - bend},${ty} ${tx},${ty}`;
    x = tx;
    y = ty;
    if (!target) {
      x = p.x + NODE_W;
      d += ` L${x},${y}`;
    }
  });
  return d;
}

/**
 * Draws `graph` into `container`. Returns `{update(figures, flowing), element}`:
 * `figures` maps a node id to `{rate, backpressure}` (null: not measured;
 * left out: the figure the graph was fetched with).
 */
export function operatorGraph(graph, { onSelect = () => {}, compact = false } = {}) {
  const nodeH = compact ? NODE_H_COMPACT : NODE_H;
  const { position, chains, width, height } = layout(graph, nodeH);
  const defs = s(
    "defs",
    {},
    s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" })),
  );
  const edges = graph.edges.map((e, index) => {
    const d = edgePath(chains[index], position);
    return d ? s("path", { d, class: "edge", "marker-end": "url(#arrow)", dataset: { from: e.from, to: e.to } }) : null;
  });
  const figures = new Map();
  const nodes = graph.nodes.map((n) => {
    const p = position.get(n.id);
    const [name, family] = KINDS[n.kind] || [n.kind, "stateless"];
    const rate = s("text", { x: 14, y: 62, class: "node-metric" }, "— rec/s");
    const pressure = s("text", { x: NODE_W - 12, y: 62, class: "node-bp", "text-anchor": "end" }, "bp —");
    const pressureBar = s("rect", { x: 0, y: nodeH - 3, width: 0, height: 3, class: "node-bp-bar" });
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
      s("rect", { width: NODE_W, height: nodeH, rx: 10, class: "node-box" }),
      s("rect", { x: 0, y: 0, width: 5, height: nodeH, rx: 2.5, class: "node-band" }),
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
  // Wide plans shrink to fit, down to a still readable size; then scroll.
  new ResizeObserver(() => {
    const available = element.clientWidth - 2;
    if (available <= 0) return;
    const scale = Math.min(1, Math.max(MIN_SCALE, available / width));
    svg.setAttribute("width", Math.round(width * scale));
    svg.setAttribute("height", Math.round(height * scale));
  }).observe(element);

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
        const rate = (v.rate !== undefined ? v.rate : n.records_per_second) ?? null;
        replace(f.rate, rate === null ? "— rec/s" : `${formatRate(rate).replace("/s", "")} rec/s`);
        f.rate.classList.toggle("unknown", rate === null);
        const bp = (v.backpressure !== undefined ? v.backpressure : n.backpressure) ?? null;
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
