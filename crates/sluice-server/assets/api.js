// The REST API client: the bearer token (kept in sessionStorage), JSON
// requests, and pollers that keep a few minutes of job and stream figures
// in memory for the charts.

const TOKEN_KEY = "sluice.token";

/** Seconds of figures kept per job and stream. */
export const HISTORY_SECONDS = 300;

export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An error answered by the API: `{"error": {"code", "message"}}`. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

/** What to do when the API answers 401 (the token expired or was revoked). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

function headers(token, json) {
  const result = {};
  if (token) result.Authorization = `Bearer ${token}`;
  if (json) result["Content-Type"] = "application/json";
  return result;
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Calls the API; resolves to the JSON answer, rejects with an ApiError. */
export async function api(path, { method = "GET", body, token = auth.token, quiet401 = false } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(token, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, "unreachable", `cannot reach the server (${error.message})`);
  }
  const answer = await parse(response);
  if (response.ok) return answer;
  const detail = answer && answer.error ? answer.error : { code: "http_error", message: String(answer || response.statusText) };
  const error = new ApiError(response.status, detail.code, detail.message);
  if (response.status === 401 && !quiet401) onUnauthorized(error);
  throw error;
}

/** Deletes a job even while the page unloads (a preview job left behind). */
export function deleteOnUnload(job) {
  fetch(`/api/v1/jobs/${encodeURIComponent(job)}`, {
    method: "DELETE",
    headers: headers(auth.token, false),
    keepalive: true,
  }).catch(() => {});
}

/** The live tail of a job as an EventSource (the token goes in the query). */
export function tail(job, table) {
  const query = new URLSearchParams({ access_token: auth.token || "" });
  if (table) query.set("table", table);
  return new EventSource(`/api/v1/jobs/${encodeURIComponent(job)}/tail?${query}`);
}

/** Fetches `fetcher()` every `interval` ms while someone listens. */
class Poller {
  constructor(interval, fetcher) {
    this.interval = interval;
    this.fetcher = fetcher;
    this.listeners = new Set();
    this.timer = null;
    this.latest = null;
    this.error = null;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    if (this.latest || this.error) listener(this.latest, this.error);
    return () => this.listeners.delete(listener);
  }

  start() {
    if (this.timer !== null) return;
    const tick = async () => {
      try {
        this.latest = await this.fetcher();
        this.error = null;
      } catch (error) {
        this.error = error;
      }
      for (const listener of [...this.listeners]) listener(this.latest, this.error);
      if (this.timer !== null) this.timer = setTimeout(tick, this.interval);
    };
    this.timer = setTimeout(tick, 0);
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.latest = null;
    this.error = null;
  }

  /** Fetches now rather than at the next tick. */
  refresh() {
    if (this.timer === null) return;
    this.stop();
    this.start();
  }
}

/** Samples per key, dropping those older than HISTORY_SECONDS. */
class History {
  constructor() {
    this.samples = new Map();
  }

  push(key, sample) {
    let list = this.samples.get(key);
    if (!list) {
      list = [];
      this.samples.set(key, list);
    }
    list.push(sample);
    const oldest = sample.t - HISTORY_SECONDS - 5;
    while (list.length && list[0].t < oldest) list.shift();
  }

  get(key) {
    return this.samples.get(key) || [];
  }

  clear() {
    this.samples.clear();
  }
}

const now = () => Date.now() / 1000;

/** Per-job samples: `{t, up, read, written: {table: n}, writtenTotal}`; `up` null while not running. */
export const jobHistory = new History();

/** Per-stream samples: `{t, events}` (the sum of the partitions' end offsets). */
export const streamHistory = new History();

export const jobsPoller = new Poller(1000, async () => {
  const jobs = await api("/api/v1/jobs");
  const t = now();
  for (const job of jobs) {
    const m = job.metrics;
    const written = m ? m.rows_written : {};
    jobHistory.push(job.name, {
      t,
      up: m ? m.uptime_seconds : null,
      read: m ? m.rows_read : null,
      written,
      writtenTotal: m ? Object.values(written).reduce((a, b) => a + b, 0) : null,
    });
  }
  return jobs;
});

export const streamsPoller = new Poller(2000, async () => {
  const streams = await api("/api/v1/streams");
  const t = now();
  for (const stream of streams) {
    const events = stream.partitions.reduce((sum, p) => sum + p.end_offset, 0);
    streamHistory.push(stream.name, { t, events });
  }
  return streams;
});

/**
 * Rates per second of `value(sample)` over the samples: `[{t, v}]`, with
 * `v` null where the job was not running or restarted. Each rate spans two
 * sample intervals, smoothing the counters' half-second steps.
 */
export function rates(samples, value, clock = (sample) => sample.up, span = 2) {
  const points = [];
  for (let i = 1; i < samples.length; i += 1) {
    const j = Math.max(0, i - span);
    const a = samples[j];
    const b = samples[i];
    const va = value(a);
    const vb = value(b);
    const ca = clock(a);
    const cb = clock(b);
    let v = null;
    if (va !== null && vb !== null && va !== undefined && vb !== undefined && ca !== null && cb !== null && cb > ca && vb >= va) {
      // A restart in between resets the counters: no rate across it.
      let restarted = false;
      for (let k = j + 1; k <= i; k += 1) {
        if (clock(samples[k]) === null || clock(samples[k]) < clock(samples[k - 1])) restarted = true;
      }
      if (!restarted) v = (vb - va) / (cb - ca);
    }
    points.push({ t: b.t, v });
  }
  return points;
}

/** The latest non-null rate of `points`, or null. */
export function latestRate(points) {
  for (let i = points.length - 1; i >= Math.max(0, points.length - 3); i -= 1) {
    if (points[i].v !== null) return points[i].v;
  }
  return null;
}

/** Throughput series of a job: rows read and rows written per second. */
export function jobRates(name) {
  const samples = jobHistory.get(name);
  return {
    read: rates(samples, (s) => s.read),
    written: rates(samples, (s) => s.writtenTotal),
    perSink: (table) => rates(samples, (s) => (s.written ? s.written[table] ?? null : null)),
  };
}

/** Ingest rate of a stream in events per second. */
export function streamRate(name) {
  return rates(streamHistory.get(name), (s) => s.events, (s) => s.t);
}
