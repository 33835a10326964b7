// The raftq web console: one page, hash-routed, talking only to this
// node's REST API (/api/v1) with the token the user signed in with.
// Every value from the server goes into the page as text, never as HTML.
"use strict";

const TOKEN_KEY = "raftq.token";
const REFRESH_MS = 3000;
const STATES = ["ready", "scheduled", "leased", "dead"];

let me = null; // the /whoami answer
let timer = null;

// ---------- small helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function fmt(n) {
  return typeof n === "number" ? n.toLocaleString("en-US") : String(n ?? "");
}

function rate(n) {
  if (!n) return "0/s";
  return (n >= 100 ? Math.round(n).toLocaleString("en-US") : n.toFixed(1)) + "/s";
}

function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const delta = Math.round((ms - Date.now()) / 1000);
  const rel = Math.abs(delta) < 90 ? `${Math.abs(delta)} s` : Math.abs(delta) < 5400 ? `${Math.round(Math.abs(delta) / 60)} min` : `${Math.round(Math.abs(delta) / 3600)} h`;
  return `${d.toISOString().replace("T", " ").slice(0, 19)} UTC (${delta >= 0 ? "in " + rel : rel + " ago"})`;
}

function toast(message, bad) {
  const t = document.getElementById("toast");
  t.textContent = message;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 3000);
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  // A read retried while a shard elects or moves its leader (503); an
  // action is not, so it never runs twice behind the user's back.
  const deadline = Date.now() + (method === "GET" ? 5000 : 0);
  for (;;) {
    const res = await fetch("/api/v1" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
    if (res.ok) return json;
    if (res.status !== 503 || Date.now() > deadline) throw new ApiError(res.status, json);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const q = encodeURIComponent;

// ---------- roles ----------

function matches(pattern, queue) {
  return pattern.endsWith("*") ? queue.startsWith(pattern.slice(0, -1)) : pattern === queue;
}

function may(role, queue) {
  if (!me) return false;
  if (me.everything) return true;
  return me.grants.some((g) => g.role === role && (role === "cluster-admin" || matches(g.queues, queue)));
}

function mayAct(queue) {
  return !me.console_read_only && may("queue-admin", queue);
}

// ---------- sign-in ----------

async function signIn() {
  try {
    me = await api("GET", "/whoami");
    return true;
  } catch (e) {
    if (e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showSignIn(sessionStorage.getItem("raftq.tried") ? e.message : "");
      return false;
    }
    throw e;
  }
}

function showSignIn(message) {
  setWho();
  const input = h("input", { type: "password", id: "token", placeholder: "token", autocomplete: "off" });
  const submit = async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    sessionStorage.setItem("raftq.tried", "1");
    if (await signIn()) route();
  };
  render(h("form", { class: "panel signin", id: "signin", onsubmit: submit },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This node requires a token. Paste one from the cluster's auth Secret (its principal's roles decide what you can see and do)."),
    input,
    message ? h("p", { class: "error" }, message) : null,
    h("button", { class: "primary", type: "submit" }, "Sign in")));
}

function setWho() {
  const who = document.getElementById("who");
  who.replaceChildren();
  if (!me) return;
  const roles = me.everything ? "all roles" : [...new Set(me.grants.map((g) => g.role))].join(", ") || "no roles";
  who.append(h("span", { id: "principal" }, `${me.principal} · ${roles}`));
  if (me.console_read_only) who.append(h("span", { class: "badge" }, "read-only console"));
  if (me.auth_enabled) {
    who.append(h("button", { onclick: () => { sessionStorage.removeItem(TOKEN_KEY); sessionStorage.removeItem("raftq.tried"); me = null; route(); } }, "Sign out"));
  }
}

// ---------- rendering ----------

function render(...nodes) {
  document.getElementById("main").replaceChildren(...nodes);
}

/** Renders a page loaded for `hash`, unless the user has moved on since
 * (a slow load, or a live page's refresh, must not replace the page now
 * shown). */
function renderFor(hash, ...nodes) {
  if (location.hash !== hash) return false;
  render(...nodes);
  return true;
}

function refreshEvery(fn) {
  clearInterval(timer);
  timer = setInterval(() => { if (!document.hidden) fn().catch(() => {}); }, REFRESH_MS);
}

async function act(label, fn, after) {
  try {
    const result = await fn();
    toast(label);
    if (after) await after(result);
  } catch (e) {
    toast(`${label} failed: ${e.message}`, true);
  }
}

function stateBadge(state) {
  return h("span", { class: `badge ${state}` }, state);
}

function chart(points, width = 240, height = 44) {
  const el = svg("svg", { class: "chart", width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const series = ["enqueue", "ack", "nack", "dead"];
  el.append(svg("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, stroke: "#dde1e6" }));
  if (!points || points.length < 2) return el;
  const max = Math.max(1, ...points.flatMap((p) => series.map((s) => p[s + "_rate"])));
  // The whole width is the last 15 minutes: a short history sits at the right.
  const span = 15 * 60 * 1000;
  const t0 = points[points.length - 1].at_ms - span;
  for (const s of series) {
    const coords = points.filter((p) => p.at_ms >= t0).map((p) => `${((p.at_ms - t0) / span * (width - 2) + 1).toFixed(1)},${(height - 2 - p[s + "_rate"] / max * (height - 6)).toFixed(1)}`);
    el.append(svg("polyline", { points: coords.join(" "), fill: "none", "stroke-width": 1.5, class: "line-" + s, stroke: { enqueue: "#2f6fdf", ack: "#1f8a4c", nack: "#b7791f", dead: "#c53030" }[s] }));
  }
  const title = svg("title", {});
  const last = points[points.length - 1];
  title.textContent = `enqueue ${rate(last.enqueue_rate)}, ack ${rate(last.ack_rate)}, nack ${rate(last.nack_rate)}, dead ${rate(last.dead_rate)}; peak ${rate(max)}`;
  el.append(title);
  return el;
}

function legend() {
  return h("div", { class: "legend" }, ...["enqueue", "ack", "nack", "dead"].map((s) => h("span", {}, h("i", { class: s }), s + "/s")));
}

// ---------- overview ----------

async function overview() {
  const here = location.hash;
  const [stats, history, cluster] = await Promise.all([
    api("GET", "/queues"),
    api("GET", "/history"),
    api("GET", "/cluster").catch((e) => ({ error: e.message })),
  ]);
  const health = clusterHealth(cluster);
  const rows = stats.queues.map((s) => {
    const points = history.queues[s.queue] || [];
    const last = points[points.length - 1] || {};
    return h("tr", { "data-queue": s.queue },
      h("td", {}, h("a", { href: `#/queue/${q(s.queue)}` }, s.queue), " ", s.paused ? h("span", { class: "badge paused" }, "paused") : null),
      h("td", { class: "num" }, fmt(s.ready)),
      h("td", { class: "num" }, fmt(s.scheduled)),
      h("td", { class: "num" }, fmt(s.leased)),
      h("td", { class: "num" }, s.dead ? h("a", { href: `#/dead/${q(s.queue)}` }, fmt(s.dead)) : "0"),
      h("td", { class: "num" }, rate(last.enqueue_rate), h("br"), h("span", { class: "muted" }, rate(last.ack_rate) + " acked")),
      h("td", {}, chart(points)));
  });
  renderFor(here, 
    h("h1", {}, "Queues"),
    health,
    stats.queues.length === 0
      ? h("p", { class: "panel muted" }, "No queues yet: enqueue a job (raftq enqueue QUEUE PAYLOAD, or POST /api/v1/queues/QUEUE/jobs).")
      : h("div", {},
        legend(),
        h("table", { id: "queues" },
          h("thead", {}, h("tr", {}, h("th", {}, "Queue"), h("th", { class: "num" }, "Ready"), h("th", { class: "num" }, "Scheduled"), h("th", { class: "num" }, "Leased"), h("th", { class: "num" }, "Dead"), h("th", { class: "num" }, "Rate now"), h("th", {}, "Last 15 minutes (enqueue · ack · nack · dead per second)"))),
          h("tbody", {}, rows))));
}

function clusterHealth(cluster) {
  if (cluster.error) return h("div", { class: "health" }, h("div", { class: "tile" }, h("div", { class: "l" }, "Cluster"), h("div", { class: "muted" }, cluster.error)));
  const nodes = cluster.nodes;
  const reachable = nodes.filter((n) => n.reachable).length;
  const own = nodes.find((n) => n.reachable) || { shards: [] };
  const shards = own.shards.length;
  const leaders = own.shards.filter((s) => s.has_leader).length;
  const tile = (label, value, ok) => h("div", { class: `tile ${ok ? "ok" : "bad"}` }, h("div", { class: "l" }, label), h("div", { class: "n" }, value));
  return h("div", { class: "health", id: "health" },
    tile("Nodes answering", `${reachable} / ${nodes.length}`, reachable === nodes.length),
    tile("Shards with a leader", `${leaders} / ${shards}`, leaders === shards),
    h("a", { href: "#/cluster", class: "tile" }, h("div", { class: "l" }, "Details"), h("div", {}, "Cluster →")));
}

// ---------- queue ----------

async function queuePage(name, params) {
  const here = location.hash;
  const state = params.get("state") || "";
  const filters = { job_id: params.get("job_id") || "", header: params.get("header") || "", idempotency_key: params.get("idempotency_key") || "", error: params.get("error") || "" };
  const before = params.get("before") || "";
  const query = new URLSearchParams({ limit: "50" });
  if (state) query.set("state", state);
  for (const [k, v] of Object.entries(filters)) if (v) query.set(k, v);
  if (before) query.set("before", before);
  const [detail, page, history] = await Promise.all([
    api("GET", `/queues/${q(name)}`),
    api("GET", `/queues/${q(name)}/jobs?${query}`),
    api("GET", `/history?queue=${q(name)}`),
  ]);
  const info = detail.info;
  const stats = detail.stats || {};
  const go = (changes) => {
    const next = new URLSearchParams(params);
    for (const [k, v] of Object.entries(changes)) { if (v) next.set(k, v); else next.delete(k); }
    location.hash = `#/queue/${q(name)}?${next}`;
  };
  const canAct = mayAct(name);
  const reload = () => route();
  const actions = canAct ? h("div", { class: "actions", id: "queue-actions" },
    info.paused
      ? h("button", { class: "primary", id: "resume", onclick: () => act(`Resumed ${name}`, () => api("POST", `/queues/${q(name)}/resume`), reload) }, "Resume")
      : h("button", { id: "pause", onclick: () => act(`Paused ${name}`, () => api("POST", `/queues/${q(name)}/pause`), reload) }, "Pause"),
    h("button", { class: "danger", id: "purge", onclick: () => { if (confirm(`Remove every ready and scheduled job of ${name}?`)) act(`Purged ${name}`, () => api("POST", `/queues/${q(name)}/purge`), reload); } }, "Purge ready and scheduled")) : null;
  const inputs = {};
  const filterForm = h("form", { class: "filters", id: "filters", onsubmit: (ev) => { ev.preventDefault(); go({ ...Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value.trim()])), before: "" }); } },
    ...Object.entries({ job_id: "job id", header: "header key or key=value", idempotency_key: "idempotency key", error: "error contains" }).map(([k, label]) => {
      inputs[k] = h("input", { name: k, placeholder: label, value: filters[k] });
      return inputs[k];
    }),
    h("button", { type: "submit", class: "primary" }, "Filter"),
    h("button", { type: "button", onclick: () => go({ job_id: "", header: "", idempotency_key: "", error: "", before: "" }) }, "Clear"));
  const tabs = h("div", { class: "tabs", id: "state-tabs" }, ...["", ...STATES].map((s) =>
    h("button", { class: s === state ? "on" : "", "data-state": s || "all", onclick: () => go({ state: s, before: "" }) },
      s ? `${s} (${fmt(stats[s] ?? 0)})` : "all")));
  const rows = page.jobs.map((j) => h("tr", { "data-job": j.id },
    h("td", {}, h("a", { href: `#/job/${q(j.id)}` }, j.id)),
    h("td", {}, stateBadge(j.state)),
    h("td", { class: "num" }, `${j.attempt}/${j.max_attempts}`),
    h("td", { class: "num" }, j.priority),
    h("td", {}, when(j.enqueued_at_ms)),
    h("td", {}, Object.entries(j.headers).map(([k, v]) => `${k}=${v}`).join(", ")),
    h("td", { class: "error" }, j.last_error)));
  renderFor(here, 
    h("h1", {}, "Queue ", h("span", { id: "queue-name" }, name), " ", info.paused ? h("span", { class: "badge paused", id: "paused" }, "paused") : h("span", { class: "badge ok" }, "active")),
    h("div", { class: "health" },
      ...STATES.map((s) => h("div", { class: "tile" }, h("div", { class: "l" }, s), h("div", { class: "n" }, fmt(stats[s] ?? 0)))),
      h("div", { class: "tile" }, h("div", { class: "l" }, "last 15 minutes"), chart((history.queues || {})[name], 320, 50))),
    actions,
    h("h2", {}, "Jobs"),
    tabs, filterForm,
    h("table", { id: "jobs" },
      h("thead", {}, h("tr", {}, h("th", {}, "Job"), h("th", {}, "State"), h("th", { class: "num" }, "Attempt"), h("th", { class: "num" }, "Priority"), h("th", {}, "Enqueued"), h("th", {}, "Headers"), h("th", {}, "Last error"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, page.next ? "None in this stretch: look further." : "No jobs match.")))),
    h("div", { class: "actions" },
      before ? h("button", { onclick: () => go({ before: "" }) }, "← Newest") : null,
      page.next ? h("button", { id: "older", onclick: () => go({ before: page.next }) }, "Older →") : null,
      h("span", { class: "muted" }, `${fmt(page.scanned)} jobs examined`),
      stats.dead ? h("a", { href: `#/dead/${q(name)}` }, `Dead letters (${fmt(stats.dead)}) →`) : null),
    settingsPanel(name, info, canAct));
}

function settingsPanel(name, info, canAct) {
  const c = info.config;
  const fields = [
    ["default_lease_ms", "Lease (ms)", c.default_lease_ms],
    ["default_max_attempts", "Max attempts", c.default_max_attempts],
    ["dedup_window_ms", "Dedup window (ms)", c.dedup_window_ms],
    ["backoff_initial_ms", "Backoff initial (ms)", c.default_backoff?.initial_ms],
    ["backoff_max_ms", "Backoff max (ms)", c.default_backoff?.max_ms],
    ["backoff_multiplier", "Backoff multiplier", c.default_backoff?.multiplier],
  ];
  const inputs = {};
  const grid = h("div", { class: "grid" }, ...fields.flatMap(([k, label, v]) => {
    inputs[k] = h("input", { name: k, value: v ?? "", disabled: !canAct, inputmode: "decimal" });
    return [h("label", { class: "k", for: k }, label), inputs[k]];
  }));
  const save = async (ev) => {
    ev.preventDefault();
    const num = (k) => Number(inputs[k].value);
    const body = { default_lease_ms: num("default_lease_ms"), default_max_attempts: num("default_max_attempts"), dedup_window_ms: num("dedup_window_ms"), default_backoff: { initial_ms: num("backoff_initial_ms"), max_ms: num("backoff_max_ms"), multiplier: num("backoff_multiplier") } };
    await act(`Saved the defaults of ${name}`, () => api("PATCH", `/queues/${q(name)}`, body), () => route());
  };
  return h("form", { class: "panel", id: "settings", onsubmit: save },
    h("h2", {}, "Defaults for new jobs"), grid,
    canAct ? h("div", { class: "actions" }, h("button", { class: "primary", type: "submit", id: "save-settings" }, "Save")) : h("p", { class: "muted" }, "Read-only: changing defaults needs the queue-admin role."));
}

// ---------- job ----------

function hex(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length && i < 4096; i += 16) {
    const row = bytes.slice(i, i + 16);
    lines.push(i.toString(16).padStart(6, "0") + "  " + [...row].map((b) => b.toString(16).padStart(2, "0")).join(" ").padEnd(48) + "  " + [...row].map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join(""));
  }
  return lines.join("\n");
}

function decode(b64) {
  const bin = atob(b64 || "");
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

async function jobPage(id) {
  const here = location.hash;
  let job;
  try {
    job = await api("GET", `/jobs/${q(id)}`);
  } catch (e) {
    if (e.status === 404) { renderFor(here, h("h1", {}, "Job ", id), h("p", { class: "panel", id: "gone" }, e.message)); return; }
    throw e;
  }
  const bytes = decode(job.payload_base64);
  let pretty = null;
  if (job.payload !== undefined) { try { pretty = JSON.stringify(JSON.parse(job.payload), null, 2); } catch (_) { pretty = null; } }
  const printable = job.payload !== undefined && !/[\u0000-\u0008\u000e-\u001f]/.test(job.payload);
  const views = { json: pretty, text: printable ? job.payload : null, hex: hex(bytes) };
  let mode = pretty !== null ? "json" : printable ? "text" : "hex";
  const pre = h("pre", { id: "payload" });
  const buttons = {};
  const show = (m) => { mode = m; pre.textContent = views[m]; for (const [k, b] of Object.entries(buttons)) b.className = k === m ? "on" : ""; };
  const switcher = h("div", { class: "tabs" }, ...Object.keys(views).filter((k) => views[k] !== null).map((k) => { buttons[k] = h("button", { "data-view": k, onclick: () => show(k) }, k === "json" ? "pretty JSON" : k); return buttons[k]; }));
  const canAct = mayAct(job.queue);
  const history = [
    ["enqueued", when(job.enqueued_at_ms)],
    job.attempt > 0 ? ["delivered", `${job.attempt} time${job.attempt === 1 ? "" : "s"} of ${job.max_attempts}`] : ["delivered", "not yet"],
    job.last_error ? ["last failure", job.last_error] : null,
    ["now", `${job.state}` + (job.state === "leased" ? ` by ${job.worker_id || "a worker"}, lease ends ${when(job.due_at_ms)}` : job.state === "scheduled" ? `, runs ${when(job.due_at_ms)}` : job.state === "dead" ? ` since ${when(job.due_at_ms)}` : ` since ${when(job.due_at_ms)}`)],
  ].filter(Boolean);
  renderFor(here, 
    h("h1", {}, "Job ", h("span", { id: "job-id" }, job.id), " ", stateBadge(job.state)),
    h("div", { class: "panel grid" },
      h("div", { class: "k" }, "Queue"), h("div", {}, h("a", { href: `#/queue/${q(job.queue)}` }, job.queue)),
      h("div", { class: "k" }, "Priority"), h("div", {}, job.priority),
      h("div", { class: "k" }, "Attempts"), h("div", { id: "attempts" }, `${job.attempt} of ${job.max_attempts}`),
      h("div", { class: "k" }, "Idempotency key"), h("div", {}, job.idempotency_key || "—"),
      h("div", { class: "k" }, "Last error"), h("div", { class: "error", id: "last-error" }, job.last_error || "—"),
      h("div", { class: "k" }, "Size"), h("div", {}, `${fmt(job.payload_bytes)} bytes`)),
    canAct ? h("div", { class: "actions", id: "job-actions" },
      job.state === "dead" ? h("button", { class: "primary", id: "requeue", onclick: () => act(`Requeued ${job.id}`, () => api("POST", `/queues/${q(job.queue)}/dead/requeue`, { job_ids: [job.id] }), () => route()) }, "Requeue") : null,
      job.state !== "leased" ? h("button", { class: "danger", id: "cancel", onclick: () => { if (confirm(`Cancel job ${job.id}?`)) act(`Cancelled ${job.id}`, () => api("DELETE", `/jobs/${q(job.id)}`), () => route()); } }, "Cancel") : h("span", { class: "muted" }, "A leased job cannot be cancelled; it finishes or its lease expires.")) : null,
    h("h2", {}, "Payload"), switcher, pre,
    h("h2", {}, "Headers"),
    Object.keys(job.headers).length
      ? h("table", { id: "headers" }, h("tbody", {}, Object.entries(job.headers).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v)))))
      : h("p", { class: "muted" }, "none"),
    h("h2", {}, "History (as this node knows it)"),
    h("table", { id: "history" }, h("tbody", {}, history.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))))));
  show(mode);
}

// ---------- dead letters ----------

async function deadPage(name, params) {
  const here = location.hash;
  const error = params.get("error") || "";
  const query = new URLSearchParams({ state: "dead", limit: "200" });
  if (error) query.set("error", error);
  const [page, detail] = await Promise.all([api("GET", `/queues/${q(name)}/jobs?${query}`), api("GET", `/queues/${q(name)}`)]);
  const canAct = mayAct(name);
  const selected = new Set();
  const count = h("span", { class: "muted", id: "selected" }, "0 selected");
  const setCount = () => { count.textContent = `${selected.size} selected`; };
  const all = async () => {
    // Every id the filter matches, page by page.
    const ids = [];
    let before = "";
    for (;;) {
      const pq = new URLSearchParams({ state: "dead", limit: "1000" });
      if (error) pq.set("error", error);
      if (before) pq.set("before", before);
      const p = await api("GET", `/queues/${q(name)}/jobs?${pq}`);
      ids.push(...p.jobs.map((j) => j.id));
      if (!p.next) return ids;
      before = p.next;
    }
  };
  const bulk = (verb, ids) => act(`${verb === "requeue" ? "Requeued" : "Purged"} ${ids.length} dead job${ids.length === 1 ? "" : "s"}`, async () => {
    for (let i = 0; i < ids.length; i += 1000) await api("POST", `/queues/${q(name)}/dead/${verb}`, { job_ids: ids.slice(i, i + 1000) });
  }, () => route());
  const wholeFilter = async (verb) => {
    if (!error) {
      if (!confirm(`${verb} every dead job of ${name}?`)) return;
      await act(`${verb === "requeue" ? "Requeued" : "Purged"} every dead job`, () => api("POST", `/queues/${q(name)}/dead/${verb}`, {}), () => route());
      return;
    }
    const ids = await all();
    if (confirm(`${verb} ${ids.length} dead jobs whose error contains "${error}"?`)) await bulk(verb, ids);
  };
  const input = h("input", { name: "error", placeholder: "error contains", value: error });
  const rows = page.jobs.map((j) => h("tr", { "data-job": j.id },
    canAct ? h("td", {}, h("input", { type: "checkbox", "data-id": j.id, onchange: (ev) => { if (ev.target.checked) selected.add(j.id); else selected.delete(j.id); setCount(); } })) : null,
    h("td", {}, h("a", { href: `#/job/${q(j.id)}` }, j.id)),
    h("td", { class: "num" }, `${j.attempt}/${j.max_attempts}`),
    h("td", {}, when(j.due_at_ms)),
    h("td", { class: "error" }, j.last_error)));
  renderFor(here, 
    h("h1", {}, "Dead letters of ", h("a", { href: `#/queue/${q(name)}` }, name), " ", h("span", { class: "badge dead" }, fmt(detail.stats?.dead ?? 0))),
    h("form", { class: "filters", onsubmit: (ev) => { ev.preventDefault(); location.hash = `#/dead/${q(name)}?${new URLSearchParams(input.value.trim() ? { error: input.value.trim() } : {})}`; } },
      input, h("button", { class: "primary", type: "submit" }, "Filter")),
    canAct ? h("div", { class: "actions", id: "dead-actions" },
      count,
      h("button", { id: "requeue-selected", onclick: () => bulk("requeue", [...selected]) }, "Requeue selected"),
      h("button", { class: "danger", id: "purge-selected", onclick: () => bulk("purge", [...selected]) }, "Purge selected"),
      h("button", { id: "requeue-all", onclick: () => wholeFilter("requeue") }, error ? "Requeue all matching" : "Requeue all"),
      h("button", { class: "danger", id: "purge-all", onclick: () => wholeFilter("purge") }, error ? "Purge all matching" : "Purge all")) : null,
    h("table", { id: "dead" },
      h("thead", {}, h("tr", {}, canAct ? h("th", {}, "") : null, h("th", {}, "Job"), h("th", { class: "num" }, "Attempts"), h("th", {}, "Died"), h("th", {}, "Error"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No dead jobs match.")))),
    page.next ? h("p", { class: "muted" }, "Showing the newest 200; bulk actions on the filter cover all of them.") : null);
}

// ---------- cluster ----------

async function clusterPage() {
  const here = location.hash;
  const cluster = await api("GET", "/cluster");
  const byNode = new Map(cluster.nodes.map((n) => [n.node_id, n]));
  const shardIds = [...new Set(cluster.nodes.flatMap((n) => n.shards.map((s) => s.shard)))].sort((a, b) => a - b);
  const shardRows = shardIds.map((id) => {
    const views = cluster.nodes.map((n) => [n, n.shards.find((s) => s.shard === id)]).filter(([, s]) => s);
    const leaderView = views.find(([, s]) => s.role === "leader");
    const anyView = (leaderView || views[0])[1];
    const leader = leaderView ? leaderView[1] : null;
    const members = anyView.members.map((m) => {
      const own = byNode.get(m.node_id)?.shards.find((s) => s.shard === id);
      const lag = leader ? leader.last_log_index - m.matched_index : null;
      return h("div", { class: "member" },
        `node ${m.node_id} `, h("span", { class: `badge ${own?.role === "leader" ? "leader" : ""}` }, own?.role ?? (m.voter ? "voter" : "learner")),
        own ? ` applied ${fmt(own.applied_index)}` : " (no answer)",
        lag !== null ? h("span", { class: lag > 1000 ? "lag-bad" : "muted" }, ` · lag ${fmt(lag)}`) : null);
    });
    return h("tr", { "data-shard": id },
      h("td", {}, id),
      h("td", {}, anyView.has_leader ? `node ${anyView.leader_id}` : h("span", { class: "badge bad" }, "no leader")),
      h("td", { class: "num" }, fmt(anyView.term)),
      h("td", { class: "num" }, fmt(leader ? leader.commit_index : anyView.commit_index)),
      h("td", {}, members));
  });
  renderFor(here, 
    h("h1", {}, "Cluster"),
    clusterHealth(cluster),
    h("h2", {}, "Nodes"),
    h("table", { id: "nodes" },
      h("thead", {}, h("tr", {}, h("th", {}, "Node"), h("th", {}, "Peer address"), h("th", {}, "Client address"), h("th", {}, "Leads"), h("th", {}, "State"))),
      h("tbody", {}, cluster.nodes.map((n) => h("tr", {},
        h("td", {}, n.node_id), h("td", {}, n.addr), h("td", {}, n.client_addr || ""),
        h("td", {}, n.shards.filter((s) => s.role === "leader").map((s) => s.shard).join(", ") || "—"),
        h("td", {}, n.reachable ? h("span", { class: "badge ok" }, "answering") : h("span", { class: "badge bad", title: n.error }, "unreachable: " + n.error)))))),
    h("h2", {}, "Shards"),
    h("table", { id: "shards" },
      h("thead", {}, h("tr", {}, h("th", {}, "Shard"), h("th", {}, "Leader"), h("th", { class: "num" }, "Term"), h("th", { class: "num" }, "Commit index"), h("th", {}, "Members (applied index, lag behind the leader's log)"))),
      h("tbody", {}, shardRows)));
}

// ---------- routing ----------

async function route() {
  clearInterval(timer);
  if (!me && !(await signIn())) return;
  setWho();
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  const page = parts[0] || "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === (page === "cluster" ? "cluster" : "overview"));
  const pages = {
    overview: () => overview(),
    queue: () => queuePage(parts[1], params),
    job: () => jobPage(parts[1]),
    dead: () => deadPage(parts[1], params),
    cluster: () => clusterPage(),
  };
  const show = pages[page] || pages.overview;
  const live = page === "overview" || page === "cluster";
  const here = location.hash;
  try {
    await show();
    if (location.hash === here) {
      document.body.dataset.page = page;
      // What the page now shows (tests wait on it after navigating).
      document.body.dataset.route = here || "#/";
    }
  } catch (e) {
    if (e.status === 401) { me = null; sessionStorage.removeItem(TOKEN_KEY); return route(); }
    renderFor(here, h("h1", {}, "Something went wrong"), h("p", { class: "panel error", id: "failure" }, e.message),
      h("button", { onclick: () => route() }, "Retry"));
  }
  // Live pages keep refreshing, and so recover from a passing failure.
  if (live) refreshEvery(show);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", route);
