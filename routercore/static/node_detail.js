// The node detail dialog: system info, admin actions, usage chart, recent requests, logs.
import { $, el, svg, kv, bytes, num, ms, duration, since, ago } from "./dom.js";
import { read, adminAction, confirmDialog } from "./api.js";
import { state, nodeName } from "./state.js";
import { COLORS, lineChart, renderLegend } from "./charts.js";
import { statusBadge, healthText, runtimeText } from "./nodes.js";
import { requestTable } from "./history.js";

export function closeNodeDialog() {
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

export async function openNode(id) {
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
    live, nodeLogs(n));
  updateNodeLive(detail);
}


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

// ---- logs in the node detail -------------------------------------------------------------------

function nodeLogs(node) {
  const out = el("pre", { class: "log", id: "node-log", text: "Load the agent's log or the router's lines about this node (admin token)." });
  const show = (lines, what) => {
    out.textContent = lines.length ? lines.join("\n") : `(no ${what} lines)`;
    out.scrollTop = out.scrollHeight;
  };
  const agentLog = async () => {
    out.textContent = "Asking the agent (it answers with its next heartbeat)…";
    const result = await adminAction("Agent log", "GET", `/api/agents/${encodeURIComponent(node.id)}/logs?lines=200`);
    if (result !== undefined) show(result.lines, "agent log");
    else out.textContent = "No log: see the message above.";
  };
  const routerLog = async () => {
    const result = await adminAction("Router log", "GET", "/api/logs?lines=2000");
    if (result !== undefined) show(result.lines.filter((l) => l.includes(node.id)).slice(-200), "router log");
  };
  return el("div", { class: "logs-box" },
    el("h3", { text: "Logs" }),
    el("div", { class: "row" },
      el("button", { type: "button", id: "node-agent-log", text: "Agent log", onclick: agentLog }),
      el("button", { type: "button", id: "node-router-log", text: "Router log about this node", onclick: routerLog })),
    out);
}
