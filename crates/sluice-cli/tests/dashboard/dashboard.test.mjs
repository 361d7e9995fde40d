// Browser test of the dashboard `sluice serve` embeds: headless Chromium
// driven by playwright-core. Run by crates/sluice-cli/tests/dashboard.rs
// against a real server with a running job fed by a background thread.
//
// Environment: SLUICE_DASHBOARD_URL, SLUICE_DASHBOARD_TOKEN,
// SLUICE_DASHBOARD_JOB (a running job), SLUICE_DASHBOARD_SOURCE and
// SLUICE_DASHBOARD_SINK (its tables), SLUICE_TEST_CHROMIUM (the browser),
// SLUICE_DASHBOARD_SCREENSHOT (PNG path of the job page; the jobs list,
// SQL editor and streams pages go next to it).

import assert from "node:assert/strict";
import path from "node:path";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env("SLUICE_DASHBOARD_URL");
const token = env("SLUICE_DASHBOARD_TOKEN");
const job = env("SLUICE_DASHBOARD_JOB");
const sourceTable = env("SLUICE_DASHBOARD_SOURCE");
const sinkTable = env("SLUICE_DASHBOARD_SINK");
const screenshot = env("SLUICE_DASHBOARD_SCREENSHOT");
const sibling = (suffix) => path.join(path.dirname(screenshot), `${path.basename(screenshot, ".png")}-${suffix}.png`);

const step = (text) => console.log(`- ${text}`);

const browser = await chromium.launch({
  executablePath: env("SLUICE_TEST_CHROMIUM"),
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    // Refused requests (the login probe's 401) are logged by the browser itself.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      problems.push(`console error: ${message.text()}`);
    }
  });

  step("the dashboard asks for a token");
  await page.goto(url);
  await page.locator("#token").waitFor();
  await page.fill("#token", "not-the-token");
  await page.click("button[type=submit]");
  await page.getByText("That token is not valid.").waitFor();

  step("logging in shows the job list with the running job");
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  const row = page.locator(`tr[data-job="${job}"]`);
  await row.waitFor();
  assert.equal((await row.locator(".pill").textContent()).trim(), "running");
  await page.waitForFunction(
    (name) => document.querySelector(`tr[data-job="${name}"] .sparkline .spark-line`) !== null,
    job,
  );
  await page.waitForTimeout(2000);
  await page.screenshot({ path: sibling("jobs") });

  step("the job page draws the operator graph");
  await row.locator(".job-link").click();
  await page.waitForURL(new RegExp(`#/jobs/${job}$`));
  const graph = page.locator('[data-panel="graph"] svg.graph');
  await graph.locator("g.node").first().waitFor();
  const kinds = await graph.locator("g.node").evaluateAll((nodes) => nodes.map((n) => n.dataset.kind));
  assert.ok(kinds.includes("source") && kinds.includes("sink"), `node kinds: ${kinds}`);
  assert.ok(kinds.length >= 2, `node kinds: ${kinds}`);
  assert.ok(await graph.locator("g.edges path.edge").count() >= kinds.length - 1);
  await graph.locator("g.node[data-kind=source] text.node-label", { hasText: sourceTable }).waitFor();
  await graph.locator("g.node[data-kind=sink] text.node-label", { hasText: sinkTable }).waitFor();
  // Every node shows its live rate, the inner operators included (per-operator figures).
  await page.waitForFunction(() => {
    const metric = document.querySelector('svg.graph g.node[data-kind=source] text.node-metric');
    return metric && /^[0-9.]+[kMG]? rec\/s$/.test(metric.textContent);
  });
  const inner = kinds.filter((kind) => kind !== "source" && kind !== "sink");
  if (inner.length) {
    await page.waitForFunction(() => {
      const nodes = [...document.querySelectorAll('[data-panel="graph"] svg.graph g.node')].filter(
        (n) => n.dataset.kind !== "source" && n.dataset.kind !== "sink",
      );
      return nodes.some((n) => /^[0-9.]+[kMG]? rec\/s$/.test(n.querySelector("text.node-metric")?.textContent ?? ""));
    });
  }

  step("the operators table has a row per operator with live figures");
  const operatorRows = page.locator('[data-panel="operators"] tr[data-operator-id]');
  await page.waitForFunction(
    (count) => document.querySelectorAll('[data-panel="operators"] tr[data-operator-id]').length === count,
    kinds.length,
  );
  const rowIds = await operatorRows.evaluateAll((rows) => rows.map((r) => r.dataset.operatorId));
  const nodeIds = await graph.locator("g.node").evaluateAll((nodes) => nodes.map((n) => n.dataset.id));
  assert.deepEqual([...rowIds].sort(), [...nodeIds].sort(), "operator rows vs graph nodes");
  await page.waitForFunction(() =>
    [...document.querySelectorAll('[data-panel="operators"] tr[data-operator-id][data-kind="source"] td')].some((td) =>
      /^[0-9.]+[kMG]?\/s$/.test(td.textContent.trim()),
    ),
  );

  step("the throughput chart updates live");
  const line = page.locator('[data-chart="throughput"] path.series-0');
  await page.waitForFunction(() => {
    const path = document.querySelector('[data-chart="throughput"] path.series-0');
    return path && Number(path.dataset.points) >= 2 && path.getAttribute("d").length > 0;
  });
  const before = { d: await line.getAttribute("d"), points: Number(await line.getAttribute("data-points")) };
  await page.waitForTimeout(2500);
  const after = { d: await line.getAttribute("d"), points: Number(await line.getAttribute("data-points")) };
  assert.notEqual(after.d, before.d, "the throughput line did not change");
  assert.ok(after.points > before.points, `points ${before.points} -> ${after.points}`);
  const peak = await page.evaluate(() => {
    const text = document.querySelector('[data-kpi="in"]').textContent;
    return text;
  });
  assert.match(peak, /^[0-9.]+[kMG]?\/s$/, `records in: ${peak}`);

  step("the processing time and watermark charts draw the per-operator history");
  await page.waitForFunction(() => {
    const path = document.querySelector('[data-chart="latency"] path.series-0');
    return path && Number(path.dataset.points) >= 2 && path.getAttribute("d").length > 0;
  });
  // A job whose tables declare no WATERMARK FOR has no lag to draw: the chart says why.
  await page.waitForFunction(() => {
    const path = document.querySelector('[data-chart="watermark"] path.series-0');
    const empty = document.querySelector('[data-chart="watermark"] .empty-text');
    return (path && Number(path.dataset.points) >= 2) || (empty && /watermark/i.test(empty.textContent));
  });
  if (!kinds.includes("watermark")) {
    assert.match(await page.locator('[data-chart="watermark"] .empty-text').textContent(), /WATERMARK FOR/);
  }
  await page.locator('[data-panel="checkpoints"] table').waitFor();
  await page.locator('[data-panel="graph"] g.node[data-kind=sink]').click();
  await page.locator('[data-panel="graph"] .node-detail code', { hasText: /^Sink `/ }).waitFor();
  await page.waitForTimeout(1200);
  await page.screenshot({ path: screenshot, fullPage: true });

  step("the SQL editor flags an invalid script at its position");
  await page.click('a.nav-item[href="#/sql"]');
  const editor = page.locator("textarea.code-input");
  await editor.waitFor();
  await editor.fill(
    "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');\nSELEC a FROM t;\n",
  );
  await page.locator('.validation[data-state="invalid"]').waitFor();
  await page.locator("mark.sql-error").waitFor();
  assert.equal((await page.locator(".gutter .bad").textContent()).trim(), "2");
  assert.match(await page.locator(".problem").textContent(), /line 2/);
  await page.screenshot({ path: sibling("sql"), fullPage: true });
  await editor.fill(
    `CREATE TABLE ${sourceTable} (user_name STRING, amount BIGINT)\n  WITH ('connector' = 'stream', 'stream' = '${sourceTable}', 'format' = 'json');\nSELECT user_name, amount FROM ${sourceTable} WHERE amount > 5;\n`,
  );
  await page.locator('.validation[data-state="valid"]').waitFor();
  assert.equal(await page.locator("mark.sql-error").count(), 0);
  await page.locator(".plan-preview svg.graph g.node[data-kind=sink]").waitFor();

  step("previewing a query shows its live rows, and stopping deletes the preview job");
  await page.click("button.preview-button");
  await page.locator(".preview .live.on").waitFor();
  await page.locator(".preview table tbody tr").first().waitFor();
  const headers = await page.locator(".preview thead th").allTextContents();
  assert.deepEqual(headers, ["op", "user_name", "amount"]);
  const previewJob = await page.locator(".preview").getAttribute("data-job");
  assert.match(previewJob, /^preview-/);
  await page.screenshot({ path: sibling("preview"), fullPage: true });
  await page.click("button.preview-button");
  await page.locator(".preview .live", { hasText: "Stopped" }).waitFor();
  await page.waitForFunction(async (name) => {
    const response = await fetch(`/api/v1/jobs/${name}`, { headers: { Authorization: `Bearer ${sessionStorage.getItem("sluice.token")}` } });
    return response.status === 404;
  }, previewJob);

  step("the streams page lists the stream with its ingest rate");
  await page.click('a.nav-item[href="#/streams"]');
  await page.locator(`tr[data-stream="${sourceTable}"]`).waitFor();
  await page.waitForFunction(
    (name) => document.querySelector(`tr[data-stream="${name}"] .spark-line`) !== null,
    sourceTable,
  );
  await page.screenshot({ path: sibling("streams"), fullPage: true });

  step("signing out returns to the login");
  await page.click("text=Sign out");
  await page.locator("#token").waitFor();
  await context.close();
} finally {
  await browser.close();
}
assert.deepEqual(problems, [], "the page logged errors");
console.log(`ok: screenshots at ${screenshot}`);
