// LLM Router dashboard: the Models view (models × nodes, pull progress, deploy, pull, delete).
import { $, el, bytes, notify } from "./dom.js";
import { read, adminAction, confirmDialog, getToken, askToken } from "./api.js";
import { state } from "./state.js";
const REFRESH_MS = 2000;
const m = {
  deployments: [],
  pulls: new Map(), // "model\0node id" -> { pct, status, error } from pulls started on this page
  timer: null,
  visible: false,
};
const key = (model, nodeId) => `${model}\u0000${nodeId}`;

// ---- data -----------------------------------------------------------------------------------

async function loadDeployments() {
  try {
    m.deployments = await read("/api/models/deployments");
  } catch (e) {
    notify(`Could not load deployments: ${e.message}`, "error");
  }
  render();
}

// The entry module tells which view is shown and when a snapshot arrives.
export function onView(view) {
  m.visible = view === "models";
  clearInterval(m.timer);
  m.timer = null;
  if (m.visible) {
    loadDeployments();
    m.timer = setInterval(loadDeployments, REFRESH_MS);
  }
}
export function onSnapshot() { if (m.visible) render(); }

// ---- rendering --------------------------------------------------------------------------------

function progressBar(pct, label) {
  const value = Math.max(0, Math.min(100, pct || 0));
  const fill = el("div", { class: "fill", "data-level": "low" });
  fill.style.width = `${value}%`;
  return el("div", { class: "bar pull-bar", title: label },
    el("div", { class: "track" }, fill), el("span", { class: "pct", text: `${Math.round(value)}%` }));
}

function cell(model, node, replica) {
  const live = m.pulls.get(key(model, node.id));
  if (live && live.error) return el("td", { class: "model-cell failed", title: live.error, text: "failed" });
  if (live && live.status !== "success") return el("td", { class: "model-cell" }, progressBar(live.pct, live.status || "pulling"));
  if (replica) {
    if (replica.state === "pulling") return el("td", { class: "model-cell" }, progressBar(replica.progress, "pulling"));
    if (replica.state === "failed") return el("td", { class: "model-cell failed", title: replica.error || "", text: "failed" });
    if (replica.state === "pending") return el("td", { class: "model-cell muted", text: "pending" });
  }
  const has = (node.models || []).some((x) => x === model || x.replace(/:latest$/, "") === model.replace(/:latest$/, ""));
  if (has || (live && live.status === "success")) return el("td", { class: "model-cell ready", title: "on this node", text: "✓" });
  return el("td", { class: "model-cell muted", text: "–" });
}

function render() {
  const snap = state.snapshot;
  if (!snap) return;
  const nodes = [...snap.nodes].sort((a, b) => a.display_name.localeCompare(b.display_name));
  const deps = new Map(m.deployments.map((d) => [d.model, d]));
  const names = new Set();
  for (const n of nodes) for (const x of n.models || []) names.add(x);
  for (const d of m.deployments) names.add(d.model);
  for (const k of m.pulls.keys()) names.add(k.split("\u0000")[0]);
  const models = [...names].sort();

  const head = el("tr", {},
    el("th", { text: "Model" }), el("th", { text: "Deployment" }),
    ...nodes.map((n) => el("th", { class: "node-col", title: `${n.runtime_kind || "unknown runtime"} · ${n.status}` },
      n.display_name, el("span", { class: "sub", text: n.runtime_kind || "?" }))),
    el("th", { text: "" }));
  const rows = models.map((model) => {
    const d = deps.get(model);
    const replicas = new Map((d ? d.nodes : []).map((r) => [r.agent_id, r]));
    const deployCell = d
      ? el("td", {},
        el("span", { text: d.replicas === "all" ? "all nodes" : `${d.replicas} replica${d.replicas === 1 ? "" : "s"}` }),
        d.size_bytes ? el("span", { class: "sub", text: bytes(d.size_bytes) }) : null,
        el("button", { type: "button", class: "small link", text: "undeploy", onclick: () => undeploy(model) }))
      : el("td", { class: "muted", text: "–" });
    return el("tr", { "data-model": model },
      el("td", { class: "name-cell", text: model }), deployCell,
      ...nodes.map((n) => cell(model, n, replicas.get(n.id))),
      el("td", {}, el("button", { type: "button", class: "small danger", text: "Delete…", onclick: () => removeModel(model) })));
  });
  $("models-table").querySelector("thead").replaceChildren(head);
  $("models-table").querySelector("tbody").replaceChildren(...rows);
  $("models-empty").hidden = models.length > 0;
}

// ---- actions ------------------------------------------------------------------------------------

async function deploy(ev) {
  ev.preventDefault();
  const model = $("models-name").value.trim();
  if (!model) return;
  const raw = $("models-replicas").value.trim().toLowerCase();
  const replicas = raw === "all" ? "all" : Number(raw || "1");
  const body = { model, replicas };
  if ($("models-min-gb").value !== "") body.min_memory_gb = Number($("models-min-gb").value);
  if (await adminAction(`Deploy ${model}`, "POST", "/api/models/deploy", body) !== undefined) loadDeployments();
}

async function undeploy(model) {
  const path = `/api/models/deployments/${encodeURIComponent(model)}`;
  if (await adminAction(`Undeploy ${model}`, "DELETE", path) !== undefined) loadDeployments();
}

async function removeModel(model) {
  const ok = await confirmDialog(`Delete model “${model}” from every node that has it? Its deployment is dropped too.`);
  if (!ok) return;
  if (await adminAction(`Delete ${model}`, "DELETE", "/api/delete", { model }) !== undefined) {
    forgetPulls(model);
    loadDeployments();
  }
}

// Pull streams NDJSON: one progress line per node step, then {"status":"success"} or an error.
async function pull() {
  const model = $("models-name").value.trim();
  if (!model) { notify("Type a model name first.", "error"); return; }
  const token = getToken() || await askToken(`"Pull ${model}" changes the nodes: it needs the admin token.`);
  if (!token) return;
  let resp;
  try {
    resp = await fetch("/api/pull", {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ model }),
    });
  } catch (e) {
    notify(`Pull of ${model} failed: ${e.message}`, "error");
    return;
  }
  if (!resp.ok) {
    const data = await resp.json().catch(() => null);
    notify(`Pull of ${model} failed: ${(data && data.error) || `HTTP ${resp.status}`}`, "error");
    return;
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) onPullLine(model, JSON.parse(line));
    }
  }
  forgetPulls(model); // from now on the nodes' own model lists (and failures in the notice) tell
  loadDeployments();
}

function forgetPulls(model) {
  for (const k of [...m.pulls.keys()]) if (k.startsWith(`${model}\u0000`)) m.pulls.delete(k);
}

function onPullLine(model, obj) {
  if (obj.node) {
    const k = key(model, obj.node);
    const before = m.pulls.get(k) || { pct: 0 };
    if (obj.error) m.pulls.set(k, { error: obj.error });
    else if (obj.total) m.pulls.set(k, { pct: (100 * (obj.completed || 0)) / obj.total, status: obj.status });
    else m.pulls.set(k, { pct: obj.status === "success" ? 100 : before.pct, status: obj.status });
    render();
  } else if (obj.error) {
    notify(`Pull of ${model}: ${obj.error}`, "error");
  } else if (obj.status === "success") {
    notify(`Pull of ${model}: done.`, "ok");
  }
}

$("models-form").addEventListener("submit", deploy);
$("models-pull").addEventListener("click", pull);
