// The Sluice dashboard: login, the job list, a job's page, streams, and the
// SQL editor (sql.js). Hash routes: #/login, #/jobs, #/jobs/NAME, #/sql, #/streams.

import { h, s, replace, formatCount, formatRate, formatBytes, formatDuration, formatAgo, formatClock, statusPill, ellipsize } from "./util.js";
import { api, auth, setUnauthorizedHandler, jobsPoller, streamsPoller, jobRates, latestRate, streamRate, jobHistory, streamHistory } from "./api.js";
import { sparkline, TimeChart, bars, formatMillis } from "./charts.js";
import { operatorGraph, kindName, kindFamily } from "./graph.js";
import { sqlPage } from "./sql.js";

const app = document.getElementById("app");
let cleanup = null;
let version = "";

function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

setUnauthorizedHandler(() => {
  auth.clear();
  stopPolling();
  navigate("#/login?expired");
});

function startPolling() {
  jobsPoller.start();
  streamsPoller.start();
}

function stopPolling() {
  jobsPoller.stop();
  streamsPoller.stop();
  jobHistory.clear();
  streamHistory.clear();
}

// ---- Layout

const NAV = [
  ["#/jobs", "Jobs", "M3 4h14v3H3zM3 9h14v3H3zM3 14h14v3H3z"],
  ["#/sql", "SQL editor", "M6 5 2 10l4 5M14 5l4 5-4 5M11.5 3.5l-3 13"],
  ["#/streams", "Streams", "M2 6c3-3 5 3 8 0s5 3 8 0M2 11c3-3 5 3 8 0s5 3 8 0M2 16c3-3 5 3 8 0s5 3 8 0"],
];

function icon(path) {
  return s("svg", { class: "icon", viewBox: "0 0 20 20", width: 18, height: 18, "aria-hidden": "true" }, s("path", { d: path }));
}

function logo() {
  return s(
    "svg",
    { class: "logo", viewBox: "0 0 32 32", width: 28, height: 28, "aria-hidden": "true" },
    s("rect", { width: 32, height: 32, rx: 8, class: "logo-bg" }),
    s("path", { d: "M7 11c4-4 7 4 11 0s5-2 7-1M7 17c4-4 7 4 11 0s5-2 7-1M7 23c4-4 7 4 11 0s5-2 7-1", class: "logo-waves" }),
  );
}

function shell(active) {
  const main = h("main", { class: "content" });
  const runningBadge = h("span", { class: "nav-badge", hidden: true });
  const unsubscribe = jobsPoller.subscribe((jobs) => {
    const running = (jobs || []).filter((j) => j.status === "running").length;
    runningBadge.hidden = running === 0;
    replace(runningBadge, String(running));
  });
  const nav = h(
    "aside",
    { class: "sidebar" },
    h("a", { class: "brand", href: "#/jobs" }, logo(), h("span", {}, "Sluice")),
    h(
      "nav",
      {},
      NAV.map(([href, label, path]) =>
        h("a", { href, class: active === href ? "nav-item active" : "nav-item" }, icon(path), h("span", {}, label), href === "#/jobs" ? runningBadge : null),
      ),
    ),
    h(
      "div",
      { class: "sidebar-foot" },
      h("div", { class: "muted small" }, version ? `Sluice ${version}` : "Sluice"),
      h(
        "button",
        {
          class: "link-button",
          type: "button",
          onclick: () => {
            auth.clear();
            stopPolling();
            navigate("#/login");
          },
        },
        "Sign out",
      ),
    ),
  );
  replace(app, h("div", { class: "layout" }, nav, main));
  return { main, dispose: unsubscribe };
}

// ---- Login

function loginPage(expired) {
  const input = h("input", { class: "input", type: "password", id: "token", name: "token", placeholder: "sluice_…", autocomplete: "current-password", "aria-label": "API token" });
  const error = h("div", { class: "form-error", role: "alert" }, expired ? "Your session ended: sign in again." : "");
  const button = h("button", { class: "btn primary wide", type: "submit" }, "Sign in");
  const form = h(
    "form",
    {
      class: "login-card",
      onsubmit: async (event) => {
        event.preventDefault();
        const token = input.value.trim();
        if (!token) {
          replace(error, "Enter your API token.");
          return;
        }
        button.disabled = true;
        replace(error);
        try {
          await api("/api/v1/jobs", { token, quiet401: true });
          auth.set(token);
          startPolling();
          navigate("#/jobs");
        } catch (e) {
          replace(error, e.status === 401 ? "That token is not valid." : e.message);
        } finally {
          button.disabled = false;
        }
      },
    },
    h("div", { class: "login-brand" }, logo(), h("span", {}, "Sluice")),
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Enter an API token of this server."),
    h("label", { for: "token", class: "label" }, "API token"),
    input,
    error,
    button,
    h("p", { class: "muted small hint" }, "The admin token is printed once when the server first starts (or set with SLUICE_ADMIN_TOKEN). It stays in this tab only."),
  );
  replace(app, h("div", { class: "login" }, form));
  input.focus();
  return () => {};
}

// ---- Jobs list

function card(title, ...children) {
  return h("section", { class: "card" }, h("header", { class: "card-head" }, h("h3", {}, title)), children);
}

function kpi(label, valueNode, note = null) {
  return h("div", { class: "kpi" }, h("div", { class: "kpi-label" }, label), valueNode, note ? h("div", { class: "kpi-note" }, note) : null);
}

function jobsPage(root) {
  const totals = h("div", { class: "kpis" });
  const body = h("div", {});
  replace(
    root,
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", {}, "Jobs"), h("p", { class: "muted" }, "SQL pipelines hosted by this server")),
      h("a", { class: "btn primary", href: "#/sql" }, "+ New job"),
    ),
    totals,
    body,
  );
  const render = (jobs, error) => {
    if (error && !jobs) {
      replace(body, h("div", { class: "problem" }, error.message));
      return;
    }
    if (!jobs) return;
    const running = jobs.filter((j) => j.status === "running");
    const failed = jobs.filter((j) => j.status === "failed");
    const inRate = running.reduce((sum, j) => sum + (latestRate(jobRates(j.name).read) ?? 0), 0);
    const outRate = running.reduce((sum, j) => sum + (latestRate(jobRates(j.name).written) ?? 0), 0);
    replace(
      totals,
      kpi("Running", h("div", { class: "kpi-value" }, String(running.length)), `of ${jobs.length} job${jobs.length === 1 ? "" : "s"}`),
      kpi("Records in", h("div", { class: "kpi-value" }, formatRate(inRate)), "all running jobs"),
      kpi("Records out", h("div", { class: "kpi-value" }, formatRate(outRate)), "all sinks"),
      kpi("Failed", h("div", { class: failed.length ? "kpi-value bad" : "kpi-value" }, String(failed.length)), failed.length ? failed.map((j) => j.name).join(", ") : "none"),
    );
    if (!jobs.length) {
      replace(
        body,
        h(
          "section",
          { class: "card empty-state" },
          h("h3", {}, "No jobs yet"),
          h("p", { class: "muted" }, "Write a pipeline in the SQL editor, preview its output, and submit it as a job."),
          h("a", { class: "btn primary", href: "#/sql" }, "Open the SQL editor"),
        ),
      );
      return;
    }
    const rows = jobs.map((job) => {
      const rates = jobRates(job.name);
      const m = job.metrics;
      const written = m ? Object.values(m.rows_written).reduce((a, b) => a + b, 0) : null;
      const rate = m ? latestRate(rates.read) : null;
      return h(
        "tr",
        { class: "clickable", dataset: { job: job.name }, onclick: () => navigate(`#/jobs/${encodeURIComponent(job.name)}`) },
        h(
          "td",
          {},
          h("a", { class: "job-link", href: `#/jobs/${encodeURIComponent(job.name)}` }, job.name),
          job.name.startsWith("preview-") ? h("span", { class: "tag" }, "preview") : null,
          h("div", { class: "muted small mono job-sql", title: firstInsert(job.sql) }, firstInsert(job.sql)),
        ),
        h("td", {}, statusPill(job.status)),
        h("td", { class: "spark-cell" }, h("div", {}, sparkline(rates.read, { width: 112, height: 30 }), h("span", { class: "num" }, m ? formatRate(rate) : "—"))),
        h("td", { class: "num" }, m ? formatCount(m.rows_read) : "—"),
        h("td", { class: "num" }, m ? formatCount(written) : "—"),
        h("td", { class: "num" }, m ? formatDuration(m.uptime_seconds) : "—"),
        h("td", { class: "muted small" }, formatAgo(job.updated_at)),
      );
    });
    replace(
      body,
      h(
        "section",
        { class: "card flush" },
        h(
          "table",
          { class: "data jobs-table" },
          h(
            "thead",
            {},
            h("tr", {}, h("th", {}, "Job"), h("th", {}, "Status"), h("th", {}, "Records in, last minute"), h("th", { class: "num" }, "Read"), h("th", { class: "num" }, "Written"), h("th", { class: "num" }, "Uptime"), h("th", {}, "Changed")),
          ),
          h("tbody", {}, rows),
        ),
      ),
    );
  };
  return jobsPoller.subscribe(render);
}

/** The INSERT (or SELECT) line of a script, as a one-line summary. */
function firstInsert(sql) {
  const statement = sql
    .split(";")
    .map((part) => part.replace(/--[^\n]*/g, "").replace(/\s+/g, " ").trim())
    .find((part) => /^(INSERT|SELECT|EXECUTE)\b/i.test(part));
  return statement || sql.replace(/\s+/g, " ").trim();
}

// ---- A job

const CHECKPOINT_WORDS = /checkpoint|savepoint/i;

/** How often the job page fetches the per-operator figures (the server samples once a second). */
const OPERATORS_INTERVAL = 1000;

/** Records per second through an operator: what a sink receives, what anything else emits. */
function operatorRate(op) {
  return (op.kind === "sink" ? op.records_in_per_second : op.records_out_per_second) ?? null;
}

/** A backpressure ratio (0..1) as a bar and a percentage. */
function pressureCell(bp) {
  if (bp === null || bp === undefined) return h("span", { class: "muted" }, "—");
  const share = Math.max(0, Math.min(1, bp));
  const level = share > 0.5 ? "high" : share > 0.1 ? "some" : "low";
  return h(
    "span",
    { class: `bp bp-${level}` },
    h("span", { class: "bp-track" }, h("span", { class: "bp-fill", style: { width: `${(share * 100).toFixed(1)}%` } })),
    h("span", { class: "bp-value" }, `${Math.round(share * 100)}%`),
  );
}

function jobPage(root, name) {
  const path = `/api/v1/jobs/${encodeURIComponent(name)}`;
  const title = h("div", { class: "title-row" }, h("h1", {}, name));
  const actions = h("div", { class: "actions" });
  const actionError = h("div", { class: "form-error", role: "alert" });
  const failure = h("div", { class: "banner-error", role: "alert", hidden: true });
  const kpis = h("div", { class: "kpis" });
  const graphBody = h("div", { class: "graph-body" }, h("p", { class: "empty-note" }, "Loading the plan…"));
  const graphNote = h("p", { class: "node-detail muted" }, "Select an operator to see its definition.");
  const graphCaption = h("span", { class: "muted small graph-caption" });
  const throughput = new TimeChart({ id: "throughput", title: "Throughput", subtitle: "records per second", unit: "/s", empty: "Waiting for the job to report figures…" });
  const watermark = new TimeChart({ id: "watermark", title: "Watermark lag", subtitle: "event time behind the wall clock", ranges: [], height: 140, format: formatMillis, axisWidth: 58, empty: "Waiting for the job to report figures…" });
  const latency = new TimeChart({ id: "latency", title: "Processing time", subtitle: "per batch, all operators, p50 / p99", ranges: [], height: 140, format: formatMillis, axisWidth: 58, empty: "Waiting for the job to report figures…" });
  const operatorsBody = h("div", { class: "operators-body" }, h("p", { class: "empty-note" }, "Loading…"));
  const operatorsNote = h("div", { class: "card-note" });
  const checkpointCounts = h("div", { class: "card-note" });
  const checkpoints = h("div", {}, h("p", { class: "empty-note" }, "Loading…"));
  const events = h("div", {}, h("p", { class: "empty-note" }, "Loading…"));
  const deadLetters = h("div", {}, h("p", { class: "empty-note" }, "Loading…"));
  const script = h("pre", { class: "code-block" });
  const errorCount = h("span", { class: "count-badge", hidden: true });
  const dlqCount = h("span", { class: "count-badge", hidden: true });
  let graph = null;
  let drawing = null;
  let detail = null;
  let current = null;
  let live = null;
  let liveSkew = 0;
  let liveTimer = null;
  let disposed = false;

  replace(
    root,
    h("div", { class: "crumbs" }, h("a", { href: "#/jobs" }, "Jobs"), h("span", {}, "/"), h("span", {}, name)),
    h("div", { class: "page-head" }, title, actions),
    actionError,
    failure,
    kpis,
    h(
      "section",
      { class: "card", dataset: { panel: "graph" } },
      h("header", { class: "card-head" }, h("div", {}, h("h3", {}, "Operator graph"), h("p", { class: "muted small" }, "Records per second and backpressure per operator, live")), graphCaption),
      graphBody,
      h(
        "div",
        { class: "graph-foot" },
        graphNote,
        h("span", { class: "muted small graph-legend" }, h("b", {}, "rec/s"), " records per second · ", h("b", {}, "bp"), " backpressure: share of time blocked on the next operator · ", h("b", {}, "×n"), " subtasks"),
      ),
    ),
    h(
      "section",
      { class: "card flush operators-card", dataset: { panel: "operators" } },
      h("header", { class: "card-head" }, h("div", {}, h("h3", {}, "Operators"), h("p", { class: "muted small" }, "per operator, summed over its subtasks; rates and backpressure over the last second")), operatorsNote),
      operatorsBody,
    ),
    h(
      "div",
      { class: "grid-2" },
      throughput.element,
      h("section", { class: "card", dataset: { panel: "checkpoints" } }, h("header", { class: "card-head" }, h("div", {}, h("h3", {}, "Checkpoints"), h("p", { class: "muted small" }, "retained checkpoints, newest first")), checkpointCounts), checkpoints),
    ),
    h("div", { class: "grid-2" }, watermark.element, latency.element),
    h(
      "div",
      { class: "grid-2" },
      h("section", { class: "card", dataset: { panel: "events" } }, h("header", { class: "card-head" }, h("div", {}, h("h3", {}, "Errors and events ", errorCount), h("p", { class: "muted small" }, "starts, stops, savepoints, failures"))), events),
      h("section", { class: "card", dataset: { panel: "dead-letters" } }, h("header", { class: "card-head" }, h("div", {}, h("h3", {}, "Dead-lettered records ", dlqCount), h("p", { class: "muted small" }, "records a source or window could not use"))), deadLetters),
    ),
    h("details", { class: "card script" }, h("summary", {}, h("h3", {}, "SQL script"), h("span", { class: "muted small" }, "show")), script),
  );

  async function act(label, request) {
    replace(actionError);
    for (const b of actions.querySelectorAll("button")) b.disabled = true;
    try {
      await request();
      jobsPoller.refresh();
      refreshDetail();
    } catch (error) {
      replace(actionError, `${label}: ${error.message}`);
    } finally {
      for (const b of actions.querySelectorAll("button")) b.disabled = false;
    }
  }

  function renderActions(job) {
    const buttons = [];
    if (job.status === "running") {
      buttons.push(h("button", { class: "btn", type: "button", onclick: () => act("Stop", () => api(`${path}/stop`, { method: "POST", body: { savepoint: true } })) }, "Stop with savepoint"));
      buttons.push(h("button", { class: "btn", type: "button", onclick: () => act("Stop", () => api(`${path}/stop`, { method: "POST", body: { savepoint: false } })) }, "Drain"));
    } else if (job.status !== "stopping") {
      buttons.push(h("button", { class: "btn primary", type: "button", onclick: () => act("Resume", () => api(`${path}/resume`, { method: "POST" })) }, "Resume"));
    }
    buttons.push(
      h(
        "button",
        {
          class: "btn danger",
          type: "button",
          onclick: () => {
            if (!confirm(`Delete the job '${name}' with its checkpoints?`)) return;
            act("Delete", async () => {
              await api(path, { method: "DELETE" });
              navigate("#/jobs");
            });
          },
        },
        "Delete",
      ),
    );
    replace(actions, buttons);
  }

  let shownStatus = null;
  let liveStatus = null;
  const onJobs = (jobs, error) => {
    if (!jobs) return;
    const job = jobs.find((j) => j.name === name);
    if (!job) {
      if (!error) replace(kpis, h("div", { class: "problem" }, `There is no job named '${name}' (deleted?).`));
      return;
    }
    current = job;
    if (shownStatus !== job.status) {
      shownStatus = job.status;
      replace(title, h("h1", {}, name), statusPill(job.status));
      renderActions(job);
    }
    const m = job.metrics;
    const rates = jobRates(name);
    const written = m ? Object.values(m.rows_written).reduce((a, b) => a + b, 0) : null;
    replace(
      kpis,
      kpi("Records in", h("div", { class: "kpi-value", dataset: { kpi: "in" } }, m ? formatRate(latestRate(rates.read)) : "—"), m ? `${formatCount(m.rows_read)} read this run` : "not running"),
      kpi("Records out", h("div", { class: "kpi-value", dataset: { kpi: "out" } }, m ? formatRate(latestRate(rates.written)) : "—"), m ? `${formatCount(written)} written this run` : "not running"),
      kpi("Uptime", h("div", { class: "kpi-value" }, m ? formatDuration(m.uptime_seconds) : "—"), m ? `mean ${formatRate(m.rows_per_second)} in` : `since ${formatAgo(job.updated_at)}: ${job.status}`),
      kpi("Parallelism", h("div", { class: "kpi-value" }, graph ? `×${graph.parallelism}` : job.parallelism ? `×${job.parallelism}` : "—"), graph ? (graph.bounded ? "bounded input" : "unbounded input") : ""),
    );
    throughput.emptyText = job.status === "running" ? "Waiting for the job to report figures…" : `Not running (${job.status})`;
    throughput.update([
      { name: "In", color: "var(--series-1)", points: rates.read },
      { name: "Out", color: "var(--series-2)", points: rates.written },
    ]);
    // The operators poll redraws the rest once a second; a new status changes it at once.
    if (liveStatus !== job.status) {
      liveStatus = job.status;
      renderLive();
    } else {
      updateGraph();
    }
  };

  /** The per-operator figures of the running job; null when it is not running. */
  function liveOperators() {
    return current && current.status === "running" && live && live.operators && live.operators.length ? live.operators : null;
  }

  function updateGraph() {
    if (!drawing || !graph || !current) return;
    const job = current;
    const running = job.status === "running";
    const values = new Map(graph.nodes.map((n) => [n.id, { rate: null, backpressure: null }]));
    let flowing = false;
    const operators = liveOperators();
    if (operators) {
      for (const op of operators) {
        const rate = operatorRate(op);
        values.set(op.id, { rate, backpressure: op.backpressure ?? null });
        if ((rate ?? 0) > 0) flowing = true;
      }
    } else if (running && job.metrics) {
      // Until the first sample: the job's figures for its sources and sinks.
      const m = job.metrics;
      const rates = jobRates(name);
      const readRate = latestRate(rates.read);
      const sources = graph.nodes.filter((n) => n.kind === "source");
      if (sources.length === 1) values.set(sources[0].id, { rate: readRate, backpressure: null });
      for (const n of graph.nodes.filter((node) => node.kind === "sink")) {
        values.set(n.id, { rate: n.table in m.rows_written ? latestRate(rates.perSink(n.table)) : null, backpressure: null });
      }
      flowing = (readRate ?? 0) > 0;
    }
    drawing.update(values, running && flowing);
    // Replaced only when it changes, so the live dot keeps pulsing.
    const caption = !running ? "stopped" : operators && live.sampled_at ? "live" : "waiting";
    if (graphCaption.dataset.state !== caption) {
      graphCaption.dataset.state = caption;
      if (caption === "live") replace(graphCaption, h("span", { class: "live on" }, "Live"));
      else replace(graphCaption, caption === "stopped" ? "figures while the job runs" : "waiting for the first sample…");
    }
    graphCaption.title = caption === "live" ? `sampled at ${formatClock(live.sampled_at)}` : "";
  }

  /** The charts fed by the per-operator figures' history. */
  function updateLiveCharts() {
    const status = current ? current.status : null;
    const running = status === "running";
    const history = running && live && live.history ? live.history : [];
    const at = (p) => (p.t - liveSkew) / 1000;
    const points = (key) => history.map((p) => ({ t: at(p), v: p[key] ?? null }));
    const waiting = "Waiting for the job to report figures…";
    const stopped = status ? `Not running (${status})` : waiting;
    const declaresWatermark = graph ? graph.nodes.some((n) => n.kind === "watermark") : true;
    watermark.emptyText = !running
      ? stopped
      : !history.length
        ? waiting
        : declaresWatermark
          ? "No watermark yet: waiting for the first rows"
          : "No watermark: the job's tables declare no WATERMARK FOR";
    watermark.update([{ name: "Lag", color: "var(--series-1)", points: points("event_time_lag_ms") }]);
    latency.emptyText = !running ? stopped : !history.length ? waiting : "No batches processed in this span";
    latency.update([
      { name: "p50", color: "var(--series-1)", points: points("processing_p50_ms") },
      { name: "p99", color: "var(--series-3)", points: points("processing_p99_ms") },
    ]);
  }

  /** The operators table: one row per plan node, figures while the job runs. */
  function renderOperators() {
    const operators = liveOperators();
    const byId = new Map((operators || []).map((op) => [op.id, op]));
    const nodes = graph
      ? graph.nodes.map((n) => ({ id: n.id, kind: n.kind, label: n.label, parallelism: n.parallelism, detail: n.detail }))
      : (operators || []).map((op) => ({ id: op.id, kind: op.kind, label: op.label, parallelism: op.subtasks, detail: op.label }));
    if (!nodes.length) {
      if (!graph) replace(operatorsBody, h("p", { class: "empty-note" }, "Loading…"));
      return;
    }
    const late = live && operators ? Object.entries(live.late_records || {}).filter(([, n]) => n > 0) : [];
    const lateTotal = late.reduce((sum, [, n]) => sum + n, 0);
    replace(
      operatorsNote,
      lateTotal
        ? h("span", { class: "tag tag-late", title: late.map(([kind, n]) => `${kind}: ${formatCount(n)}`).join("\n") }, `${formatCount(lateTotal)} late row${lateTotal === 1 ? "" : "s"} dropped`)
        : null,
      operators ? null : h("span", { class: "muted small" }, current && current.status !== "running" ? "figures while the job runs" : "waiting for the first sample…"),
    );
    const dash = () => h("span", { class: "muted" }, "—");
    const millis = (value) => (value === null || value === undefined ? dash() : formatMillis(value));
    const rows = nodes.map((n) => {
      const op = byId.get(n.id);
      const isSource = n.kind === "source";
      const isSink = n.kind === "sink";
      const rate = op ? operatorRate(op) : null;
      return h(
        "tr",
        { class: "clickable", dataset: { operatorId: n.id, kind: n.kind }, onclick: () => drawing && drawing.select(n.id) },
        h(
          "td",
          { class: "op-name", title: n.detail },
          h("span", { class: `kind-chip family-${kindFamily(n.kind)}` }, kindName(n.kind)),
          h("div", { class: "op-label" }, n.label),
        ),
        h("td", { class: "num muted" }, `×${op && op.subtasks ? op.subtasks : n.parallelism}`),
        h("td", { class: "num" }, op && !isSource ? formatCount(op.records_in) : dash()),
        h("td", { class: "num" }, op && !isSink ? formatCount(op.records_out) : dash()),
        h("td", { class: "num strong" }, rate === null ? dash() : formatRate(rate)),
        h("td", { class: "num" }, pressureCell(op ? op.backpressure : null)),
        h("td", { class: "num" }, millis(op ? op.event_time_lag_ms : null)),
        h("td", { class: "num", title: op && op.processing_p50_ms != null ? `p50 ${formatMillis(op.processing_p50_ms)}` : null }, millis(op ? op.processing_p99_ms : null)),
        h("td", { class: "num" }, op && op.state_bytes > 0 ? formatBytes(op.state_bytes) : dash()),
      );
    });
    replace(
      operatorsBody,
      h(
        "table",
        { class: "data operators-table" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", {}, "Operator"),
            h("th", { class: "num", title: "subtasks" }, "Tasks"),
            h("th", { class: "num", title: "records received in this run" }, "In"),
            h("th", { class: "num", title: "records emitted in this run" }, "Out"),
            h("th", { class: "num", title: "records per second emitted (a sink: received) over the last second" }, "Rate"),
            h("th", { class: "num", title: "share of the last second its busiest subtask waited on the next operator" }, "Backpressure"),
            h("th", { class: "num", title: "wall clock minus the operator's watermark" }, "Watermark lag"),
            h("th", { class: "num", title: "99th percentile of the time to process one batch (a sink: one write)" }, "p99 / batch"),
            h("th", { class: "num", title: "state size in the latest checkpoint" }, "State"),
          ),
        ),
        h("tbody", {}, rows),
      ),
    );
  }

  function renderCheckpointCounts() {
    const figures = liveOperators() && live.checkpoints;
    if (!figures || (!figures.completed && !figures.failed)) {
      replace(checkpointCounts);
      return;
    }
    replace(
      checkpointCounts,
      h("span", { class: "count-chip good", title: "completed since the job started on this server" }, `${formatCount(figures.completed)} completed`),
      h("span", { class: figures.failed ? "count-chip bad" : "count-chip", title: "abandoned or failed" }, `${formatCount(figures.failed)} failed`),
    );
  }

  /** Everything fed by the per-operator figures. */
  function renderLive() {
    updateGraph();
    updateLiveCharts();
    renderOperators();
    renderCheckpointCounts();
  }

  async function pollOperators() {
    let delay = OPERATORS_INTERVAL;
    try {
      const answer = await api(`${path}/operators`);
      if (disposed) return;
      live = answer;
      if (answer && answer.sampled_at) {
        // A server clock far off this one's would push the history off the charts.
        const skew = answer.sampled_at - Date.now();
        liveSkew = Math.abs(skew) > 3000 ? skew : 0;
      }
      renderLive();
    } catch {
      // Keep the last figures; try again a little later.
      delay = OPERATORS_INTERVAL * 3;
    }
    if (!disposed) liveTimer = setTimeout(pollOperators, delay);
  }

  async function loadGraph() {
    try {
      graph = await api(`${path}/graph`);
    } catch (error) {
      replace(graphBody, h("div", { class: "problem" }, `The plan cannot be drawn: ${error.message}`));
      return;
    }
    drawing = operatorGraph(graph, {
      onSelect: (node) => replace(graphNote, h("b", {}, kindName(node.kind)), ` · ×${node.parallelism} · `, h("code", {}, node.detail)),
    });
    replace(graphBody, drawing.element);
    if (current) onJobs([current]);
    renderLive();
  }

  function renderEvents(list) {
    const errors = list.filter((e) => e.level === "error");
    errorCount.hidden = errors.length === 0;
    replace(errorCount, `${errors.length} error${errors.length === 1 ? "" : "s"}`);
    if (!list.length) {
      replace(events, h("p", { class: "empty-note" }, "Nothing happened yet."));
      return;
    }
    replace(
      events,
      h(
        "ol",
        { class: "timeline" },
        [...list].reverse().slice(0, 30).map((e) =>
          h("li", { class: `event event-${e.level}` }, h("span", { class: "event-dot" }), h("div", {}, h("div", { class: "event-message" }, e.message), h("div", { class: "muted small" }, `${formatClock(e.at)} · ${formatAgo(e.at)}`))),
        ),
      ),
    );
  }

  function renderCheckpoints(history, savepointEvents) {
    if (history.interval_ms === null && !history.checkpoints.length && !savepointEvents.length) {
      replace(checkpoints, h("p", { class: "empty-note" }, "Checkpoints are off for this job (execution.checkpointing.interval)."));
      return;
    }
    const list = history.checkpoints;
    const head = h(
      "div",
      { class: "checkpoint-summary" },
      h("div", {}, h("div", { class: "kpi-label" }, "Interval"), h("b", {}, history.interval_ms === null ? "off" : formatDuration(history.interval_ms / 1000).replace(/^0s$/, `${history.interval_ms} ms`))),
      h("div", {}, h("div", { class: "kpi-label" }, "Latest"), h("b", {}, list.length ? `#${list[0].id}, ${formatAgo(list[0].completed_at)}` : "none yet")),
      h("div", {}, h("div", { class: "kpi-label" }, "State size"), h("b", {}, list.length ? formatBytes(list[0].bytes) : "—")),
      list.length ? bars([...list].reverse().map((c) => ({ value: c.bytes, kind: c.kind, id: c.id })), { width: 180, height: 40, title: (v) => `#${v.id}: ${formatBytes(v.value)}` }) : null,
    );
    const rows = [
      ...list.slice(0, 6).map((c) => h("tr", {}, h("td", { class: "mono" }, `#${c.id}`), h("td", {}, h("span", { class: `tag tag-${c.kind}` }, c.kind)), h("td", { class: "num" }, formatBytes(c.bytes)), h("td", { class: "muted" }, `${formatClock(c.completed_at)} · ${formatAgo(c.completed_at)}`))),
      ...savepointEvents.slice(-3).reverse().map((e) => h("tr", {}, h("td", { class: "mono" }, "—"), h("td", {}, h("span", { class: "tag tag-savepoint" }, "savepoint")), h("td", { class: "muted small", colspan: 1 }, ellipsize(e.message, 40)), h("td", { class: "muted" }, `${formatClock(e.at)} · ${formatAgo(e.at)}`))),
    ];
    replace(
      checkpoints,
      head,
      rows.length
        ? h("table", { class: "data compact" }, h("thead", {}, h("tr", {}, h("th", {}, "Id"), h("th", {}, "Kind"), h("th", { class: "num" }, "Size"), h("th", {}, "Completed"))), h("tbody", {}, rows))
        : h(
            "p",
            { class: "empty-note" },
            current && current.status === "running" && history.interval_ms !== null
              ? `No checkpoint yet: the first one completes about ${formatDuration(history.interval_ms / 1000)} after the start.`
              : "No checkpoint retained.",
          ),
    );
  }

  function renderDeadLetters(letters) {
    dlqCount.hidden = letters.records.length === 0;
    replace(dlqCount, String(letters.records.length));
    if (!letters.records.length) {
      replace(
        deadLetters,
        h("p", { class: "empty-note" }, letters.files.length ? "The dead letter files are empty." : "None. Tables with 'errors' = 'dlq' (and late rows with table.exec.late-data = 'dlq') put the records they cannot use here."),
      );
      return;
    }
    replace(
      deadLetters,
      h(
        "ul",
        { class: "letters" },
        letters.records.slice(0, 12).map((r) =>
          h(
            "li",
            {},
            h("div", { class: "letter-head" }, h("b", {}, r.table || "?"), h("span", { class: "muted small" }, `${r.reason || ""}`), h("span", { class: "muted small right" }, r.time ? formatAgo(r.time) : "")),
            h("code", { class: "letter-raw" }, ellipsize(String(r.raw ?? ""), 160)),
            h("div", { class: "muted small" }, `${r.source || ""}${r.position !== undefined ? `:${r.position}` : ""}`),
          ),
        ),
      ),
      h("p", { class: "muted small" }, letters.files.map((f) => `${f.path} (${formatBytes(f.bytes)})`).join(" · ")),
    );
  }

  async function refreshDetail() {
    try {
      detail = await api(path);
    } catch (error) {
      if (error.status === 404) replace(events, h("p", { class: "problem" }, error.message));
      return;
    }
    renderEvents(detail.events);
    replace(script, detail.sql);
    const lastError = [...detail.events].reverse().find((e) => e.level === "error");
    failure.hidden = !(detail.status === "failed" && lastError);
    if (lastError) replace(failure, h("b", {}, "The job failed "), `${formatAgo(lastError.at)}: `, h("code", {}, lastError.message.replace(/^failed: /, "")));
    try {
      const history = await api(`${path}/checkpoints`);
      renderCheckpoints(history, detail.events.filter((e) => CHECKPOINT_WORDS.test(e.message)));
    } catch (error) {
      replace(checkpoints, h("p", { class: "problem" }, error.message));
    }
    try {
      renderDeadLetters(await api(`${path}/dead-letters?limit=50`));
    } catch (error) {
      replace(deadLetters, h("p", { class: "problem" }, error.message));
    }
  }

  loadGraph();
  refreshDetail();
  pollOperators();
  const timer = setInterval(refreshDetail, 4000);
  const unsubscribe = jobsPoller.subscribe(onJobs);
  return () => {
    disposed = true;
    clearTimeout(liveTimer);
    clearInterval(timer);
    unsubscribe();
    for (const chart of [throughput, watermark, latency]) chart.dispose();
  };
}

// ---- Streams

function streamsPage(root) {
  const kpis = h("div", { class: "kpis" });
  const body = h("div", {});
  const chart = new TimeChart({ id: "ingest", title: "Ingest", subtitle: "events appended per second, all streams", unit: "/s", empty: "No events arriving" });
  replace(
    root,
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Streams"), h("p", { class: "muted" }, "The embedded durable log: HTTP ingest appends, jobs read with the 'stream' connector"))),
    kpis,
    chart.element,
    body,
  );
  const render = (streams, error) => {
    if (error && !streams) {
      replace(body, h("div", { class: "problem" }, error.message));
      return;
    }
    if (!streams) return;
    const totalRate = streams.reduce((sum, st) => sum + (latestRate(streamRate(st.name)) ?? 0), 0);
    const totalBytes = streams.reduce((sum, st) => sum + st.partitions.reduce((a, p) => a + p.bytes, 0), 0);
    const totalEvents = streams.reduce((sum, st) => sum + st.partitions.reduce((a, p) => a + p.end_offset, 0), 0);
    replace(
      kpis,
      kpi("Streams", h("div", { class: "kpi-value" }, String(streams.length)), `${streams.reduce((a, st) => a + st.partitions.length, 0)} partitions`),
      kpi("Ingest rate", h("div", { class: "kpi-value" }, formatRate(totalRate)), "events appended"),
      kpi("Events", h("div", { class: "kpi-value" }, formatCount(totalEvents)), "end offsets, all partitions"),
      kpi("On disk", h("div", { class: "kpi-value" }, formatBytes(totalBytes)), "segment files"),
    );
    // One summed series: align the streams' samples by time.
    const byTime = new Map();
    for (const st of streams) for (const p of streamRate(st.name)) if (p.v !== null) byTime.set(p.t, (byTime.get(p.t) || 0) + p.v);
    chart.update([{ name: "Events in", color: "var(--series-1)", points: [...byTime].map(([t, v]) => ({ t, v })).sort((a, b) => a.t - b.t) }]);
    if (!streams.length) {
      replace(
        body,
        h(
          "section",
          { class: "card empty-state" },
          h("h3", {}, "No streams yet"),
          h("p", { class: "muted" }, "A stream is created by the first event posted to it:"),
          h("pre", { class: "code-block" }, `curl -H "Authorization: Bearer $SLUICE_TOKEN" -d '{"user_name":"ann","amount":12}' \\\n     ${location.origin}/api/v1/streams/clicks/events`),
        ),
      );
      return;
    }
    replace(
      body,
      h(
        "section",
        { class: "card flush" },
        h(
          "table",
          { class: "data" },
          h(
            "thead",
            {},
            h("tr", {}, h("th", {}, "Stream"), h("th", {}, "Ingest, last minute"), h("th", { class: "num" }, "Events"), h("th", { class: "num" }, "Retained"), h("th", { class: "num" }, "Size"), h("th", {}, "Partitions"), h("th", { class: "num", title: "Records beyond the offsets each reading job's latest checkpoint committed" }, "Lag")),
          ),
          h(
            "tbody",
            {},
            streams.map((st) => {
              const rate = streamRate(st.name);
              const end = st.partitions.reduce((a, p) => a + p.end_offset, 0);
              const retained = st.partitions.reduce((a, p) => a + (p.end_offset - p.start_offset), 0);
              const bytes = st.partitions.reduce((a, p) => a + p.bytes, 0);
              return h(
                "tr",
                { dataset: { stream: st.name } },
                h("td", {}, h("b", {}, st.name), h("div", { class: "muted small" }, `${formatCount(st.ingested_events)} via HTTP since start`)),
                h("td", { class: "spark-cell" }, h("div", {}, sparkline(rate, { width: 112, height: 30, color: "var(--series-2)" }), h("span", { class: "num" }, formatRate(latestRate(rate))))),
                h("td", { class: "num" }, formatCount(end)),
                h("td", { class: "num" }, formatCount(retained)),
                h("td", { class: "num" }, formatBytes(bytes)),
                h("td", {}, h("div", { class: "partitions" }, st.partitions.map((p) => h("span", { class: "partition", title: `partition ${p.partition}: offsets ${p.start_offset}–${p.end_offset}, ${formatBytes(p.bytes)}` }, `${p.partition}: ${formatCount(p.end_offset)}`)))),
                h(
                  "td",
                  { class: "num" },
                  (st.consumers || []).length === 0
                    ? h("span", { class: "muted", title: "no job has checkpointed a read of this stream" }, "—")
                    : (st.consumers || []).map((c) => h("div", { title: `committed offsets ${JSON.stringify(c.committed_offsets)}` }, `${formatCount(c.lag)} `, h("span", { class: "muted small" }, c.job))),
                ),
              );
            }),
          ),
        ),
      ),
      h("p", { class: "muted small note" }, "Lag: records beyond what each reading job's latest checkpoint committed."),
    );
  };
  const unsubscribe = streamsPoller.subscribe(render);
  return () => {
    unsubscribe();
    chart.dispose();
  };
}

// ---- Router

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const hash = location.hash || "#/jobs";
  if (hash.startsWith("#/login")) {
    cleanup = loginPage(hash.includes("expired"));
    return;
  }
  if (!auth.token) {
    // A server with authentication off needs no token.
    try {
      await api("/api/v1/jobs", { token: null, quiet401: true });
      auth.set("none");
    } catch {
      navigate("#/login");
      return;
    }
  }
  startPolling();
  const [, page, ...rest] = hash.split("/");
  const active = page === "jobs" || !page ? "#/jobs" : `#/${page}`;
  const { main, dispose } = shell(active);
  let pageCleanup = () => {};
  if (page === "jobs" && rest.length) pageCleanup = jobPage(main, decodeURIComponent(rest.join("/")));
  else if (page === "sql") pageCleanup = sqlPage(main, { navigate });
  else if (page === "streams") pageCleanup = streamsPage(main);
  else pageCleanup = jobsPage(main);
  cleanup = () => {
    pageCleanup();
    dispose();
  };
  window.scrollTo(0, 0);
}

window.addEventListener("hashchange", route);
api("/api/v1/health", { token: null })
  .then((health) => {
    version = health.version;
  })
  .catch(() => {})
  .finally(route);
