// DOM helpers and number formatting shared by the dashboard's pages.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") element.setAttribute("class", value);
    else if (key === "style") Object.assign(element.style, value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "value" && "value" in element) element.value = value;
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

/** Appends children: nodes, strings, numbers, arrays; skips null. */
export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: `h("div", {class: "x"}, "text", other)`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Removes every child of `element`, then appends `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** `fn` called at most once per `ms`, with the last arguments, after a quiet spell. */
export function debounce(fn, ms) {
  let timer = null;
  const debounced = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** 1234567 → "1,234,567". */
export function formatCount(value) {
  return value === null || value === undefined || Number.isNaN(value) ? "—" : integer.format(value);
}

/** 1234.5 → "1.23k": for rates and axes. */
export function formatCompact(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  const abs = Math.abs(value);
  const units = [
    [1e9, "G"],
    [1e6, "M"],
    [1e3, "k"],
  ];
  for (const [size, suffix] of units) {
    if (abs >= size) {
      const scaled = value / size;
      return `${scaled.toFixed(Math.abs(scaled) >= 100 ? 0 : Math.abs(scaled) >= 10 ? 1 : 2)}${suffix}`;
    }
  }
  if (abs >= 100 || abs === 0) return value.toFixed(0);
  if (abs >= 10) return value.toFixed(1);
  return value.toFixed(2).replace(/\.?0+$/, "") || "0";
}

/** Rows per second, or "—" when unknown. */
export function formatRate(value) {
  return value === null || value === undefined ? "—" : `${formatCompact(value)}/s`;
}

/** 1536 → "1.5 KiB". */
export function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** 3725 → "1h 2m". */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.floor(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** An RFC 3339 time as "12s ago", "5m ago", or a date. */
export function formatAgo(time) {
  const at = Date.parse(time);
  if (Number.isNaN(at)) return "—";
  const seconds = Math.max(0, (Date.now() - at) / 1000);
  if (seconds < 5) return "just now";
  if (seconds < 86400) return `${formatDuration(seconds).split(" ")[0]} ago`;
  return new Date(at).toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

/** An RFC 3339 time as local "HH:MM:SS". */
export function formatClock(time) {
  const at = typeof time === "number" ? time : Date.parse(time);
  if (Number.isNaN(at)) return "—";
  return new Date(at).toLocaleTimeString(undefined, { hour12: false });
}

/** A status pill: running, finished, failed, stopped, ... */
export function statusPill(status) {
  return h("span", { class: `pill pill-${status}`, dataset: { status } }, h("span", { class: "dot" }), status);
}

/** `text` cut to `max` characters with an ellipsis. */
export function ellipsize(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
