// The SQL editor page: a highlighted editor that the server validates as
// you type (errors underlined at their line and column), the plan it would
// run, a live preview of a query's output, and job submission.

import { h, replace, debounce, formatCount } from "./util.js";
import { api, tail, deleteOnUnload, jobsPoller } from "./api.js";
import { operatorGraph, kindName } from "./graph.js";

const DRAFT_KEY = "sluice.sql.draft";
const NAME_KEY = "sluice.sql.name";
const PREVIEW_ROWS = 200;

const EXAMPLE = `-- Events posted to /api/v1/streams/clicks/events land in the stream 'clicks'.
CREATE TABLE clicks (user_name STRING, amount BIGINT)
  WITH ('connector' = 'stream', 'stream' = 'clicks', 'format' = 'json');

-- A bare SELECT only shows its rows (Preview); use INSERT INTO for a job.
SELECT user_name, amount
FROM clicks
WHERE amount >= 10;
`;

const KEYWORDS = new Set(
  `SELECT FROM WHERE INSERT INTO CREATE TABLE VIEW TEMPORARY WITH AS AND OR NOT NULL IS IN ON JOIN LEFT RIGHT FULL OUTER INNER CROSS
  GROUP BY ORDER HAVING LIMIT UNION ALL DISTINCT CASE WHEN THEN ELSE END SET WATERMARK FOR PRIMARY KEY ENFORCED INTERVAL
  SECOND SECONDS MINUTE MINUTES HOUR HOURS DAY DAYS TUMBLE HOP CUMULATE SESSION DESCRIPTOR TABLE OVER PARTITION ROWS RANGE
  BETWEEN PRECEDING FOLLOWING CURRENT ROW ROW_NUMBER CAST TRUE FALSE METADATA VIRTUAL LATERAL SYSTEM_TIME OF EXECUTE STATEMENT
  BEGIN DESC ASC LIKE EXISTS COUNT SUM MIN MAX AVG STRING BIGINT INT INTEGER DOUBLE FLOAT BOOLEAN VARCHAR TIMESTAMP TIMESTAMP_LTZ
  DATE TIME DECIMAL ARRAY MAP PROCTIME`.split(/\s+/),
);

/** Splits SQL into `[class, text]` tokens for highlighting. */
function tokenize(sql) {
  const pattern = /(--[^\n]*)|('(?:[^']|'')*'?)|(`[^`]*`?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|(\s+)|(.)/g;
  const tokens = [];
  for (const m of sql.matchAll(pattern)) {
    if (m[1]) tokens.push(["comment", m[0]]);
    else if (m[2]) tokens.push(["string", m[0]]);
    else if (m[3]) tokens.push(["ident", m[0]]);
    else if (m[4]) tokens.push(["number", m[0]]);
    else if (m[5]) tokens.push([KEYWORDS.has(m[0].toUpperCase()) ? "keyword" : "word", m[0]]);
    else tokens.push([null, m[0]]);
  }
  return tokens;
}

/** The character range `[start, end)` an error at line/column points at. */
function errorRange(sql, line, column) {
  const lines = sql.split("\n");
  if (!line || line > lines.length) return null;
  const lineStart = lines.slice(0, line - 1).reduce((sum, l) => sum + l.length + 1, 0);
  const text = lines[line - 1];
  if (!column) {
    const indent = text.length - text.trimStart().length;
    return [lineStart + indent, lineStart + Math.max(indent + 1, text.length)];
  }
  const from = Math.min(column - 1, text.length);
  const word = /^[A-Za-z0-9_`'.]+/.exec(text.slice(from));
  return [lineStart + from, lineStart + from + Math.max(1, word ? word[0].length : 1)];
}

/** Highlighted nodes of `sql`, with `range` wrapped in an error mark. */
function highlight(sql, range) {
  const out = [];
  let offset = 0;
  for (const [kind, text] of tokenize(sql)) {
    const start = offset;
    const end = offset + text.length;
    offset = end;
    const pieces = [];
    if (range && start < range[1] && end > range[0]) {
      const a = Math.max(range[0], start) - start;
      const b = Math.min(range[1], end) - start;
      if (a > 0) pieces.push([false, text.slice(0, a)]);
      pieces.push([true, text.slice(a, b)]);
      if (b < text.length) pieces.push([false, text.slice(b)]);
    } else {
      pieces.push([false, text]);
    }
    for (const [marked, piece] of pieces) {
      const node = kind ? h("span", { class: `tok-${kind}` }, piece) : document.createTextNode(piece);
      out.push(marked ? h("mark", { class: "sql-error" }, node) : node);
    }
  }
  // A trailing newline needs content to keep the last line's height.
  out.push("\n");
  // An error past the end of the text (a missing ';').
  if (range && range[0] >= sql.length) out.push(h("mark", { class: "sql-error" }, " "));
  return out;
}

/** The SQL editor page. */
export function sqlPage(root, { navigate }) {
  let sql = localStorage.getItem(DRAFT_KEY) ?? EXAMPLE;
  let problem = null;
  let sequence = 0;
  let preview = null;
  let lastGraph = null;

  const textarea = h("textarea", {
    class: "code-input",
    spellcheck: "false",
    autocapitalize: "off",
    autocomplete: "off",
    "aria-label": "SQL script",
    wrap: "off",
  });
  textarea.value = sql;
  const backdrop = h("pre", { class: "code-highlight", "aria-hidden": "true" });
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const status = h("div", { class: "validation", role: "status", dataset: { state: "idle" } });
  const message = h("div", { class: "problem", hidden: true });
  const plan = h("div", { class: "plan-preview" });
  const nameInput = h("input", { class: "input", placeholder: "job name, e.g. big-clicks", "aria-label": "job name", value: localStorage.getItem(NAME_KEY) || "" });
  const parallelism = h("select", { class: "input narrow", "aria-label": "parallelism" }, [1, 2, 4, 8].map((p) => h("option", { value: p }, `×${p}`)));
  const submitError = h("div", { class: "form-error", role: "alert" });
  const previewButton = h("button", { class: "btn preview-button", type: "button", onclick: () => (preview ? stopPreview() : startPreview()) }, "▶ Preview");
  const submitButton = h("button", { class: "btn primary", type: "button", onclick: submit }, "Submit job");
  const previewCard = h("section", { class: "card preview", hidden: true });

  function paint() {
    const range = problem && problem.line ? errorRange(sql, problem.line, problem.column) : null;
    replace(backdrop, highlight(sql, range));
    const count = sql.split("\n").length;
    replace(
      gutter,
      Array.from({ length: count }, (_, i) => h("div", { class: problem && problem.line === i + 1 ? "bad" : null }, String(i + 1))),
    );
    syncScroll();
  }

  function syncScroll() {
    backdrop.scrollTop = textarea.scrollTop;
    backdrop.scrollLeft = textarea.scrollLeft;
    gutter.scrollTop = textarea.scrollTop;
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    replace(status, h("span", { class: "dot" }), text);
  }

  async function validate() {
    const mine = ++sequence;
    if (!sql.trim()) {
      problem = null;
      setStatus("idle", "Write a script to validate it");
      message.hidden = true;
      replace(plan);
      paint();
      return;
    }
    setStatus("checking", "Checking…");
    let answer;
    try {
      answer = await api("/api/v1/sql/validate", { method: "POST", body: { sql, parallelism: Number(parallelism.value) } });
    } catch (error) {
      if (mine !== sequence) return;
      setStatus("invalid", `Cannot validate: ${error.message}`);
      return;
    }
    if (mine !== sequence) return;
    if (answer.valid) {
      problem = null;
      const operators = answer.graph.nodes.length;
      setStatus("valid", `Valid — plans to ${operators} operator${operators === 1 ? "" : "s"}, ${answer.graph.bounded ? "bounded" : "unbounded"} input`);
      message.hidden = true;
      lastGraph = answer.graph;
      showPlan(answer.graph);
    } else {
      problem = answer.error;
      const where = problem.line ? `line ${problem.line}${problem.column ? `:${problem.column}` : ""}` : "script";
      setStatus("invalid", `Error at ${where}`);
      message.hidden = false;
      replace(message, h("strong", {}, "The planner says: "), problem.message);
      replace(plan, h("p", { class: "empty-note" }, "Fix the error to see the plan."));
    }
    paint();
  }

  function showPlan(graph) {
    const detail = h("p", { class: "node-detail muted" }, "Select an operator to see its definition.");
    const drawing = operatorGraph(graph, {
      compact: true,
      onSelect: (node) => replace(detail, h("b", {}, kindName(node.kind)), " ", h("code", {}, node.detail)),
    });
    replace(plan, drawing.element, detail);
  }

  const validateSoon = debounce(validate, 350);

  textarea.addEventListener("input", () => {
    sql = textarea.value;
    lastGraph = null;
    localStorage.setItem(DRAFT_KEY, sql);
    // Until the server answers, the old error position may no longer fit.
    paint();
    validateSoon();
  });
  textarea.addEventListener("scroll", syncScroll);
  textarea.addEventListener("keydown", (event) => {
    if (event.key === "Tab") {
      event.preventDefault();
      textarea.setRangeText("  ", textarea.selectionStart, textarea.selectionEnd, "end");
      textarea.dispatchEvent(new Event("input"));
    } else if ((event.ctrlKey || event.metaKey) && event.key === "Enter") {
      event.preventDefault();
      startPreview();
    }
  });
  parallelism.addEventListener("change", validateSoon);
  nameInput.addEventListener("input", () => localStorage.setItem(NAME_KEY, nameInput.value));

  async function submit() {
    replace(submitError);
    const name = nameInput.value.trim();
    if (!/^[A-Za-z0-9_-]{1,100}$/.test(name)) {
      replace(submitError, "Name the job: 1 to 100 letters, digits, '-' or '_'.");
      nameInput.focus();
      return;
    }
    submitButton.disabled = true;
    try {
      await api("/api/v1/jobs", { method: "POST", body: { name, sql, parallelism: Number(parallelism.value) } });
      jobsPoller.refresh();
      navigate(`#/jobs/${encodeURIComponent(name)}`);
    } catch (error) {
      replace(submitError, error.message);
    } finally {
      submitButton.disabled = false;
    }
  }

  // ---- Preview: a temporary job whose sink output is tailed live.

  async function startPreview() {
    if (preview) await stopPreview();
    const name = `preview-${Math.random().toString(16).slice(2, 8)}`;
    const rows = [];
    // Columns in the query's order (rows arrive as JSON objects).
    const columns = (lastGraph ? lastGraph.nodes.filter((n) => n.kind === "sink") : []).flatMap((n) => n.columns);
    const state = { name, rows, source: null, total: 0, columns: [...new Set(columns)], ended: false, inserts: /\bINSERT\s+INTO\b/i.test(sql) };
    preview = state;
    previewCard.hidden = false;
    replace(previewButton, "■ Stop preview");
    renderPreview(state, "Starting…");
    try {
      await api("/api/v1/jobs", { method: "POST", body: { name, sql, parallelism: Number(parallelism.value) } });
    } catch (error) {
      preview = null;
      replace(previewButton, "▶ Preview");
      renderPreview(state, null, error.message);
      return;
    }
    if (preview !== state) return;
    window.addEventListener("pagehide", state.unload = () => deleteOnUnload(name));
    const source = tail(name);
    state.source = source;
    source.addEventListener("open", () => renderPreview(state, "Live"));
    source.addEventListener("rows", (event) => {
      let batch;
      try {
        batch = JSON.parse(event.data);
      } catch {
        return;
      }
      for (const r of batch.rows || []) {
        rows.unshift({ table: batch.table, op: r.op, row: r.row });
        state.total += 1;
        for (const key of Object.keys(r.row || {})) if (!state.columns.includes(key)) state.columns.push(key);
      }
      rows.length = Math.min(rows.length, PREVIEW_ROWS);
      renderPreview(state, "Live");
    });
    source.addEventListener("lagged", () => renderPreview(state, "Live (some batches skipped: the page fell behind)"));
    source.addEventListener("error", async () => {
      if (preview !== state || state.ended) return;
      // The tail closes when the job stops: say why.
      try {
        const job = await api(`/api/v1/jobs/${encodeURIComponent(name)}`);
        if (job.status !== "running") {
          state.ended = true;
          source.close();
          const failure = [...job.events].reverse().find((e) => e.level === "error");
          renderPreview(state, `Job ${job.status}`, failure ? failure.message : null);
        }
      } catch {
        // Reconnects by itself.
      }
    });
  }

  async function stopPreview() {
    const state = preview;
    if (!state) return;
    preview = null;
    replace(previewButton, "▶ Preview");
    if (state.source) state.source.close();
    if (state.unload) window.removeEventListener("pagehide", state.unload);
    state.ended = true;
    renderPreview(state, "Stopped");
    try {
      await api(`/api/v1/jobs/${encodeURIComponent(state.name)}`, { method: "DELETE" });
    } catch {
      // Already gone.
    }
    jobsPoller.refresh();
  }

  function renderPreview(state, label, error = null) {
    const head = h(
      "header",
      { class: "card-head" },
      h("div", {}, h("h3", {}, "Preview"), h("p", { class: "muted small" }, `Temporary job ${state.name}, deleted when you stop or leave · newest first${state.inserts ? " · its INSERT INTO sinks receive the rows too" : ""}`)),
      h("div", { class: "row gap" }, h("span", { class: `live ${label === "Live" ? "on" : ""}` }, label || "Failed"), h("span", { class: "muted small" }, `${formatCount(state.total)} rows`)),
    );
    const tables = new Set(state.rows.map((r) => r.table));
    const showTable = tables.size > 1;
    const body = state.rows.length
      ? h(
          "div",
          { class: "table-scroll" },
          h(
            "table",
            { class: "data" },
            h("thead", {}, h("tr", {}, showTable ? h("th", {}, "table") : null, h("th", {}, "op"), state.columns.map((c) => h("th", {}, c)))),
            h(
              "tbody",
              {},
              state.rows.map((r) =>
                h(
                  "tr",
                  {},
                  showTable ? h("td", {}, r.table) : null,
                  h("td", {}, h("span", { class: `op op-${r.op.replace(/[^A-Z]/g, "")}` }, r.op)),
                  state.columns.map((c) => h("td", {}, cell(r.row ? r.row[c] : undefined))),
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "empty-note" }, error ? "" : "Waiting for rows… (the output appears as the job's sinks write it)");
    previewCard.dataset.job = state.name;
    replace(previewCard, head, error ? h("div", { class: "problem" }, error) : null, body);
  }

  function cell(value) {
    if (value === undefined || value === null) return h("span", { class: "null" }, "null");
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  replace(
    root,
    h(
      "div",
      { class: "page-head" },
      h("div", {}, h("h1", {}, "SQL editor"), h("p", { class: "muted" }, "Flink SQL: CREATE TABLE, SET, INSERT INTO — checked by the server as you type.")),
    ),
    h(
      "section",
      { class: "card editor-card" },
      h("div", { class: "editor-toolbar" }, status, h("span", { class: "muted small" }, "Ctrl+Enter previews")),
      h("div", { class: "editor" }, gutter, h("div", { class: "code" }, backdrop, textarea)),
      message,
      h("div", { class: "editor-actions" }, nameInput, parallelism, h("div", { class: "spacer" }), previewButton, submitButton),
      submitError,
    ),
    previewCard,
    h("section", { class: "card" }, h("header", { class: "card-head" }, h("div", {}, h("h3", {}, "Plan"), h("p", { class: "muted small" }, "The operators the script runs as"))), plan),
  );
  paint();
  validate();

  return () => {
    validateSoon.cancel();
    sequence += 1;
    stopPreview();
  };
}
