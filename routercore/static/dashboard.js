// LLM Router dashboard. Plain browser JavaScript: no build step, no CDN, no framework.
// Data comes from the /ws/dashboard snapshot feed; when the socket fails the page polls
// /api/dashboard/snapshot and keeps trying to reconnect. All text goes in via textContent.
"use strict";

(() => {
  const TOKEN_KEY = "llmRouterAdminToken";
  const POLL_MS = 2000;
  const RECONNECT_MAX_MS = 5000;
  const HISTORY_PAGE = 50;
  const STATUS_ORDER = { online: 0, unreachable: 1, offline: 2 };
  const COLORS = ["#2f6fde", "#1f9d55", "#d98b00", "#c0392b", "#8e44ad", "#16a085", "#e67e22", "#7f8c8d"];
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const state = {
    snapshot: null,
    nodesById: new Map(),
    skewMs: 0,
    sort: { key: "name", dir: 1 },
    filter: "",
    ws: null,
    retry: 0,
    reconnectTimer: null,
    pollTimer: null,
    history: { offset: 0, total: 0, filters: { agent_id: "", model: "", status: "" } },
    detailId: null,
    detailTimer: null,
    chat: { messages: [], abort: null },
  };
  // Exposed for tests and measurements: how many snapshots were drawn and how long the last took.
  window.__dashboard = { renders: 0, lastRenderMs: 0, lastPayloadBytes: 0, channel: "connecting" };
  // Helpers and hooks shared with models.js, which loads after this file.
  const ui = window.__routerUI = window.__routerUI || {};

  // ---- small helpers ------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }
  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  }
  const now = () => Date.now() + state.skewMs;
  const num = (v, digits = 0) => (v === null || v === undefined ? "–" : Number(v).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits }));
  const ms = (v) => (v === null || v === undefined ? "–" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`);
  const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`);
  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
    seconds = Math.max(0, Math.floor(seconds));
    const d = Math.floor(seconds / 86400), h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    if (m) return `${m}m ${s}s`;
    return `${s}s`;
  }
  function since(iso) { return iso ? (now() - Date.parse(iso)) / 1000 : null; }
  function ago(iso) { const s = since(iso); return s === null ? "never" : `${duration(s)} ago`; }
  function bytes(n) {
    if (!n) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }
  function nodeName(id) {
    const node = state.nodesById.get(id);
    return node ? node.display_name : (id ? id.slice(0, 8) : "–");
  }

  function notify(message, kind = "info") {
    const box = $("notice");
    $("notice-text").textContent = message;
    box.dataset.kind = kind;
    box.hidden = false;
  }
  $("notice-close").addEventListener("click", () => { $("notice").hidden = true; });

  // ---- admin token + API calls --------------------------------------------------------------

  const getToken = () => sessionStorage.getItem(TOKEN_KEY) || "";
  const setToken = (t) => (t ? sessionStorage.setItem(TOKEN_KEY, t) : sessionStorage.removeItem(TOKEN_KEY));

  function askToken(reason) {
    const dialog = $("token-dialog");
    $("token-reason").textContent = reason || "Management actions need the router's admin token. It is kept in this browser tab only (session storage).";
    $("token-input").value = "";
    return new Promise((resolve) => {
      const done = (value) => {
        $("token-form").removeEventListener("submit", onSubmit);
        $("token-cancel").removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const onSubmit = (ev) => {
        ev.preventDefault();
        const value = $("token-input").value.trim();
        if (value) setToken(value);
        done(value || null);
      };
      const onCancel = (ev) => { ev.preventDefault(); done(null); };
      $("token-form").addEventListener("submit", onSubmit);
      $("token-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
      $("token-input").focus();
    });
  }
  $("token-button").addEventListener("click", async () => {
    const token = await askToken();
    if (token) { notify("Admin token stored for this tab.", "ok"); reconnectNow(); }
  });
  $("token-forget").addEventListener("click", () => {
    setToken("");
    $("token-dialog").close();
    notify("Admin token forgotten.", "info");
  });

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body) {
    const headers = {};
    const token = getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
    if (resp.status === 204) return null;
    let data = null;
    try { data = await resp.json(); } catch { data = null; }
    if (!resp.ok) {
      const err = data && data.error;
      const message = typeof err === "string" ? err : (err && err.message) || resp.statusText || `HTTP ${resp.status}`;
      throw new ApiError(resp.status, message);
    }
    return data;
  }

  // Reads: when the router needs the admin token for reads too, ask for it once.
  let askingForReads = false;
  async function read(path) {
    try {
      return await api("GET", path);
    } catch (e) {
      if (e.status === 401 && !askingForReads) {
        askingForReads = true;
        notify("This router requires the admin token to read the dashboard.", "error");
        const token = await askToken("This router requires the admin token even to read the dashboard.");
        askingForReads = false;
        if (token) { reconnectNow(); return api("GET", path); }
      }
      throw e;
    }
  }

  async function adminAction(label, method, path, body) {
    let token = getToken();
    if (!token) token = await askToken(`"${label}" changes the router: it needs the admin token.`);
    if (!token) {
      notify(`Refused: "${label}" needs the admin token, and none was given.`, "error");
      return undefined;
    }
    try {
      const result = await api(method, path, body);
      notify(`${label}: done.`, "ok");
      return result === null ? true : result;
    } catch (e) {
      if (e.status === 401) {
        setToken("");
        notify(`Refused: the router did not accept the admin token (${e.message}). Enter it again to retry.`, "error");
      } else {
        notify(`${label} failed: ${e.message}`, "error");
      }
      return undefined;
    }
  }

  // ---- live channel -------------------------------------------------------------------------

  function setChannel(name) {
    const badge = $("conn-state");
    badge.dataset.state = name;
    badge.textContent = { live: "live", polling: "polling", down: "router unreachable", connecting: "connecting" }[name];
    window.__dashboard.channel = name;
  }

  function connect() {
    clearTimeout(state.reconnectTimer);
    if (document.hidden) return;  // the visibilitychange handler reconnects
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const token = getToken();
    const url = `${proto}//${location.host}/ws/dashboard${token ? `?token=${encodeURIComponent(token)}` : ""}`;
    let ws;
    try { ws = new WebSocket(url); } catch { scheduleReconnect(); return; }
    state.ws = ws;
    ws.onopen = () => { state.retry = 0; stopPolling(); setChannel("live"); };
    ws.onmessage = (ev) => {
      window.__dashboard.lastPayloadBytes = ev.data.length;
      try { applySnapshot(JSON.parse(ev.data)); } catch (e) { console.error("bad snapshot", e); }
    };
    ws.onclose = () => {
      if (state.ws !== ws) return;
      state.ws = null;
      startPolling();
      scheduleReconnect();
    };
  }
  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    const delay = Math.min(RECONNECT_MAX_MS, 500 * 2 ** state.retry);
    state.retry = Math.min(state.retry + 1, 8);
    state.reconnectTimer = setTimeout(connect, delay);
  }
  function reconnectNow() {
    state.retry = 0;
    if (state.ws) { const old = state.ws; state.ws = null; old.close(); }
    connect();
  }
  function startPolling() {
    if (state.pollTimer) return;
    setChannel("polling");
    const tick = async () => {
      try {
        const snap = await read("/api/dashboard/snapshot");
        if (state.pollTimer) { setChannel("polling"); applySnapshot(snap); }
      } catch {
        if (state.pollTimer) setChannel("down");
      }
    };
    state.pollTimer = setInterval(tick, POLL_MS);
    tick();
  }
  function stopPolling() { clearInterval(state.pollTimer); state.pollTimer = null; }

  // ---- snapshot rendering -------------------------------------------------------------------

  function applySnapshot(snap) {
    const started = performance.now();
    state.snapshot = snap;
    state.skewMs = snap.overview.server_time_ms - Date.now();
    state.nodesById = new Map(snap.nodes.map((n) => [n.id, n]));
    renderCards(snap.overview);
    renderNodes();
    renderCharts(snap.series);
    refreshChoices();
    if (ui.onSnapshot) ui.onSnapshot(snap);
    window.__dashboard.renders += 1;
    window.__dashboard.lastRenderMs = performance.now() - started;
  }

  function renderCards(o) {
    $("card-nodes").textContent = `${o.nodes.online} / ${o.nodes.total}`;
    $("card-rps").textContent = num(o.rates.requests_per_s, 2);
    $("card-success").textContent = pct(o.success_rate);
    $("card-p50").textContent = ms(o.latency_ms.p50);
    $("card-p95").textContent = ms(o.latency_ms.p95);
    $("card-tps").textContent = num(o.rates.tokens_per_s, 1);
    $("card-total").textContent = num(o.requests.total);
    $("card-errors").textContent = num(o.requests.errors);
    $("card-inflight").textContent = `${o.requests.in_flight} / ${o.requests.queued}`;
    const aff = o.affinity || {};
    $("card-affinity").textContent = aff.enabled === false ? "off" : pct(aff.hit_rate ?? null);
    $("card-affinity").title = aff.picks ? `${num(aff.hits)} of ${num(aff.picks)} prefix picks went to the node holding the prompt` : "";
  }

  function usageBar(value) {
    if (value === null || value === undefined) return el("span", { class: "muted", text: "–" });
    const fill = el("div", { class: "fill", "data-level": value >= 90 ? "high" : value >= 70 ? "mid" : "low" });
    fill.style.width = `${Math.max(0, Math.min(100, value))}%`;
    return el("div", { class: "bar", title: `${value.toFixed(1)}%` },
      el("div", { class: "track" }, fill), el("span", { class: "pct", text: `${Math.round(value)}%` }));
  }
  function statusBadge(node) {
    const badge = el("span", { class: "status", "data-status": node.status, "data-disabled": node.enabled ? null : "true", text: node.status });
    if (!node.problem) return badge;
    // A node whose stored record was damaged is shown as such (the router says what and why).
    return el("span", {}, badge, el("span", { class: "problem", title: node.problem, text: " ⚠ record damaged" }));
  }
  // Why a node is out of rotation, and when the router checks it again (null when it is in).
  function healthText(node) {
    const h = node.health;
    if (!h || h.in_rotation) return null;
    const next = h.next_check_in_secs;
    return next === null || next === undefined ? h.reason : `${h.reason} · next check in ${Math.ceil(next)} s`;
  }

  function sortedNodes() {
    const { key, dir } = state.sort;
    const nodes = state.snapshot ? [...state.snapshot.nodes] : [];
    const f = state.filter.toLowerCase();
    const shown = f ? nodes.filter((n) => [n.display_name, n.machine_name, n.ip_address, ...(n.models || []), ...(n.tags || [])].some((s) => String(s).toLowerCase().includes(f))) : nodes;
    const byName = (a, b) => a.display_name.localeCompare(b.display_name) || a.id.localeCompare(b.id);
    shown.sort((a, b) => {
      if (key === "status") return dir * ((STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9)) || byName(a, b);
      return dir * byName(a, b);
    });
    return shown;
  }

  // Rows are kept per node and rebuilt only when what they show changed; the relative times
  // are patched in place. With hundreds of nodes this keeps a snapshot's render cheap.
  const rowCache = new Map();
  const setText = (node, text) => { if (node.textContent !== text) node.textContent = text; };

  function rowSignature(n) {
    return JSON.stringify([n.display_name, n.custom_name, n.machine_name, n.tags, n.ip_address, n.runtime_port,
      n.runtime_version, n.runtime_kind, n.status, n.enabled, n.models, n.metrics, n.gpu_count, n.in_flight,
      n.max_concurrency, n.stats, n.error_rate, healthText(n), n.problem, n.affinity]);
  }

  // "ollama 0.5.7", "openai" (llama.cpp, vLLM: only /v1), or "–" while the router finds out.
  function runtimeText(n) { return [n.runtime_kind, n.runtime_version].filter(Boolean).join(" ") || "–"; }

  function buildRow(n) {
    const m = n.metrics || {};
    const gpu = m.gpu_usage ?? null;
    const nameCell = el("td", { class: "name-cell" },
      el("button", { type: "button", class: "open-node", "data-node-id": n.id, text: n.display_name }),
      n.custom_name ? el("span", { class: "sub", text: n.machine_name }) : null,
      ...(n.tags || []).map((t) => el("span", { class: "tag", text: t })));
    const uptime = el("td", { class: "opt uptime" });
    const seen = el("td", { class: "opt seen" });
    const row = el("tr", { "data-node-id": n.id, "data-status": n.status },
      nameCell,
      el("td", { class: "opt", text: `${n.ip_address}:${n.runtime_port}` }),
      el("td", { class: "opt", text: runtimeText(n) }),
      el("td", { class: "status-cell" }, statusBadge(n),
        healthText(n) ? el("span", { class: "sub health-reason", text: healthText(n) }) : null),
      uptime, seen,
      el("td", { class: "opt models", text: (n.models || []).join(", ") || "–", title: (n.models || []).join(", ") }),
      el("td", {}, usageBar(m.cpu_usage)),
      el("td", {}, usageBar(m.memory_usage)),
      el("td", { class: "opt" }, gpu === null ? el("span", { class: "muted", text: n.gpu_count ? "–" : "none" }) : usageBar(gpu)),
      el("td", { class: "num active", text: String(n.in_flight ?? 0) + (n.max_concurrency ? ` / ${n.max_concurrency}` : "") }),
      el("td", { class: "num opt total", text: `${num(n.stats.total_requests)}` }),
      el("td", { class: "num opt", text: ms(n.stats.avg_latency_ms) }),
      el("td", { class: "num opt", text: n.error_rate === null ? "–" : pct(n.error_rate) }),
      el("td", { class: "num opt affinity", text: pct(n.affinity ? n.affinity.hit_rate : null),
        title: n.affinity && n.affinity.picks ? `${num(n.affinity.hits)} of ${num(n.affinity.picks)} prefix picks were affinity hits` : "" }));
    return { row, uptime, seen, sig: rowSignature(n) };
  }

  function renderNodes() {
    const nodes = sortedNodes();
    const total = state.snapshot ? state.snapshot.nodes.length : 0;
    setText($("nodes-count"), nodes.length === total ? `(${total})` : `(${nodes.length} of ${total})`);
    $("nodes-empty").hidden = total > 0;
    const tbody = $("nodes-table").tBodies[0];
    const shown = new Set();
    const order = [];
    for (const n of nodes) {
      let entry = rowCache.get(n.id);
      const sig = rowSignature(n);
      if (!entry || entry.sig !== sig) {
        const fresh = buildRow(n);
        if (entry && entry.row.parentNode) entry.row.replaceWith(fresh.row);
        entry = fresh;
        rowCache.set(n.id, entry);
      }
      setText(entry.uptime, n.status === "online" ? duration(since(n.online_since)) : "–");
      setText(entry.seen, ago(n.last_seen));
      entry.seen.title = n.last_seen || "";
      shown.add(n.id);
      order.push(entry.row);
    }
    for (const [id, entry] of rowCache) {
      if (shown.has(id)) continue;
      entry.row.remove();
      if (!state.nodesById.has(id)) rowCache.delete(id);
    }
    let cursor = tbody.firstChild;  // move only the rows that are out of place
    for (const row of order) {
      if (row === cursor) { cursor = cursor.nextSibling; continue; }
      tbody.insertBefore(row, cursor);
    }
    for (const b of document.querySelectorAll("th button.sort")) {
      b.dataset.dir = b.dataset.sort === state.sort.key ? String(state.sort.dir) : "";
    }
  }
  document.querySelectorAll("th button.sort").forEach((b) => b.addEventListener("click", () => {
    const key = b.dataset.sort;
    state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
    renderNodes();
  }));
  $("node-filter").addEventListener("input", (ev) => { state.filter = ev.target.value; renderNodes(); });
  $("nodes-table").addEventListener("click", (ev) => {
    const button = ev.target.closest("button.open-node");
    if (button) location.hash = `#node/${button.dataset.nodeId}`;
  });

  // ---- charts (hand-drawn SVG) --------------------------------------------------------------

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }
  function fmtTick(v) { return v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v >= 10 ? String(Math.round(v)) : String(+v.toFixed(2)); }
  function clock(t) { return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

  // series: [{name, color, points: [[timeMs, value|null], ...]}]
  function lineChart(target, series, { xMin, xMax, yMax, unit = "" }) {
    // Draw at the element's own width so text stays at its CSS size on any screen.
    const W = Math.max(240, Math.round(target.parentElement ? target.parentElement.clientWidth - 2 : 600) || 600);
    const H = W < 500 ? 140 : 170, L = 44, R = 8, T = 10, B = 22;
    target.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const parts = [];
    let top = yMax ?? 0;
    if (yMax === undefined) for (const s of series) for (const [, v] of s.points) if (v !== null && v > top) top = v;
    top = yMax ?? niceMax(top);
    const x = (t) => L + ((t - xMin) / Math.max(1, xMax - xMin)) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    for (const frac of [0, 0.5, 1]) {
      parts.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(top * frac), y2: y(top * frac) }));
      const label = svg("text", { class: "axis-label", x: L - 6, y: y(top * frac) + 4, "text-anchor": "end" });
      label.textContent = fmtTick(top * frac) + unit;
      parts.push(label);
    }
    for (const [t, anchor] of [[xMin, "start"], [(xMin + xMax) / 2, "middle"], [xMax, "end"]]) {
      const label = svg("text", { class: "axis-label", x: x(t), y: H - 5, "text-anchor": anchor });
      label.textContent = clock(t);
      parts.push(label);
    }
    let drawn = 0;
    for (const s of series) {
      let d = "";
      let run = [];
      const flush = () => {
        if (run.length === 1) {  // a lone point draws no line: mark it with a dot
          parts.push(svg("circle", { cx: run[0][0].toFixed(1), cy: run[0][1].toFixed(1), r: 2.5, fill: s.color }));
        }
        run = [];
      };
      let pen = false;
      for (const [t, v] of s.points) {
        if (v === null || v === undefined) { pen = false; flush(); continue; }
        d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        run.push([x(t), y(v)]);
        pen = true;
        drawn++;
      }
      flush();
      if (d) {
        const path = svg("path", { class: "line", d, stroke: s.color });
        const title = svg("title", {});
        title.textContent = s.name;
        path.append(title);
        parts.push(path);
      }
    }
    if (!drawn) {
      const empty = svg("text", { class: "empty", x: (L + W) / 2, y: H / 2, "text-anchor": "middle" });
      empty.textContent = "no data yet";
      parts.push(empty);
    }
    target.replaceChildren(...parts);
  }

  function renderLegend(box, entries) {
    box.replaceChildren(...entries.map((e) => {
      const span = el("span", { text: e.name });
      span.style.color = e.color;
      return span;
    }));
  }

  let chartSig = "";
  function renderCharts(series) {
    if (!series) return;
    const sig = JSON.stringify(series) + [...state.nodesById.values()].map((n) => n.display_name).join() + window.innerWidth;
    if (sig === chartSig) return;  // same data, same names, same width: nothing to redraw
    chartSig = sig;
    const step = series.step_s * 1000;
    const start = series.start_ms;
    const xMax = start + step * series.requests.length;
    const at = (values, f) => values.map((v, i) => [start + i * step + step / 2, f(v)]);
    const rate = (c) => c / series.step_s;
    lineChart($("chart-rps"), [{ name: "all nodes", color: COLORS[0], points: at(series.requests, rate) }], { xMin: start, xMax });
    lineChart($("chart-latency"), [{ name: "all nodes", color: COLORS[2], points: at(series.latency_ms, (v) => v) }], { xMin: start, xMax, unit: "" });
    const ids = Object.keys(series.nodes);
    const colored = ids.map((id, i) => ({ id, name: nodeName(id), color: COLORS[i % COLORS.length] }));
    lineChart($("chart-node-rps"), colored.map((c) => ({ ...c, points: at(series.nodes[c.id].requests, rate) })), { xMin: start, xMax });
    lineChart($("chart-node-latency"), colored.map((c) => ({ ...c, points: at(series.nodes[c.id].latency_ms, (v) => v) })), { xMin: start, xMax });
    renderLegend($("legend-node-rps"), colored);
    renderLegend($("legend-node-latency"), colored);
  }

  // ---- views and routing --------------------------------------------------------------------

  function route() {
    const hash = location.hash.replace(/^#/, "") || "overview";
    const [view, arg] = hash.split("/");
    const views = ["overview", "models", "requests", "chat"];
    const shown = views.includes(view) ? view : "overview";
    for (const name of views) $(`view-${name}`).hidden = name !== shown;
    for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === shown);
    if (view === "node" && arg) openNode(arg);
    else closeNodeDialog();
    if (shown === "requests") loadHistory();
    if (ui.onView) ui.onView(shown);
  }
  window.addEventListener("hashchange", route);

  // Choices (filter and chat selects) follow the live node list without losing the selection.
  function setOptions(select, entries, keepFirst) {
    const current = select.value;
    const fixed = keepFirst ? [select.options[0]] : [];
    const wanted = entries.map(([v, label]) => `${v}\u0000${label}`).join("\u0001");
    if (select.dataset.sig === wanted) return;
    select.dataset.sig = wanted;
    select.replaceChildren(...fixed, ...entries.map(([v, label]) => el("option", { value: v, text: label })));
    if ([...select.options].some((o) => o.value === current)) select.value = current;
  }
  function refreshChoices() {
    const snap = state.snapshot;
    const nodes = [...snap.nodes].sort((a, b) => a.display_name.localeCompare(b.display_name));
    setOptions($("filter-node"), nodes.map((n) => [n.id, n.display_name]), true);
    const allModels = [...new Set(snap.nodes.flatMap((n) => n.models || []))].sort();
    setOptions($("filter-model"), allModels.map((m) => [m, m]), true);
    const online = snap.overview.models;
    setOptions($("chat-model"), online.map((m) => [m, m]), false);
    $("chat-send").disabled = !online.length || state.chat.abort !== null;
    if (!online.length) $("chat-node").textContent = "No online node serves a model right now.";
    else if ($("chat-node").textContent.startsWith("No online")) $("chat-node").textContent = "";
  }

  // ---- node detail --------------------------------------------------------------------------

  function closeNodeDialog() {
    clearInterval(state.detailTimer);
    state.detailTimer = null;
    state.detailId = null;
    if ($("node-dialog").open) $("node-dialog").close();
  }
  $("node-dialog").addEventListener("close", () => {
    clearInterval(state.detailTimer);
    state.detailId = null;
    if (location.hash.startsWith("#node/")) history.replaceState(null, "", "#overview");
  });
  document.querySelectorAll("dialog [data-close]").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));

  async function openNode(id) {
    const dialog = $("node-dialog");
    if (state.detailId !== id) {
      state.detailId = id;
      $("node-title").textContent = nodeName(id);
      $("node-body").replaceChildren(el("p", { class: "muted", text: "Loading…" }));
      clearInterval(state.detailTimer);
      state.detailTimer = setInterval(() => refreshNode(false), 5000);
    }
    if (!dialog.open) dialog.showModal();
    await refreshNode(true);
  }

  async function refreshNode(rebuild) {
    const id = state.detailId;
    if (!id) return;
    let detail;
    try {
      detail = await read(`/api/dashboard/nodes/${encodeURIComponent(id)}`);
    } catch (e) {
      if (state.detailId !== id) return;
      $("node-body").replaceChildren(el("p", { class: "muted", text: e.status === 404 ? "This node no longer exists." : `Could not load the node: ${e.message}` }));
      return;
    }
    if (state.detailId !== id) return;
    if (rebuild || !$("node-live")) buildNodeBody(detail);
    else updateNodeLive(detail);
  }

  function buildNodeBody(detail) {
    const n = detail.node;
    $("node-title").textContent = n.display_name;
    const nameInput = el("input", { type: "text", id: "admin-name", value: n.custom_name || "", placeholder: n.machine_name, "aria-label": "Custom name" });
    const tagsInput = el("input", { type: "text", id: "admin-tags", value: (n.tags || []).join(", "), placeholder: "tag, tag", "aria-label": "Tags" });
    const notesInput = el("textarea", { id: "admin-notes", rows: 3, placeholder: "Notes", "aria-label": "Notes" });
    notesInput.value = n.notes || "";
    const maxInput = el("input", { type: "number", id: "admin-max", min: 0, value: n.max_concurrency ?? "", placeholder: "none", "aria-label": "Max concurrency" });
    const path = `/api/agents/${encodeURIComponent(n.id)}`;
    // Refresh only the live part: the form keeps what the user typed (and just saved).
    const after = async (result) => { if (result !== undefined) await refreshNode(false); };

    const admin = el("div", { class: "admin-box" },
      el("h3", { text: "Manage" }),
      el("div", { class: "row" }, nameInput,
        el("button", { type: "button", id: "admin-rename", text: "Rename", onclick: async () => after(await adminAction("Rename", "PATCH", path, { custom_name: nameInput.value.trim() || null })) })),
      el("div", { class: "row" }, tagsInput),
      notesInput,
      el("div", { class: "row" },
        el("button", { type: "button", id: "admin-save-notes", text: "Save tags and notes", onclick: async () => after(await adminAction("Save tags and notes", "PATCH", path, { tags: tagsInput.value.split(",").map((t) => t.trim()).filter(Boolean), notes: notesInput.value })) })),
      el("div", { class: "row" }, el("label", { for: "admin-max", text: "Max concurrency" }), maxInput,
        el("button", { type: "button", id: "admin-set-max", text: "Set", onclick: async () => after(await adminAction("Set max concurrency", "PATCH", path, { max_concurrency: maxInput.value === "" ? null : Number(maxInput.value) })) })),
      el("div", { class: "row" },
        el("button", { type: "button", id: "admin-toggle", text: n.enabled ? "Disable" : "Enable", onclick: async () => { const cur = state.nodesById.get(n.id) || n; after(await adminAction(cur.enabled ? "Disable" : "Enable", "PATCH", path, { enabled: !cur.enabled })); } }),
        el("button", { type: "button", id: "admin-offline", text: "Force offline", onclick: async () => after(await adminAction("Force offline", "POST", `${path}/disconnect`)) }),
        el("button", { type: "button", id: "admin-delete", class: "danger", text: "Delete…", onclick: async () => {
          const ok = await confirmDialog(`Delete node “${n.display_name}”? Its history stays, but the node must register again to serve requests.`);
          if (!ok) return;
          const result = await adminAction("Delete", "DELETE", path);
          if (result !== undefined) closeNodeDialog();
        } })));

    const g = (n.gpu_devices || []).map((d) => `${d.count || 1}× ${d.model || "GPU"}${d.memory_bytes ? ` (${bytes(d.memory_bytes)})` : ""}`).join(", ");
    const sys = n.system || {};
    const info = el("dl", { class: "kv" },
      ...kv("Machine", n.machine_name), ...kv("Address", `${n.ip_address}:${n.runtime_port}`),
      ...kv("Runtime", runtimeText(n)), ...kv("Agent", n.agent_version || "–"),
      ...kv("OS", sys.os || "–"), ...kv("CPU", sys.cpu_model ? `${sys.cpu_model}${sys.cpu_count ? ` (${sys.cpu_count} cores)` : ""}` : "–"),
      ...kv("Memory", bytes(sys.memory_bytes)), ...kv("GPUs", g || "none"),
      ...kv("Models", (n.models || []).join(", ") || "–"), ...kv("Registered", n.registered_at || "–"),
      ...kv("Node id", n.id));

    const live = el("div", { id: "node-live" });
    $("node-body").replaceChildren(
      el("div", { class: "detail-grid" }, el("div", {}, el("h3", { text: "System" }), info), admin),
      live, ui.nodeLogs ? ui.nodeLogs(n) : null);
    updateNodeLive(detail);
  }

  function kv(label, value) { return [el("dt", { text: label }), el("dd", { text: String(value) })]; }

  function updateNodeLive(detail) {
    const n = detail.node;
    $("node-title").replaceChildren(document.createTextNode(`${n.display_name} `), statusBadge(n));
    const toggle = $("admin-toggle");
    if (toggle) toggle.textContent = n.enabled ? "Disable" : "Enable";
    const t0 = Date.parse(detail.since), t1 = Date.parse(detail.until);
    const pts = (key) => detail.samples.map((s) => [Date.parse(s.ts), s[key]]);
    const cpuChart = svg("svg", { role: "img", "aria-label": "CPU and memory, last hour" });
    const series = [{ name: "CPU %", color: COLORS[0], points: pts("cpu") }, { name: "Memory %", color: COLORS[1], points: pts("memory") }];
    if (detail.samples.some((s) => s.gpu !== null)) series.push({ name: "GPU %", color: COLORS[4], points: pts("gpu") });
    const legend = el("div", { class: "legend" });
    renderLegend(legend, series);
    const s = n.stats;
    const summary = el("p", { class: "muted", text: `Uptime ${n.status === "online" ? duration(since(n.online_since)) : "–"} · last seen ${ago(n.last_seen)} · ${num(s.total_requests)} requests, ${num(s.failed_requests)} failed · avg ${ms(s.avg_latency_ms)} · ${n.in_flight} in flight` });
    const tags = (n.tags || []).length ? el("p", {}, ...n.tags.map((t) => el("span", { class: "tag", text: t }))) : null;
    const notes = n.notes ? el("p", { class: "notes", text: n.notes }) : null;
    const why = healthText(n) ? el("p", { class: "health-reason", text: `Out of rotation: ${healthText(n)}` }) : null;
    $("node-live").replaceChildren(...[
      summary, why, tags, notes,
      el("figure", { class: "chart" }, el("figcaption", { text: "CPU / memory, last hour" }), cpuChart, legend),
      el("h3", { text: "Recent requests" }), requestTable(detail.recent_requests, false),
      el("h3", { text: "Recent errors" }), requestTable(detail.recent_errors, false)].filter(Boolean));
    lineChart(cpuChart, series, { xMin: t0, xMax: t1, yMax: 100, unit: "%" });
  }

  function confirmDialog(text) {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      const done = (value) => {
        $("confirm-ok").removeEventListener("click", onOk);
        $("confirm-cancel").removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        dialog.close();
        resolve(value);
      };
      const onOk = () => done(true);
      const onCancel = (ev) => { ev.preventDefault(); done(false); };
      $("confirm-ok").addEventListener("click", onOk);
      $("confirm-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
    });
  }

  // ---- request history ----------------------------------------------------------------------

  function requestTable(rows, withNode) {
    if (!rows.length) return el("p", { class: "muted", text: "None." });
    const head = el("tr", {}, ...["Time", withNode ? "Node" : null, "Model", "Status", "Duration", "Tokens"].filter(Boolean).map((h) => el("th", { text: h })));
    const body = el("tbody", {}, ...rows.map((r) => historyRow(r, withNode, true)));
    return el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), body));
  }

  function historyRow(r, withNode, compact) {
    const tokens = r.prompt_tokens === null && r.completion_tokens === null ? "–" : `${r.prompt_tokens ?? 0} / ${r.completion_tokens ?? 0}`;
    const cells = [
      el("td", { text: new Date(r.ts).toLocaleString(), title: r.ts }),
      withNode ? el("td", { text: nodeName(r.node_id) }) : null,
      el("td", { text: r.model || "–" }),
      compact ? null : el("td", { class: "opt", text: r.endpoint || "–" }),
      el("td", { class: `outcome-${r.outcome}`, text: `${r.status_code} ${r.outcome}` }),
      el("td", { class: "num", text: ms(r.duration_ms) }),
      compact ? null : el("td", { class: "num opt", text: ms(r.ttfb_ms) }),
      el("td", { class: compact ? "num" : "num opt", text: tokens }),
    ];
    return el("tr", { class: "clickable", "data-request-id": r.id, onclick: () => openRequest(r.id) }, ...cells.filter(Boolean));
  }

  async function loadHistory() {
    const h = state.history;
    const params = new URLSearchParams({ limit: String(HISTORY_PAGE), offset: String(h.offset) });
    for (const [k, v] of Object.entries(h.filters)) if (v) params.set(k, v);
    let page;
    try {
      page = await read(`/api/dashboard/request-history?${params}`);
    } catch (e) {
      $("history-info").textContent = `Could not load the history: ${e.message}`;
      return;
    }
    h.total = page.total;
    const tbody = $("history-table").tBodies[0];
    tbody.replaceChildren(...page.items.map((r) => historyRow(r, true, false)));
    if (!page.items.length) tbody.append(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No requests match." })));
    const first = page.total ? h.offset + 1 : 0;
    $("history-info").textContent = `${num(first)}–${num(h.offset + page.items.length)} of ${num(page.total)}`;
    $("history-prev").disabled = h.offset === 0;
    $("history-next").disabled = h.offset + HISTORY_PAGE >= page.total;
  }
  $("history-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.history.filters = { agent_id: $("filter-node").value, model: $("filter-model").value, status: $("filter-status").value };
    state.history.offset = 0;
    loadHistory();
  });
  $("history-refresh").addEventListener("click", loadHistory);
  $("history-prev").addEventListener("click", () => { state.history.offset = Math.max(0, state.history.offset - HISTORY_PAGE); loadHistory(); });
  $("history-next").addEventListener("click", () => { state.history.offset += HISTORY_PAGE; loadHistory(); });
  setInterval(() => { if (!$("view-requests").hidden && state.history.offset === 0 && !document.hidden) loadHistory(); }, 5000);

  async function openRequest(id) {
    const dialog = $("request-dialog");
    $("request-body").replaceChildren(...kv("Loading", "…"));
    if (!dialog.open) dialog.showModal();
    try {
      const r = await read(`/api/dashboard/requests/${encodeURIComponent(id)}`);
      $("request-title").textContent = `Request ${r.id.slice(0, 8)}`;
      $("request-body").replaceChildren(
        ...kv("Id", r.id), ...kv("Time", r.ts), ...kv("Node", r.node_name ? `${r.node_name} (${r.node_id})` : r.node_id || "–"),
        ...kv("Model", r.model || "–"), ...kv("Endpoint", `${r.method || ""} ${r.endpoint || ""}`),
        ...kv("Status", `${r.status_code} (${r.outcome})`), ...kv("Duration", ms(r.duration_ms)),
        ...kv("Time to first byte", ms(r.ttfb_ms)), ...kv("Prompt tokens", r.prompt_tokens ?? "–"),
        ...kv("Completion tokens", r.completion_tokens ?? "–"), ...kv("Streamed", r.stream ? "yes" : "no"),
        ...kv("Affinity hit", r.affinity_hit === null || r.affinity_hit === undefined ? "–" : r.affinity_hit ? "yes" : "no"),
        ...kv("Client", r.client || "–"), ...kv("Error", r.error || "–"));
    } catch (e) {
      $("request-body").replaceChildren(...kv("Error", e.message));
    }
  }

  // ---- chat console -------------------------------------------------------------------------

  function chatMessage(role, text, meta) {
    const body = el("div", { class: "text", text });
    const box = el("div", { class: `msg ${role}` }, el("div", { class: "who", text: meta || role }), body);
    $("chat-log").append(box);
    $("chat-log").scrollTop = $("chat-log").scrollHeight;
    return { box, body };
  }

  async function sendChat() {
    const model = $("chat-model").value;
    const prompt = $("chat-prompt").value.trim();
    if (!model || !prompt || state.chat.abort) return;
    $("chat-prompt").value = "";
    state.chat.messages.push({ role: "user", content: prompt });
    chatMessage("user", prompt, "you");
    const answer = chatMessage("assistant", "", `${model} · waiting for a node…`);
    answer.box.id = "chat-current";
    const abort = new AbortController();
    state.chat.abort = abort;
    $("chat-send").disabled = true;
    $("chat-stop").disabled = false;
    let text = "";
    try {
      const headers = { "Content-Type": "application/json" };
      const token = getToken();
      if (token) headers.Authorization = `Bearer ${token}`;
      const resp = await fetch("/v1/chat/completions", {
        method: "POST", headers, signal: abort.signal,
        body: JSON.stringify({ model, messages: state.chat.messages, stream: true }),
      });
      const nodeId = resp.headers.get("x-router-node");
      const who = `${model} · ${nodeId ? `served by ${nodeName(nodeId)}` : "no node"}`;
      answer.box.querySelector(".who").textContent = who;
      answer.box.dataset.node = nodeId || "";
      $("chat-node").textContent = nodeId ? `Last answer served by ${nodeName(nodeId)}` : "";
      if (!resp.ok) {
        let message = `HTTP ${resp.status}`;
        try { const data = await resp.json(); message = (data.error && (data.error.message || data.error)) || message; } catch { /* keep status */ }
        if (resp.status === 401) message += " (this router needs an API key for /v1; the admin token works too: use \"Admin token\" at the top)";
        throw new Error(message);
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, cut).trim();
          buffer = buffer.slice(cut + 1);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          let event;
          try { event = JSON.parse(data); } catch { continue; }
          if (event.error) throw new Error(event.error.message || String(event.error));
          const piece = event.choices && event.choices[0] && event.choices[0].delta && event.choices[0].delta.content;
          if (piece) {
            text += piece;
            answer.body.textContent = text;
            $("chat-log").scrollTop = $("chat-log").scrollHeight;
          }
        }
      }
      answer.box.dataset.done = "true";
      state.chat.messages.push({ role: "assistant", content: text });
    } catch (e) {
      answer.box.classList.add("error");
      answer.box.dataset.done = "true";
      answer.body.textContent = text + (abort.signal.aborted ? " [stopped]" : `${text ? "\n" : ""}Error: ${e.message}`);
      if (text) state.chat.messages.push({ role: "assistant", content: text });
      else state.chat.messages.pop();
    } finally {
      answer.box.removeAttribute("id");
      state.chat.abort = null;
      $("chat-stop").disabled = true;
      $("chat-send").disabled = !(state.snapshot && state.snapshot.overview.models.length);
    }
  }
  $("chat-form").addEventListener("submit", (ev) => { ev.preventDefault(); sendChat(); });
  $("chat-prompt").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); sendChat(); } });
  $("chat-stop").addEventListener("click", () => state.chat.abort && state.chat.abort.abort());
  $("chat-clear").addEventListener("click", () => { state.chat.messages = []; $("chat-log").replaceChildren(); $("chat-node").textContent = ""; });

  // ---- shared with models.js (the Models view and node logs) --------------------------------

  Object.assign(ui, { $, el, api, read, adminAction, confirmDialog, notify, bytes, state, usageBar, getToken, askToken });

  // ---- start --------------------------------------------------------------------------------

  // A hidden tab does not need a snapshot every second: drop the feed, resume on return.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      clearTimeout(state.reconnectTimer);
      stopPolling();
      if (state.ws) { const old = state.ws; state.ws = null; old.close(); }
      setChannel("connecting");
    } else if (!state.ws) {
      reconnectNow();
    }
  });

  // Relative times (uptime, last seen) move between snapshots too.
  setInterval(() => { if (state.snapshot && !document.hidden && !state.ws) renderNodes(); }, 1000);
  route();
  connect();
})();
