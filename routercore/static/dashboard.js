// LLM Router dashboard, the entry module. Plain browser JavaScript modules: no build step, no
// CDN, no framework. Data comes from the /ws/dashboard snapshot feed; when the socket fails the
// page polls /api/dashboard/snapshot and keeps trying to reconnect. This module owns that live
// channel, the view routing and the start-up; the views live in their own modules.
import { $, el } from "./dom.js";
import { read, getToken, onNewToken } from "./api.js";
import { state, stats } from "./state.js";
import { renderCards, renderNodes } from "./nodes.js";
import { renderCharts } from "./charts.js";
import { openNode, closeNodeDialog } from "./node_detail.js";
import { loadHistory } from "./history.js";
import "./chat.js";
import * as models from "./models.js";

const POLL_MS = 2000;
const RECONNECT_MAX_MS = 5000;

// ---- live channel -------------------------------------------------------------------------

function setChannel(name) {
  const badge = $("conn-state");
  badge.dataset.state = name;
  badge.textContent = { live: "live", polling: "polling", down: "router unreachable", connecting: "connecting" }[name];
  stats.channel = name;
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
    stats.lastPayloadBytes = ev.data.length;
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
  models.onSnapshot(snap);
  stats.renders += 1;
  stats.lastRenderMs = performance.now() - started;
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
  models.onView(shown);
}
window.addEventListener("hashchange", route);
// A new admin token opens the live channel again with it.
onNewToken(() => reconnectNow());

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
