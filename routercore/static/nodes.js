// The overview's cards and node table (sorted, filtered, rows rebuilt only when they change).
import { $, el, setText, num, ms, pct, duration, since, ago } from "./dom.js";
import { state } from "./state.js";

const STATUS_ORDER = { online: 0, unreachable: 1, offline: 2 };

export function renderCards(o) {
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
export function statusBadge(node) {
  const badge = el("span", { class: "status", "data-status": node.status, "data-disabled": node.enabled ? null : "true", text: node.status });
  if (!node.problem) return badge;
  // A node whose stored record was damaged is shown as such (the router says what and why).
  return el("span", {}, badge, el("span", { class: "problem", title: node.problem, text: " ⚠ record damaged" }));
}
// Why a node is out of rotation, and when the router checks it again (null when it is in).
export function healthText(node) {
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

function rowSignature(n) {
  return JSON.stringify([n.display_name, n.custom_name, n.machine_name, n.tags, n.ip_address, n.runtime_port,
    n.runtime_version, n.runtime_kind, n.status, n.enabled, n.models, n.metrics, n.gpu_count, n.in_flight,
    n.max_concurrency, n.stats, n.error_rate, healthText(n), n.problem, n.affinity]);
}

// "ollama 0.5.7", "openai" (llama.cpp, vLLM: only /v1), or "–" while the router finds out.
export function runtimeText(n) { return [n.runtime_kind, n.runtime_version].filter(Boolean).join(" ") || "–"; }

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

export function renderNodes() {
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
