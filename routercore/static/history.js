// The Requests view: the paged, filtered request history and the request dialog.
import { $, el, kv, num, ms } from "./dom.js";
import { read } from "./api.js";
import { state, nodeName } from "./state.js";

const HISTORY_PAGE = 50;

export function requestTable(rows, withNode) {
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

export async function loadHistory() {
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
